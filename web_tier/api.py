"""JSON API for programs and the page: submit jobs, read results, health.

``POST /api/jobs`` answers at once (202) with job ids; results are read from the
durable job store, so they outlive a web-tier restart. ``GET`` may long-poll
with ``?wait=<s>`` (woken by the dispatcher), which keeps the page's polling cheap.
"""

from __future__ import annotations

import logging
import re
import time

from botocore.exceptions import BotoCoreError, ClientError
from flask import Blueprint, jsonify, request

from web_tier.intake import Rejected, check_upload, read_bounded, submit
from web_tier.jobs import JobStatus
from web_tier.upload import refuse_large_body, state

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__)

MAX_WAIT_S = 25.0
MAX_IDS_PER_POLL = 100
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _wait_s() -> float:
    try:
        return min(max(float(request.args.get("wait", 0)), 0.0), MAX_WAIT_S)
    except ValueError:
        raise Rejected(400, "wait must be a number of seconds") from None


@bp.post("/api/jobs")
def create_jobs():
    """Every file in any multipart field becomes a job; each file is checked on its own."""
    st = state()
    received_at = time.time()
    refuse_large_body(st)
    files = list(request.files.items(multi=True))
    if not files:
        raise Rejected(400, "no file: send one or more images as multipart file fields")
    jobs, errors = [], []
    for field_name, f in files:
        try:
            data = read_bounded(f.stream, st.settings.max_upload_bytes)
            if not f.filename and not data:
                raise Rejected(400, "no file selected")
            job_id = submit(st, check_upload(f.filename, data, st.settings.max_upload_bytes), received_at=received_at)
        except Rejected as err:
            log.info("POST /api/jobs refused %r (%d): %s", f.filename, err.status, err.reason)
            errors.append({"field": field_name, "name": f.filename, "status": err.status, "error": err.reason})
            continue
        jobs.append({"id": job_id, "name": f.filename, "status": JobStatus.QUEUED.value, "url": f"/api/jobs/{job_id}"})
    status = 202 if jobs else errors[0]["status"]
    return jsonify(jobs=jobs, errors=errors), status


@bp.get("/api/jobs/<job_id>")
def get_job(job_id: str):
    if not JOB_ID_RE.match(job_id):
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
    if len(ids) > MAX_IDS_PER_POLL or not all(JOB_ID_RE.match(i) for i in ids):
        raise Rejected(400, f"ids must be at most {MAX_IDS_PER_POLL} job ids")
    jobs = _read(state(), ids, _wait_s())
    return jsonify(jobs=[jobs[i].to_dict() for i in ids if i in jobs], unknown=[i for i in ids if i not in jobs])


def _read(st, ids: list[str], wait_s: float) -> dict:
    with st.router.watch(ids) as w:  # registered before the read, so no result slips between
        jobs = st.store.get_many(ids)
        pending = [i for i in ids if i in jobs and jobs[i].status is JobStatus.QUEUED]
        if wait_s > 0 and pending and len(pending) == len([i for i in ids if i in jobs]):
            if w.event.wait(wait_s):
                jobs = st.store.get_many(ids)
    return jobs


@bp.get("/healthz")
def healthz():
    st = state()
    checks = {"s3": _ok(lambda: st.health_client("s3").head_bucket(Bucket=st.settings.in_bucket), "s3"),
              "sqs": _ok(lambda: st.health_client("sqs").get_queue_url(QueueName=st.settings.resp_queue), "sqs")}
    checks["dispatcher"] = st.dispatcher.is_alive()
    checks["waiting"] = st.router.waiting  # requests (and page polls) waiting for a result right now
    healthy = checks["s3"] and checks["sqs"]
    return jsonify(checks), 200 if healthy else 503


def _ok(call, what: str) -> bool:
    try:
        call()
        return True
    except (ClientError, BotoCoreError) as err:
        log.warning("health check %s failed: %s", what, err)
        return False
