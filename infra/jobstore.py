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
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields
from enum import StrEnum

from botocore.exceptions import BotoCoreError, ClientError

from infra.messages import RESULT_FIELDS, ImageResult

log = logging.getLogger(__name__)

BATCH_INDEX = "batch"
MAX_BATCH_GET = 100  # DynamoDB's BatchGetItem limit
BATCH_GET_ROUNDS = 6  # tries of unprocessed keys (pauses 0.05 .. 0.8 s, about 1.5 s in all) before 503


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
        result = ImageResult(data["id"], batch_id=data.get("batch_id"),
                             **{name: data.get(name) for name in RESULT_FIELDS})
    return Job(status=status, result=result, **{name: data.get(name) for name in _REQUEST_FIELDS})


def result_update(result: ImageResult, result_at: float) -> tuple[str, dict, dict]:
    """UpdateExpression, names and values that merge a result into its job item (pure)."""
    values = {"status": (JobStatus.DONE if result.ok else JobStatus.FAILED).value, "result_at": result_at}
    values.update({name: getattr(result, name) for name in RESULT_FIELDS if getattr(result, name) is not None})
    names = {f"#a{i}": k for i, k in enumerate(values)}
    expr = "SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(values)))
    return expr, names, {f":v{i}": _attr(v) for i, v in enumerate(values.values())}


# ---------------------------------------------------------------- batch counters (pure)

BATCH_ITEM_PREFIX = "batch:"  # a batch's counters item; ':' is never in a job id, so it is never read as one
COUNTER = {"submitted": "n_submitted", JobStatus.DONE: "n_done", JobStatus.FAILED: "n_failed"}


def batch_key(batch_id: str) -> dict:
    return {"id": {"S": f"{BATCH_ITEM_PREFIX}{batch_id}"}}


@dataclass(frozen=True)
class BatchCounts:
    """A batch's counters, read with ConsistentRead: every job submitted to it, and how many finished."""

    submitted: int
    done: int
    failed: int

    @property
    def queued(self) -> int:
        return max(0, self.submitted - self.done - self.failed)

    @property
    def finished(self) -> bool:
        """Every submitted job has a final status (a batch stays open: ``?batch=`` may add more later)."""
        return self.submitted > 0 and self.done + self.failed >= self.submitted

    def as_dict(self) -> dict[str, int]:
        return {JobStatus.QUEUED.value: self.queued, JobStatus.DONE.value: self.done,
                JobStatus.FAILED.value: self.failed}


