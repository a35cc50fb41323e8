"""The queues' definitions and the runtime's own queue and bucket housekeeping.

The stack's template (``infra/cfn/template.py``) makes the request, response and dead-letter queues from
these attributes, and each web process makes its own reply queue from them at run time; the controller finds
those reply queues, and teardown empties buckets, with the helpers here. Making and removing the stack's
resources is CloudFormation's job (``infra.cfn.stack``).
"""

from __future__ import annotations

import json
import logging

from botocore.exceptions import ClientError

from infra.config import MAX_QUEUE_MESSAGE_BYTES, Settings
from infra.messages import REPLY_INFIX, is_reply_queue_name

log = logging.getLogger(__name__)

DLQ_RETENTION_S = 14 * 24 * 3600
REQUEST_RETENTION_S = 4 * 24 * 3600  # SQS's default, stated
RESPONSE_RETENTION_S = 4 * 24 * 3600
REPLY_VISIBILITY_S = 10  # a reply a dead web process held comes back soon for the reaper
# Messages at rest encrypted with SQS-managed keys: AWS defaults new queues to it since 2022,
# but a queue made earlier (or by hand) would stay plaintext unless we say so.
ENCRYPTION = {"SqsManagedSseEnabled": "true"}


# ---------------------------------------------------------------- queues

def request_queue_attributes(settings: Settings, dlq_arn: str) -> dict[str, str]:
    return {
        "MaximumMessageSize": str(MAX_QUEUE_MESSAGE_BYTES),
        "MessageRetentionPeriod": str(REQUEST_RETENTION_S),
        "ReceiveMessageWaitTimeSeconds": str(settings.receive_wait_s),
        "VisibilityTimeout": str(settings.visibility_timeout_s),
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(settings.max_receive_count)}
        ),
        **ENCRYPTION,
    }


def response_queue_attributes(settings: Settings) -> dict[str, str]:
    return {
        "ReceiveMessageWaitTimeSeconds": str(settings.receive_wait_s),
        "VisibilityTimeout": "30",
        "MessageRetentionPeriod": str(RESPONSE_RETENTION_S),
        **ENCRYPTION,
    }


def reply_queue_attributes(settings: Settings) -> dict[str, str]:
    """A web process's own reply queue: like the response queue, with a short visibility timeout."""
    return {**response_queue_attributes(settings), "VisibilityTimeout": str(REPLY_VISIBILITY_S)}


def dlq_attributes(settings: Settings) -> dict[str, str]:
    return {"MessageRetentionPeriod": str(DLQ_RETENTION_S), **ENCRYPTION}


def empty_bucket(s3, bucket: str) -> int:
    """Delete every object version and delete marker; returns how many went."""
    removed = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        batch = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in page.get("Versions", [])]
        batch += [{"Key": m["Key"], "VersionId": m["VersionId"]} for m in page.get("DeleteMarkers", [])]
        for i in range(0, len(batch), 1000):
            chunk = batch[i : i + 1000]
            s3.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
            removed += len(chunk)
    return removed


def reply_queue_urls(sqs, settings: Settings) -> list[str]:
    """URLs of the stack's own reply queues (``<prefix>-reply-<id>``), by name; tags are checked by callers."""
    urls = []
    try:
        for page in sqs.get_paginator("list_queues").paginate(QueueNamePrefix=f"{settings.prefix}-{REPLY_INFIX}-"):
            urls += [u for u in page.get("QueueUrls", []) if is_reply_queue_name(u.rpartition("/")[2], settings.prefix)]
    except ClientError:
        log.error("list_queues %s-%s-* failed", settings.prefix, REPLY_INFIX)
        raise
    return urls
