"""moto 5.2's CloudFormation shows no ``Outputs`` for a stack created through a change set (it builds the
outputs when the stack record is made, before any template). Corrected in our launcher: executing a change set
rebuilds them from the stack's new template.

AWS: "Outputs: A list of output structures" of ``DescribeStacks``' ``Stack``
(https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_Stack.html). Deploy and the local stack
read bucket names, queue URLs and the launch template's id from these outputs.
"""

from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)
_applied = False


def _apply(original):
    @functools.wraps(original)
    def apply(self) -> None:
        original(self)
        self.stack.template, self.stack.template_dict = self.template, self.template_dict
        self.stack.output_map = self.stack._create_output_map()

    return apply


def apply() -> None:
    global _applied
    if _applied:
        return
    from moto.cloudformation.models import ChangeSet

    ChangeSet.apply = _apply(ChangeSet.apply)
    _applied = True
    log.debug("moto fix applied: a change set's stack gets its outputs")
