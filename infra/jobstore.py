"""Job state every web process (and the controller's reply-queue reaper) reads and writes: DynamoDB.

Why DynamoDB and not S3 objects or a per-process SQLite file: any web process must
answer ``GET /api/jobs/<id>`` for a job submitted through another, a page polls up to
100 ids at once (one ``BatchGetItem``), a batch's progress and CSV are one ``Query``
on a batch index (S3 would need one GET per job), and the submit record and the
result merge into one item with ``UpdateItem`` whatever order they land in. The same
table holds the controller's lease (a conditional item). The output bucket stays
exactly one object per image.

A job item is the request side (id, name, key, version, batch, times) plus the
result fields declared once in ``infra.messages.RESULT_FIELDS``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields
from enum import StrEnum

from botocore.exceptions import ClientError

from infra.messages import RESULT_FIELDS, ImageResult

log = logging.getLogger(__name__)

BATCH_INDEX = "batch"
MAX_BATCH_GET = 100  # DynamoDB's BatchGetItem limit
BATCH_GET_ROUNDS = 5  # retries of unprocessed keys before giving up on them


class JobStatus(StrEnum):
    QUEUED = "queued"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Job:
    """One image's job: what the web tier recorded at submit, and the result once there is one."""

    id: str
    name: str
    status: JobStatus
    key: str | None = None
    version: str | None = None
    batch_id: str | None = None
    created_at: float | None = None  # the web tier began handling the upload
    enqueued_at: float | None = None  # the image was stored and its request was being sent
    result_at: float | None = None  # a web process (or the reaper) recorded the result
    result: ImageResult | None = None

    @property
    def total_ms(self) -> float | None:
        if self.created_at is None or self.result_at is None:
            return None
        return round((self.result_at - self.created_at) * 1000, 1)

    @property
    def answer(self) -> str | None:
        """The course-format body, once there is a result."""
        return None if self.result is None else self.result.answer

    @property
    def finished(self) -> bool:
        return self.status is not JobStatus.QUEUED

    def to_dict(self) -> dict:
        """The JSON API's job: request fields, then every result field (None while queued)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "result"}
        data["status"] = self.status.value
        data.update({name: getattr(self.result, name, None) for name in RESULT_FIELDS})
        data["name"] = self.name
        data["total_ms"] = self.total_ms
        data["answer"] = self.answer
        return data

    def with_result(self, result: ImageResult, result_at: float) -> Job:
        status = JobStatus.DONE if result.ok else JobStatus.FAILED
        return Job(**{**{f.name: getattr(self, f.name) for f in fields(self)},
                      "status": status, "result_at": result_at, "result": result})


_REQUEST_FIELDS = tuple(f.name for f in fields(Job) if f.name not in ("result", "status"))


# ---------------------------------------------------------------- item codec (pure)

def _attr(value) -> dict:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": repr(float(value))}
    return {"S": str(value)}


def _value(attr: dict):
    if "S" in attr:
        return attr["S"]
    if "N" in attr:
        return float(attr["N"])
    if "BOOL" in attr:
        return attr["BOOL"]
    return None


def to_item(job: Job) -> dict:
    item = {name: _attr(getattr(job, name)) for name in _REQUEST_FIELDS if getattr(job, name) is not None}
    item["status"] = _attr(job.status.value)
    if job.result is not None:
        item.update({name: _attr(getattr(job.result, name)) for name in RESULT_FIELDS
                     if getattr(job.result, name) is not None})
    return item


def from_item(item: dict) -> Job:
    data = {k: _value(v) for k, v in item.items()}
    status = JobStatus(data["status"])
    result = None
    if status is not JobStatus.QUEUED:
        result = ImageResult(data["id"], **{name: data.get(name) for name in RESULT_FIELDS})
    return Job(status=status, result=result, **{name: data.get(name) for name in _REQUEST_FIELDS})


def result_update(result: ImageResult, result_at: float) -> tuple[str, dict, dict]:
    """UpdateExpression, names and values that merge a result into its job item (pure)."""
    values = {"status": (JobStatus.DONE if result.ok else JobStatus.FAILED).value, "result_at": result_at}
    values.update({name: getattr(result, name) for name in RESULT_FIELDS if getattr(result, name) is not None})
    names = {f"#a{i}": k for i, k in enumerate(values)}
    expr = "SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(values)))
    return expr, names, {f":v{i}": _attr(v) for i, v in enumerate(values.values())}


# ---------------------------------------------------------------- the store

class JobStore:
    """Jobs in one DynamoDB table; thread-safe (boto3 clients are)."""

    def __init__(self, dynamodb, table: str):
        self.db = dynamodb
        self.table = table

    def add(self, job: Job) -> None:
        """Record a job; merges with a result already recorded (the request may be answered first)."""
        item = to_item(job)
        status = item.pop("status")
        item.pop("id")
        names = {f"#a{i}": k for i, k in enumerate(item)}
        values = {f":v{i}": v for i, v in enumerate(item.values())}
        sets = [f"#a{i} = :v{i}" for i in range(len(item))]
        if job.result is None:  # a queued record never overwrites a result
            sets.append("#st = if_not_exists(#st, :st)")
        else:
            sets.append("#st = :st")
        names["#st"], values[":st"] = "status", status
        try:
            self.db.update_item(TableName=self.table, Key={"id": {"S": job.id}}, UpdateExpression="SET " + ", ".join(sets),
                                ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        except ClientError:
            log.error("put_item of job %s (%s) into %s failed", job.id, job.name, self.table)
            raise

    def complete(self, result: ImageResult, received_at: float | None = None) -> None:
        """Merge a worker's result into its job (creates the item if the submit record is missing)."""
        expr, names, values = result_update(result, received_at or time.time())
        try:
            self.db.update_item(TableName=self.table, Key={"id": {"S": result.request_id}}, UpdateExpression=expr,
                                ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        except ClientError:
            log.error("update_item for result %s (%s) in %s failed", result.request_id, result.name, self.table)
            raise

    def get(self, job_id: str) -> Job | None:
        return self.get_many([job_id]).get(job_id)

    def get_many(self, job_ids: Iterable[str]) -> dict[str, Job]:
        ids = list(dict.fromkeys(job_ids))
        out: dict[str, Job] = {}
        for start in range(0, len(ids), MAX_BATCH_GET):
            keys = [{"id": {"S": i}} for i in ids[start:start + MAX_BATCH_GET]]
            for _ in range(BATCH_GET_ROUNDS):
                try:
                    resp = self.db.batch_get_item(RequestItems={self.table: {"Keys": keys, "ConsistentRead": True}})
                except ClientError:
                    log.error("batch_get_item of %d jobs from %s failed", len(keys), self.table)
                    raise
                for item in resp.get("Responses", {}).get(self.table, []):
                    job = from_item(item)
                    out[job.id] = job
                keys = resp.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
                if not keys:
                    break
            if keys:
                log.warning("%d jobs of %s stayed unprocessed after %d rounds", len(keys), self.table,
                            BATCH_GET_ROUNDS)
        return out

    def batch(self, batch_id: str) -> list[Job]:
        """Every job of a batch in the order it was submitted (a refused file where it was refused)."""
        jobs = []
        try:
            for page in self.db.get_paginator("query").paginate(
                    TableName=self.table, IndexName=BATCH_INDEX, KeyConditionExpression="batch_id = :b",
                    ExpressionAttributeValues={":b": {"S": batch_id}}):
                jobs += [from_item(item) for item in page.get("Items", [])]
        except ClientError:
            log.error("query of batch %s in %s failed", batch_id, self.table)
            raise
        return sorted(jobs, key=lambda j: (j.created_at or 0.0, j.enqueued_at or j.result_at or 0.0, j.id))


# ---------------------------------------------------------------- the table (provisioning)

def table_spec(table: str, tags: dict[str, str]) -> dict:
    """create_table arguments: key ``id``, a batch index, on-demand billing (pay per request)."""
    return {
        "TableName": table,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"},
                                 {"AttributeName": "batch_id", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
        "GlobalSecondaryIndexes": [{"IndexName": BATCH_INDEX,
                                    "KeySchema": [{"AttributeName": "batch_id", "KeyType": "HASH"}],
                                    "Projection": {"ProjectionType": "ALL"}}],
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
    }
