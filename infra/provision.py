"""Buckets, queues and the job table as code: provision (idempotent) and teardown (only what we made).

Every resource made here carries the tag ``imgrec:stack=<prefix>``; teardown
deletes a resource only when that tag is on it, so a bucket or queue of the same
name that someone made by hand survives.
"""

from __future__ import annotations

import json
import logging

from botocore.exceptions import ClientError

from infra.config import MAX_QUEUE_MESSAGE_BYTES, Settings
from infra.jobstore import table_spec
from infra.messages import REPLY_INFIX, is_reply_queue_name
from infra.queue_wait import create_when_free
from infra.report import Report
from infra.tags import STACK_TAG, owned_by

log = logging.getLogger(__name__)

DLQ_RETENTION_S = 14 * 24 * 3600
RESPONSE_RETENTION_S = 4 * 24 * 3600
REPLY_VISIBILITY_S = 10  # a reply a dead web process held comes back soon for the reaper
# Messages at rest encrypted with SQS-managed keys: AWS defaults new queues to it since 2022,
# but a queue made earlier (or by hand) would stay plaintext unless we say so.
ENCRYPTION = {"SqsManagedSseEnabled": "true"}


# ---------------------------------------------------------------- queues

def request_queue_attributes(settings: Settings, dlq_arn: str) -> dict[str, str]:
    return {
        "MaximumMessageSize": str(MAX_QUEUE_MESSAGE_BYTES),
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


def _find_queue(sqs, name: str) -> str | None:
    try:
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as err:
        if err.response["Error"]["Code"] in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            return None
        log.error("get_queue_url %s failed", name)
        raise


def _same(current: dict[str, str], wanted: dict[str, str]) -> bool:
    for key, value in wanted.items():
        have = current.get(key)
        if key == "RedrivePolicy" and have is not None:
            a, b = json.loads(have), json.loads(value)
            if a.get("deadLetterTargetArn") != b["deadLetterTargetArn"] or str(a.get("maxReceiveCount")) != str(
                b["maxReceiveCount"]
            ):
                return False
        elif have != value:
            return False
    return True


def ensure_queue(sqs, settings: Settings, name: str, attributes: dict[str, str], report: Report) -> str:
    url = _find_queue(sqs, name)
    if url is None:
        try:  # a name deleted in the last 60 s is not free yet (QueueDeletedRecently): wait, saying so
            url = create_when_free(lambda: sqs.create_queue(
                QueueName=name, Attributes=attributes, tags={STACK_TAG: settings.prefix})["QueueUrl"], name)
        except ClientError:
            log.error("create_queue %s failed", name)
            raise
        report.add(f"queue {name}", "created")
        return url
    current = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    if _same(current, attributes):
        report.add(f"queue {name}", "unchanged")
    else:
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        report.add(f"queue {name}", "updated attributes")
    return url


def queue_arn(sqs, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


# ---------------------------------------------------------------- buckets

def _bucket_tags(s3, bucket: str) -> dict[str, str] | None:
    """The bucket's tags, {} if it has none, None if the bucket does not exist."""
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as err:
        if err.response["Error"]["Code"] in ("404", "NoSuchBucket", "NotFound"):
            return None
        log.error("head_bucket %s failed", bucket)
        raise
    try:
        return {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]}
    except ClientError as err:
        if err.response["Error"]["Code"] == "NoSuchTagSet":
            return {}
        raise


def _bucket_settings_ok(s3, bucket: str, versioned: bool) -> bool:
    try:
        pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        enc = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    except ClientError:
        return False
    versioning = s3.get_bucket_versioning(Bucket=bucket).get("Status")
    return (
        all(pab.get(k) for k in _PUBLIC_ACCESS_BLOCK)
        and bool(enc.get("Rules"))
        and (versioning == "Enabled") == versioned
    )


_PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


def ensure_bucket(s3, settings: Settings, bucket: str, *, versioned: bool, report: Report) -> None:
    tags = _bucket_tags(s3, bucket)
    if tags is None:
        kwargs = {}
        if settings.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.region}
        try:
            s3.create_bucket(Bucket=bucket, **kwargs)
        except ClientError:
            log.error("create_bucket %s failed", bucket)
            raise
        s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": STACK_TAG, "Value": settings.prefix}]})
        action = "created"
    elif _bucket_settings_ok(s3, bucket, versioned):
        report.add(f"bucket {bucket}", "unchanged")
        return
    else:
        action = "updated settings"
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=_PUBLIC_ACCESS_BLOCK)
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}]
        },
    )
    if versioned:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    report.add(f"bucket {bucket}", action)


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