def counter_update(deltas: dict[str, int], table: str, batch_id: str, now: float) -> dict:
    """One TransactWriteItems entry that moves a batch's counters by ``deltas`` (counter name -> +-n) (pure)."""
    names = {f"#c{i}": name for i, name in enumerate(deltas)}
    values = {f":d{i}": {"N": str(d)} for i, d in enumerate(deltas.values())}
    names["#t"], values[":now"] = "created_at", {"N": repr(float(now))}
    adds = ", ".join(f"#c{i} :d{i}" for i in range(len(deltas)))
    return {"Update": {"TableName": table, "Key": batch_key(batch_id),
                       "UpdateExpression": f"SET #t = if_not_exists(#t, :now) ADD {adds}",
                       "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}}


# ---------------------------------------------------------------- the store

class StoreError(RuntimeError):
    """A job store call that failed for a reason of the store's own (beside botocore's errors)."""


class StoreBusy(StoreError):
    """DynamoDB kept part of a read unprocessed (throughput) through every retry: try again later (503),
    never "unknown" for a job that exists."""


class StoreConflict(StoreError):
    """A job's record kept changing under a conditional write; the caller treats it as a failed write."""


# What any job store call may raise when it fails: reads raise StoreBusy, writes StoreConflict.
STORE_ERRORS = (ClientError, BotoCoreError, StoreError)


BATCH_GET_BACKOFF_S = 0.05  # first wait before re-asking for unprocessed keys; doubles each round
BATCH_GET_BACKOFF_MAX_S = 1.0
CONFLICT_ROUNDS = 8
THROTTLED = ("ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded")


def _code(err: ClientError) -> str:
    return err.response.get("Error", {}).get("Code", "")


_PLACEHOLDER = re.compile(r"[#:][A-Za-z0-9_]+")


def _placeholders(expressions, names: dict, values: dict) -> dict:
    """ExpressionAttributeNames/Values limited to those the expressions use (DynamoDB refuses unused ones)."""
    used = {m.group(0) for e in expressions for m in _PLACEHOLDER.finditer(e)}
    out = {"ExpressionAttributeNames": {k: v for k, v in names.items() if k in used}}
    vals = {k: v for k, v in values.items() if k in used}
    if vals:
        out["ExpressionAttributeValues"] = vals
    return out


class JobStore:
    """Jobs (and each batch's counters) in one DynamoDB table; thread-safe (boto3 clients are).

    A batch's counters move in the same transaction as the job whose status they count, so they are
    exact whatever the order of submit record and result, however often a result is recorded (worker,
    web dispatcher, reaper, redelivery) and whoever dies between two calls: the job item says whether
    it was counted (``batch_id`` is set by its submit record, which counts it as submitted, and only
    there), and a result moves the counters only on a change of status.
    """

    def __init__(self, dynamodb, table: str, *, sleep=time.sleep):
        self.db = dynamodb
        self.table = table
        self.sleep = sleep

    # ------------------------------------------------------------ writes
    def add(self, job: Job) -> None:
        """Record a job's submit; merges with a result already recorded (the request may be answered first)."""
        try:
            if job.batch_id is None:
                self._add_plain(job)
            else:
                self._add_counted(job)
        except ClientError:
            log.error("recording job %s (%s) in %s failed", job.id, job.name, self.table)
            raise

    def _submit_update(self, job: Job) -> tuple[str, dict, dict]:
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
        return "SET " + ", ".join(sets), names, values

    def _add_plain(self, job: Job) -> None:
        expr, names, values = self._submit_update(job)
        self.db.update_item(TableName=self.table, Key={"id": {"S": job.id}}, UpdateExpression=expr,
                            ExpressionAttributeNames=names, ExpressionAttributeValues=values)

    def _add_counted(self, job: Job) -> None:
        expr, names, values = self._submit_update(job)
        now = job.created_at or time.time()
        for _ in range(CONFLICT_ROUNDS):
            if job.result is None:  # the usual case: no result yet
                cond = "attribute_not_exists(batch_id) AND (attribute_not_exists(#st) OR #st = :q)"
                deltas = {COUNTER["submitted"]: 1}
            else:  # refused at intake: submitted and failed at once
                cond = "attribute_not_exists(batch_id) AND attribute_not_exists(#st)"
                deltas = {COUNTER["submitted"]: 1, COUNTER[job.status]: 1}
            if self._transact(job.id, expr, names, {**values, ":q": _attr(JobStatus.QUEUED.value)}, cond,
                              job.batch_id, deltas, now):
                return
            current = self._read_item(job.id)
            if current is None:
                continue
            if "batch_id" in current:
                return  # already recorded and counted (a retry of this same submit)
            status = current.get("status", {}).get("S")
            if job.result is None and status in (JobStatus.DONE.value, JobStatus.FAILED.value):
                # The result came first, uncounted: count the job as submitted and finished at once
                # (the record's if_not_exists keeps that status).
                if self._transact(job.id, expr, names, {**values, ":cur": _attr(status)},
                                  "attribute_not_exists(batch_id) AND #st = :cur", job.batch_id,
                                  {COUNTER["submitted"]: 1, COUNTER[JobStatus(status)]: 1}, now):
                    return
        raise StoreConflict(f"job {job.id}: its record kept changing while recording its submit")

    def complete(self, result: ImageResult, received_at: float | None = None, *, only_if_queued: bool = False) -> bool:
        """Merge a result into its job (creating the item if its submit record is not there yet).

        Returns False when nothing was written: ``only_if_queued`` and the job had already finished
        (a dead-letter mark never overwrites a result), or the job already has this very status (a
        result recorded twice, by the worker and by a web process or a redelivery). Raises
        ``ClientError`` (logged) or ``StoreConflict`` when the write failed.
        """
        at = received_at or time.time()
        try:
            if result.batch_id is None:
                return self._complete_plain(result, at, only_if_queued)
            return self._complete_counted(result, at, only_if_queued)
        except ClientError:
            log.error("recording result %s (%s) in %s failed", result.request_id, result.name, self.table)
            raise

    def _complete_plain(self, result: ImageResult, at: float, only_if_queued: bool) -> bool:
        expr, names, values = result_update(result, at)
        extra = {}
        if only_if_queued:
            names["#st"], values[":q"] = "status", _attr(JobStatus.QUEUED.value)
            extra["ConditionExpression"] = "attribute_not_exists(#st) OR #st = :q"
        try:
            self.db.update_item(TableName=self.table, Key={"id": {"S": result.request_id}}, UpdateExpression=expr,
                                ExpressionAttributeNames=names, ExpressionAttributeValues=values, **extra)
        except ClientError as err:
            if _code(err) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _complete_counted(self, result: ImageResult, at: float, only_if_queued: bool) -> bool:
        new = JobStatus.DONE if result.ok else JobStatus.FAILED
        expr, names, values = result_update(result, at)
        names["#st"] = "status"
        for _ in range(CONFLICT_ROUNDS):
            # The usual case: submitted, still queued -> counted as finished in the same write.
            if self._transact(result.request_id, expr, names, {**values, ":q": _attr(JobStatus.QUEUED.value)},
                              "attribute_exists(batch_id) AND #st = :q", result.batch_id, {COUNTER[new]: 1}, at):
                return True
            current = self._read_item(result.request_id)
            if current is None or "batch_id" not in current:
                # Its submit record is not there yet: record the result uncounted; the submit counts it.
                cond = "attribute_not_exists(batch_id)"
                if only_if_queued:
                    cond += " AND (attribute_not_exists(#st) OR #st = :q)"
                try:
                    self.db.update_item(TableName=self.table, Key={"id": {"S": result.request_id}},
                                        UpdateExpression=expr, ConditionExpression=cond,
                                        **_placeholders((expr, cond), names,
                                                        {**values, ":q": _attr(JobStatus.QUEUED.value)}))
                    return True
                except ClientError as err:
                    if _code(err) != "ConditionalCheckFailedException":
                        raise
                    continue
            old = current.get("status", {}).get("S")
            if old == JobStatus.QUEUED.value:
                continue  # changed between the two calls: again
            if only_if_queued or old == new.value:
                return False
            # A different final status (failed, then done after a redrive): move one count across.
            if self._transact(result.request_id, expr, names, {**values, ":old": _attr(old)}, "#st = :old",
                              current["batch_id"]["S"], {COUNTER[JobStatus(old)]: -1, COUNTER[new]: 1}, at):
                return True
        raise StoreConflict(f"job {result.request_id}: its record kept changing while recording its result")

    def _transact(self, job_id: str, expr: str, names: dict, values: dict, condition: str, batch_id: str,
                  deltas: dict[str, int], now: float) -> bool:
        """Update the job under ``condition`` and move its batch's counters, atomically; False when the
        condition did not hold (nothing written)."""
        job_update = {"Update": {"TableName": self.table, "Key": {"id": {"S": job_id}}, "UpdateExpression": expr,
                                 "ConditionExpression": condition,
                                 **_placeholders((expr, condition), names, values)}}
        try:
            self.db.transact_write_items(TransactItems=[job_update, counter_update(deltas, self.table, batch_id, now)])
        except ClientError as err:
            if _code(err) == "TransactionCanceledException":
                reasons = [r.get("Code") for r in err.response.get("CancellationReasons", [])]
                if reasons[:1] == ["ConditionalCheckFailed"] or not reasons:
                    return False
                if "TransactionConflict" in reasons:
                    return False  # another transaction on the same items: read again and retry
            raise
        return True

    def _read_item(self, job_id: str) -> dict | None:
        return self.db.get_item(TableName=self.table, Key={"id": {"S": job_id}}, ConsistentRead=True).get("Item")

    # ------------------------------------------------------------ reads
    def get(self, job_id: str) -> Job | None:
        return self.get_many([job_id]).get(job_id)

    def get_many(self, job_ids: Iterable[str]) -> dict[str, Job]:
        """Jobs by id, read consistently. Keys DynamoDB leaves unprocessed (it may, under throughput limits)
        are asked for again after a growing pause; ``StoreBusy`` if some are still left after that."""
        ids = list(dict.fromkeys(job_ids))
        out: dict[str, Job] = {}
        for start in range(0, len(ids), MAX_BATCH_GET):
            keys = [{"id": {"S": i}} for i in ids[start:start + MAX_BATCH_GET]]
            pause = BATCH_GET_BACKOFF_S
            for attempt in range(BATCH_GET_ROUNDS):
                if attempt:
                    self.sleep(pause)
                    pause = min(pause * 2, BATCH_GET_BACKOFF_MAX_S)
                try:
                    resp = self.db.batch_get_item(RequestItems={self.table: {"Keys": keys, "ConsistentRead": True}})
                except ClientError as err:
                    if _code(err) in THROTTLED:  # after botocore's own retries: busy, not failed
                        raise StoreBusy(f"DynamoDB throttled reading {len(keys)} jobs: {_code(err)}") from None
                    log.error("batch_get_item of %d jobs from %s failed", len(keys), self.table)
                    raise
                for item in resp.get("Responses", {}).get(self.table, []):
                    job = from_item(item)
                    out[job.id] = job
                keys = resp.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
                if not keys:
                    break
            if keys:
                log.warning("%d of the jobs read from %s stayed unprocessed after %d tries", len(keys), self.table,
                            BATCH_GET_ROUNDS)
                raise StoreBusy(f"{len(keys)} jobs stayed unprocessed by DynamoDB after {BATCH_GET_ROUNDS} tries")
        return out

    def batch_counts(self, batch_id: str) -> BatchCounts | None:
        """A batch's counters (ConsistentRead), or None for a batch nobody submitted to."""
        try:
            item = self.db.get_item(TableName=self.table, Key=batch_key(batch_id), ConsistentRead=True).get("Item")
        except ClientError:
            log.error("get_item of batch %s counters in %s failed", batch_id, self.table)
            raise
        if not item:
            return None
        n = {k: int(float(item.get(v, {}).get("N", "0"))) for k, v in
             (("submitted", COUNTER["submitted"]), ("done", COUNTER[JobStatus.DONE]),
              ("failed", COUNTER[JobStatus.FAILED]))}
        return BatchCounts(**n)

    def batch(self, batch_id: str) -> list[Job]:
        """Every job of a batch in the order it was submitted (a refused file where it was refused).

        Read through the batch index, which AWS documents as eventually consistent: a job just
        submitted may be missing and a status may be behind. Callers that need exact progress
        read ``batch_counts``; ``refresh`` re-reads the jobs still listed as queued."""
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

    def refresh(self, jobs: list[Job]) -> list[Job]:
        """The same jobs, those listed as queued re-read from the table itself (ConsistentRead)."""
        stale = [j.id for j in jobs if not j.finished]
        if not stale:
            return jobs
        fresh = self.get_many(stale)
        return [fresh.get(j.id, j) for j in jobs]


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
