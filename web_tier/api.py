"""JSON API for programs and the page: submit jobs, read results, health.

``POST /api/jobs`` answers at once (202) with a batch id and a job id per file;
results are read from the shared job store, so any web process answers for a job
submitted through any other, and they outlive a restart. ``GET`` may long-poll with
``?wait=<s>``: woken at once by this process's dispatcher, and re-reading the store
every ``STORE_RECHECK_S`` for results another process recorded.
"""

from __future__ import annotations

import logging
import re
import time
from contextlib import contextmanager

from botocore.exceptions import BotoCoreError, ClientError
from flask import Blueprint, jsonify, request

from infra.jobstore import Job, JobStatus, StoreBusy
from infra.messages import ID_RE, new_request_id
from web_tier.intake import Rejected, check_upload, read_bounded, record_refused, submit
from web_tier.upload import refuse_large_body, state

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__)

MAX_WAIT_S = 25.0
MAX_IDS_PER_POLL = 100
STORE_RECHECK_S = 1.0
BATCH_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def _wait_s() -> float:
    try:
        return min(max(float(request.args.get("wait", 0)), 0.0), MAX_WAIT_S)
    except ValueError:
        raise Rejected(400, "wait must be a number of seconds") from None


def batch_links(batch_id: str) -> dict:
    return {"id": batch_id, "url": f"/api/batches/{batch_id}", "csv": f"/api/batches/{batch_id}.csv"}


@bp.post("/api/jobs")
def create_jobs():
    """Every file in any multipart field becomes a job of one batch; each file is checked on its own.

    ``?batch=<id>`` adds the files to an existing batch (the page sends its files one per request)."""
    st = state()
    received_at = time.time()
    refuse_large_body(st)
    batch_id = request.args.get("batch") or new_request_id()
    if not BATCH_ID_RE.match(batch_id):
        raise Rejected(400, "batch must be 8-64 letters, digits, - or _")
    files = list(request.files.items(multi=True))
    if not files:
        raise Rejected(400, "no file: send one or more images as multipart file fields")
    jobs, errors = [], []
    for field_name, f in files:
        try:
            data = read_bounded(f.stream, st.settings.max_upload_bytes)
            if not f.filename and not data:
                raise Rejected(400, "no file selected")
            job_id = submit(st, check_upload(f.filename, data, st.settings.max_upload_bytes), received_at=received_at,
                            batch_id=batch_id)
        except Rejected as err:
            log.info("POST /api/jobs refused %r (%d): %s (batch %s)", f.filename, err.status, err.reason, batch_id)
            if err.status != 503:
                record_refused(st, f.filename, err.reason, batch_id, received_at)
            errors.append({"field": field_name, "name": f.filename, "status": err.status, "error": err.reason})
            continue
        jobs.append({"id": job_id, "name": f.filename, "status": JobStatus.QUEUED.value, "url": f"/api/jobs/{job_id}"})
    status = 202 if jobs else errors[0]["status"]
    return jsonify(batch=batch_links(batch_id), jobs=jobs, errors=errors), status


@bp.get("/api/jobs/<job_id>")
def get_job(job_id: str):
    if not ID_RE.match(job_id):
        raise Rejected(404, "unknown job id")
    jobs = _read(state(), [job_id], _wait_s())
    if job_id not in jobs:
        raise Rejected(404, "unknown job id")
    return jsonify(jobs[job_id].to_dict())


@bp.get("/api/jobs")
def get_jobs():
    """``?ids=a,b,c&wait=s``: returns when any listed job has finished, or after ``wait`` seconds."""
    ids = [i for i in request.args.get("ids", "").split(",") if i]
    if not ids:
        raise Rejected(400, "ids is required: a comma-separated list of job ids")
    if len(ids) > MAX_IDS_PER_POLL or not all(ID_RE.match(i) for i in ids):
        raise Rejected(400, f"ids must be at most {MAX_IDS_PER_POLL} job ids")
    jobs = _read(state(), ids, _wait_s())
    return jsonify(jobs=[jobs[i].to_dict() for i in ids if i in jobs], unknown=[i for i in ids if i not in jobs])


@contextmanager
def store_answers(what: str):
    """A failed job store read as the request's answer: 503 (with Retry-After when the store is busy),
    never "unknown" for a job that exists. ``what`` says what was read, for the log."""
    try:
        yield
    except StoreBusy as err:
        log.warning("%s: %s", what, err)
        raise Rejected(503, "job store busy, try again", retry_after=1) from None
    except (ClientError, BotoCoreError) as err:
        log.error("%s failed: %s", what, err)
        raise Rejected(503, "job store unavailable, try again") from None


def read_store(st, ids: list[str]) -> dict[str, Job]:
    with store_answers(f"job store read of {len(ids)} ids"):
        return st.store.get_many(ids)


def _read(st, ids: list[str], wait_s: float) -> dict[str, Job]:
    deadline = time.monotonic() + wait_s
    with st.router.watch(ids) as w:  # registered before the read, so no result slips between
        while True:
            jobs = read_store(st, ids)
            for i, result in list(w.results.items()):  # delivered here, maybe not yet recorded
                if i in jobs and not jobs[i].finished:
                    jobs[i] = jobs[i].with_result(result, time.time())
            known = [jobs[i] for i in ids if i in jobs]
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not known or any(j.finished for j in known):
                return jobs
            w.event.wait(min(remaining, STORE_RECHECK_S))


@bp.get("/healthz")
def healthz():
    st = state()
    checks = {"s3": _ok(lambda: st.health_client("s3").head_bucket(Bucket=st.settings.in_bucket), "s3"),
              "sqs": _ok(lambda: st.health_client("sqs").get_queue_url(QueueName=st.settings.resp_queue), "sqs"),
              "jobs": _ok(lambda: st.health_client("dynamodb").describe_table(TableName=st.settings.jobs_table),
                          "dynamodb")}
    checks["dispatcher"] = st.dispatcher.is_alive()
    checks["reply_queue"] = st.reply.name or None
    checks["waiting"] = st.router.waiting  # requests (and page polls) waiting for a result right now
    healthy = checks["s3"] and checks["sqs"] and checks["jobs"] and (st.reply.url is not None or not checks["dispatcher"])
    return jsonify(checks), 200 if healthy else 503


def _ok(call, what: str) -> bool:
    try:
        call()
        return True
    except (ClientError, BotoCoreError) as err:
        log.warning("health check %s failed: %s", what, err)
        return False