# ---------------------------------------------------------------- job table

def _table_exists(dynamodb, table: str) -> dict | None:
    try:
        return dynamodb.describe_table(TableName=table)["Table"]
    except ClientError as err:
        if err.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        log.error("describe_table %s failed", table)
        raise


def ensure_table(dynamodb, settings: Settings, report: Report) -> None:
    table = settings.jobs_table
    if _table_exists(dynamodb, table) is not None:
        report.add(f"table {table}", "unchanged")
        return
    try:
        dynamodb.create_table(**table_spec(table, {STACK_TAG: settings.prefix}))
    except ClientError:
        log.error("create_table %s failed", table)
        raise
    dynamodb.get_waiter("table_exists").wait(TableName=table)
    report.add(f"table {table}", "created")


def delete_table(dynamodb, settings: Settings, report: Report) -> None:
    table = settings.jobs_table
    desc = _table_exists(dynamodb, table)
    if desc is None:
        report.add(f"table {table}", "absent")
        return
    tags = {t["Key"]: t["Value"] for t in dynamodb.list_tags_of_resource(ResourceArn=desc["TableArn"]).get("Tags", [])}
    if tags.get(STACK_TAG) != settings.prefix:
        report.add(f"table {table}", "kept (not ours)")
        return
    dynamodb.delete_table(TableName=table)
    dynamodb.get_waiter("table_not_exists").wait(TableName=table)
    report.add(f"table {table}", "deleted")


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


# ---------------------------------------------------------------- whole stack

def provision(settings: Settings, clients) -> Report:
    """Create or converge the buckets and queues. Running it twice changes nothing."""
    report = Report()
    ensure_bucket(clients.s3, settings, settings.in_bucket, versioned=True, report=report)
    ensure_bucket(clients.s3, settings, settings.out_bucket, versioned=False, report=report)
    sqs = clients.sqs
    dlq_url = ensure_queue(sqs, settings, settings.dlq, dlq_attributes(settings), report)
    ensure_queue(sqs, settings, settings.req_queue, request_queue_attributes(settings, queue_arn(sqs, dlq_url)), report)
    ensure_queue(sqs, settings, settings.resp_queue, response_queue_attributes(settings), report)
    ensure_table(clients.dynamodb, settings, report)
    return report


def teardown(settings: Settings, clients) -> Report:
    """Delete the buckets (emptied first), queues, job table and web processes' reply queues
    that this stack made; nothing else."""
    report = Report()
    sqs = clients.sqs
    for url in reply_queue_urls(sqs, settings):
        name = url.rpartition("/")[2]
        if sqs.list_queue_tags(QueueUrl=url).get("Tags", {}).get(STACK_TAG) != settings.prefix:
            report.add(f"queue {name}", "kept (not ours)")
            continue
        sqs.delete_queue(QueueUrl=url)
        report.add(f"queue {name}", "deleted")
    for name in (settings.req_queue, settings.resp_queue, settings.dlq):
        url = _find_queue(sqs, name)
        if url is None:
            report.add(f"queue {name}", "absent")
            continue
        tags = sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
        if not owned_by(tags, settings.prefix):
            report.add(f"queue {name}", "kept (not ours)")
            continue
        sqs.delete_queue(QueueUrl=url)
        report.add(f"queue {name}", "deleted")
    for bucket in (settings.in_bucket, settings.out_bucket):
        delete_bucket(clients.s3, settings, bucket, report)
    delete_table(clients.dynamodb, settings, report)
    return report


def delete_bucket(s3, settings: Settings, bucket: str, report: Report) -> None:
    """Empty and delete ``bucket`` if it carries our stack tag; otherwise leave it and say so."""
    tags = _bucket_tags(s3, bucket)
    if tags is None:
        report.add(f"bucket {bucket}", "absent")
        return
    if not owned_by(tags, settings.prefix):
        report.add(f"bucket {bucket}", "kept (not ours)")
        return
    removed = empty_bucket(s3, bucket)
    s3.delete_bucket(Bucket=bucket)
    report.add(f"bucket {bucket}", f"deleted ({removed} object versions)")
