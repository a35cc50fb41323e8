"""``GET /`` (the page) and ``POST /`` (the course API: one image in, ``<name>:<label>`` out).

``POST /`` is synchronous: it waits for its own result up to ``settings.request_timeout_s``,
from whichever has it first: its reply (routed by request id by the dispatcher) or the job
store, which ``web_tier/recheck.py`` re-reads every second for every waiting request (a result
recorded by the worker, another web process, the reaper, or "failed" from the dead-letter
queue). Then ``504`` with the job id so the client can fetch the result later from
``GET /api/jobs/<id>``.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from infra.jobstore import STORE_ERRORS, JobStatus
from infra.messages import new_request_id
from web_tier.intake import COURSE_FIELDS, Rejected, check_upload, read_bounded, submit
from web_tier.state import EXTENSION, WebState

log = logging.getLogger(__name__)

bp = Blueprint("upload", __name__)


def state() -> WebState:
    return current_app.extensions[EXTENSION]


def text(body: str, status: int = 200, **headers) -> Response:
    return Response(body, status=status, mimetype="text/plain", headers=headers)


def refuse_large_body(st: WebState) -> None:
    """413 from the declared length, before a byte of the body is read."""
    length = request.content_length
    if length is not None and length > st.max_body_bytes:
        raise Rejected(413, f"upload is larger than the {st.settings.max_upload_bytes} byte limit")


@bp.get("/")
def page():
    st = state()
    return render_template("index.html", max_upload_bytes=st.settings.max_upload_bytes,
                           timeout_s=st.settings.request_timeout_s)


@bp.post("/")
def classify():
    st = state()
    received_at = time.time()
    try:
        refuse_large_body(st)
        f = next((request.files[name] for name in COURSE_FIELDS if name in request.files), None)
        if f is None:
            raise Rejected(400, "no file: send the image in the multipart field 'myfile' or 'inputFile'")
        data = read_bounded(f.stream, st.settings.max_upload_bytes)
        if not f.filename and not data:
            raise Rejected(400, "no file selected")
        upload = check_upload(f.filename, data, st.settings.max_upload_bytes)
        job_id = new_request_id()
        started = time.perf_counter()
        with st.router.watch([job_id], recheck=True) as w:  # before sending: a fast result must find us
            submit(st, upload, job_id, received_at)
            sent = time.perf_counter()
            w.event.wait(st.settings.request_timeout_s)
            woken = time.perf_counter()
    except Rejected as err:
        log.info("POST / refused (%d): %s", err.status, err.reason)
        return text(err.reason, err.status)
    result = w.results.get(job_id)
    if result is None:
        try:  # recorded in the store in the last second, after the re-reader's last look?
            job = st.store.get(job_id)
        except STORE_ERRORS as err:
            log.warning("job %s: store read after the wait failed: %s", job_id, err)
            job = None
        if job is None or job.status is JobStatus.QUEUED:
            log.warning("job %s (%s) timed out after %.0f s", job_id, upload.name, st.settings.request_timeout_s)
            return text(f"timed out after {st.settings.request_timeout_s:g} s waiting for a worker; job id {job_id}; "
                        f"GET /api/jobs/{job_id} for the result later", 504, **{"X-Job-Id": job_id})
        answer, ok = job.answer, job.status is JobStatus.DONE
    else:
        answer, ok = result.answer, result.ok
    # Server-Timing (ms): what this tier spent storing/sending, and waiting on the queues + worker.
    timing = f"ingest;dur={(sent - started) * 1000:.1f}, wait;dur={(woken - sent) * 1000:.1f}"
    return text(answer, 200 if ok else 422, **{"X-Job-Id": job_id, "Server-Timing": timing})


def register_error_handlers(app: Flask) -> None:
    """One-line reasons everywhere; JSON under /api, text elsewhere (the course clients read text)."""

    @app.errorhandler(Rejected)
    def rejected(err: Rejected):
        resp = _error(err.status, err.reason)
        if err.retry_after is not None:
            resp = app.make_response(resp)
            resp.headers["Retry-After"] = str(err.retry_after)
        return resp

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_err):
        st = app.extensions[EXTENSION]
        return _error(413, f"upload is larger than the {st.settings.max_upload_bytes} byte limit")

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        return _error(err.code or 500, err.description or err.name)


def _error(status: int, reason: str):
    reason = " ".join(str(reason).split())
    if request.path.startswith("/api/") or request.path == "/healthz":
        return jsonify(error=reason), status
    return text(reason, status)
