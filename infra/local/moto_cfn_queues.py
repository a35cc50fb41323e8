"""moto 5.2's CloudFormation updates a queue's ``VisibilityTimeout`` and ``ReceiveMessageWaitTimeSeconds`` only:
every other property a stack update changes (the ``RedrivePolicy`` with its ``maxReceiveCount``, retention,
maximum size, encryption, delay) stays as it was while the stack reports ``UPDATE_COMPLETE``. Corrected in
our launcher.

AWS: these properties update in place, "Update requires: No interruption"
(https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-sqs-queue.html); a
deployment that lowers ``IMGREC_MAX_RECEIVE_COUNT`` must reach the queue, or the workers and the queue
disagree on when a message is dead-lettered.
"""

from __future__ import annotations

import functools
import json
import logging

log = logging.getLogger(__name__)
_applied = False
# CloudFormation properties that are SQS attributes of the same name (QueueName and tags are not).
ATTRIBUTES = ("DelaySeconds", "MaximumMessageSize", "MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds",
              "VisibilityTimeout", "RedrivePolicy", "RedriveAllowPolicy", "SqsManagedSseEnabled",
              "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds")


def attributes(properties: dict) -> dict[str, str]:
    """The SQS attributes a template's queue properties set (policies as JSON, flags lowercase)."""
    out = {}
    for name in ATTRIBUTES:
        if name in properties:
            value = properties[name]
            out[name] = json.dumps(value) if isinstance(value, dict) else (
                str(value).lower() if isinstance(value, bool) else str(value))
    return out


def _update(original):
    @functools.wraps(original)
    def update_from_cloudformation_json(cls, original_resource, new_resource_name, cloudformation_json, account_id,
                                        region_name):
        from moto.sqs.models import sqs_backends

        queue = original.__func__(cls, original_resource, new_resource_name, cloudformation_json, account_id,
                                  region_name)
        wanted = attributes(cloudformation_json.get("Properties", {}))
        if wanted:
            sqs_backends[account_id][region_name].set_queue_attributes(queue.name, wanted)
        return queue

    return classmethod(update_from_cloudformation_json)


def apply() -> None:
    global _applied
    if _applied:
        return
    from moto.sqs.models import Queue

    Queue.update_from_cloudformation_json = _update(Queue.__dict__["update_from_cloudformation_json"])
    _applied = True
    log.debug("moto fix applied: CloudFormation updates every attribute of a queue")
