"""moto 5.2's CloudFormation keeps a resource at stack deletion only for ``DeletionPolicy: Retain``; it deletes
one marked ``RetainExceptOnCreate``. Corrected in our launcher (a rolled-back create still deletes it:
``infra.local.moto_cfn_rollback``).

AWS: "RetainExceptOnCreate behaves like Retain for stack operations, except for the stack operation that
initially created the resource. If the stack operation that created the resource is rolled back,
CloudFormation deletes the resource." (https://docs.aws.amazon.com/cdk/api/v2/docs/aws-cdk-lib.CfnDeletionPolicy.html).
The stack's input and output buckets use it: the images and results outlive a stack deleted by hand.
"""

from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)
_applied = False
KEPT = "RetainExceptOnCreate"


def _delete(original):
    @functools.wraps(original)
    def delete(self) -> None:
        mapped = self._resource_json_map
        self._resource_json_map = {k: ({**v, "DeletionPolicy": "Retain"} if v.get("DeletionPolicy") == KEPT else v)
                                   for k, v in mapped.items()}
        try:
            original(self)
        finally:
            self._resource_json_map = mapped

    return delete


def apply() -> None:
    global _applied
    if _applied:
        return
    from moto.cloudformation.parsing import ResourceMap

    ResourceMap.delete = _delete(ResourceMap.delete)
    _applied = True
    log.debug("moto fix applied: CloudFormation keeps RetainExceptOnCreate resources at stack deletion")
