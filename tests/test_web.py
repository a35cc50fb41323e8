"""Web tier without a worker: bad input, the JSON API, timeouts, routing of foreign messages,
health and clean shutdown. The real app runs as `python -m web_tier` against the moto server."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from infra.cfn.stack import provision
from infra.clients import Clients
from infra.local.moto_server import free_port
from infra.messages import ImageRequest, ImageResult
from infra.observe import bucket_object_count, queue_depth, queue_url
from tests.images import jpeg_bytes, make_image, png_bytes
from tests.procs import log_text, running_web, start_module, stop_process, wait_for, web_settings

SMALL_LIMIT = 200_000  # bytes: lets the over-size cases stay small


@pytest.fixture(scope="module")
def web(moto_server, tmp_path_factory):
    """One provisioned stack and web tier for the module's read-mostly tests (no worker)."""
    tmp = tmp_path_factory.mktemp("web")
    settings = web_settings(moto_server, tmp / "data", max_upload_bytes=SMALL_LIMIT)
    clients = Clients(settings)
    provision(settings, clients)
    with running_web(settings, tmp / "web.log") as proc:
        proc.settings, proc.clients = settings, clients
        yield proc


def nothing_enqueued(web) -> None:
    depth = queue_depth(web.clients.sqs, queue_url(web.clients.sqs, web.settings.req_queue))
    assert depth.backlog == 0, "a refused upload reached the request queue"
    assert bucket_object_count(web.clients.s3, web.settings.in_bucket) == 0, "a refused upload was stored"


# ---------------------------------------------------------------- bad input on POST /
# The full table of refused uploads runs through Flask's test client in tests/test_upload_validation.py;
# these few go over real HTTP (multipart encoding by a real client, waitress in between).

BAD_UPLOADS = [
    ("no file", {}, 400, "no file"),
    ("text named .jpg", {"myfile": ("cat.jpg", b"hello, I am not an image\n" * 20)}, 415, "not an image"),
    ("path separator", {"myfile": ("../../etc/passwd.jpg", jpeg_bytes(1))}, 400, "path"),
    ("bidi override", {"myfile": ("gpj\u202e.exe", jpeg_bytes(1))}, 400, "control"),
]


@pytest.mark.parametrize("files,status,reason", [c[1:] for c in BAD_UPLOADS], ids=[c[0] for c in BAD_UPLOADS])
def test_bad_upload_is_refused_with_one_line_and_never_enqueued(web, files, status, reason):
    resp = requests.post(web.base + "/", files=files, timeout=10)
    assert resp.status_code == status, resp.text
    assert reason.lower() in resp.text.lower()
    assert "\n" not in resp.text.strip() and len(resp.text) < 200
    nothing_enqueued(web)


def test_declared_oversize_body_gets_413_before_the_body_is_sent(web):
    """Only headers go out; an answer that comes anyway proves the body was never read."""
    host, port = web.settings.web_host, web.settings.web_port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(f"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                     f"Content-Length: {50 * 1024 * 1024}\r\n\r\n".encode())
        head = sock.recv(4096).decode(errors="replace")
    assert head.startswith("HTTP/1.1 413"), head
    nothing_enqueued(web)


def test_chunked_oversize_body_is_refused(web):
    def chunks():
        for _ in range(SMALL_LIMIT // 8192 + 20):
            yield b"\0" * 8192

    resp = requests.post(web.base + "/", data=chunks(), timeout=10,
                         headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert resp.status_code == 413
    nothing_enqueued(web)


def test_image_just_over_the_limit_gets_the_app_reason(web):
    """Within waitress's framing slack, so the app's own bounded read refuses it."""
    body = png_bytes(make_image(3, (400, 300)))
    body += b"\0" * (SMALL_LIMIT + 1 - len(body))
    resp = requests.post(web.base + "/", files={"myfile": ("big.png", body)}, timeout=10)
    assert resp.status_code == 413 and "larger than" in resp.text
    nothing_enqueued(web)


def test_api_refuses_each_bad_file_and_reports_why(web):
    resp = requests.post(web.base + "/api/jobs", timeout=10, files=[
        ("a", ("x.jpg", b"not an image")), ("b", ("../evil.jpg", jpeg_bytes(1))), ("c", ("e.jpg", b""))])
    assert resp.status_code == 415
    body = resp.json()
    assert body["jobs"] == []
    assert [e["status"] for e in body["errors"]] == [415, 400, 400]
    assert all(e["error"] for e in body["errors"])
    assert requests.post(web.base + "/api/jobs", timeout=10).status_code == 400
    nothing_enqueued(web)


def test_unknown_and_malformed_job_ids_are_404(web):
    assert requests.get(web.base + "/api/jobs/" + uuid.uuid4().hex, timeout=10).status_code == 404
    resp = requests.get(web.base + "/api/jobs/bad%20id", timeout=10)
    assert resp.status_code == 404 and resp.json()["error"]
    assert requests.get(web.base + "/api/jobs?ids=", timeout=10).status_code == 400


def test_page_is_served_and_self_contained(web):
    resp = requests.get(web.base + "/", timeout=10)
    assert resp.status_code == 200 and "text/html" in resp.headers["Content-Type"]
    assert 'type="file"' in resp.text and "multiple" in resp.text
    assert "http://" not in resp.text and "https://" not in resp.text  # no CDN: works offline
    for asset in ("upload.js", "upload.css"):
        assert requests.get(f"{web.base}/static/{asset}", timeout=10).status_code == 200
    assert requests.get(web.base + "/dashboard", timeout=10).status_code == 200  # registered by create_app


def test_healthz_reports_s3_and_sqs(web):
    resp = requests.get(web.base + "/healthz", timeout=10)
    assert resp.status_code == 200
    assert resp.json()["s3"] is True and resp.json()["sqs"] is True


# ---------------------------------------------------------------- each test with its own stack

def test_healthz_is_503_when_resources_are_missing(moto_server, tmp_path):
    settings = web_settings(moto_server, tmp_path / "data")  # never provisioned
    with running_web(settings, tmp_path / "web.log") as proc:
        resp = requests.get(proc.base + "/healthz", timeout=20)
        assert resp.status_code == 503
        assert resp.json()["s3"] is False and resp.json()["sqs"] is False
        # and an upload then fails cleanly rather than hanging
        resp = requests.post(proc.base + "/", files={"myfile": ("a.jpg", jpeg_bytes(1))}, timeout=60)
        assert resp.status_code == 503 and "unavailable" in resp.text
        # SIGTERM while the main loop is busy with connections stops it: raised from the signal handler, it
        # used to be swallowed as an "uncaptured" channel error and the process served on until killed
        done, answered = threading.Event(), []

        def busy():
            with requests.Session() as session:
                while not done.is_set():
                    with contextlib.suppress(requests.RequestException):
                        answered.append(session.get(proc.base + "/api/jobs/none", timeout=5).status_code)

        clients = [threading.Thread(target=busy, daemon=True) for _ in range(8)]
        for t in clients:
            t.start()
        try:
            wait_for(lambda: len(answered) >= 50, 30, what="the clients being answered")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0, log_text(proc)
        finally:
            done.set()
        assert "SIGTERM received, stopping" in log_text(proc) and "uncaptured" not in log_text(proc)


def test_timeout_gives_504_with_job_id_and_the_job_stays_queryable(moto_server, tmp_path):
    settings = web_settings(moto_server, tmp_path / "data", request_timeout_s=1.0)
    clients = Clients(settings)
    provision(settings, clients)
    with running_web(settings, tmp_path / "web.log") as proc:
        for field in ("myfile", "inputFile"):
            # a 1 s request timeout answers 504 rather than hanging: the client's own 10 s bound fails a hang
            resp = requests.post(proc.base + "/", files={field: ("slow.jpg", jpeg_bytes(2))}, timeout=10)
            assert resp.status_code == 504, resp.text
            job_id = resp.headers["X-Job-Id"]
            assert job_id in resp.text
            job = requests.get(f"{proc.base}/api/jobs/{job_id}", timeout=10).json()
            assert job["status"] == "queued" and job["name"] == "slow.jpg"
        # the request really went out, as one small message naming an exact object version
        sqs = clients.sqs
        msgs = sqs.receive_message(QueueUrl=queue_url(sqs, settings.req_queue), MaxNumberOfMessages=10,
                                   WaitTimeSeconds=1)["Messages"]
        assert len(msgs) == 2
        for msg in msgs:
            req = ImageRequest.from_json(msg["Body"])
            assert len(msg["Body"].encode()) <= 1024 and req.key == "slow.jpg" and req.version
        versions = {ImageRequest.from_json(m["Body"]).version for m in msgs}
        assert len(versions) == 2, "same-name uploads must be distinct object versions"


@pytest.mark.slow
def test_holds_200_waiting_requests_at_once(moto_server, tmp_path):
    """Every synchronous request holds a thread and a connection; 200 must wait side by side."""
    n = 200
    settings = web_settings(moto_server, tmp_path / "data", request_timeout_s=25.0)
    provision(settings, Clients(settings))
    tiny = png_bytes(make_image(1, (64, 64)))
    with running_web(settings, tmp_path / "web.log") as proc:
        def one(i):
            return requests.post(proc.base + "/", files={"myfile": (f"w{i}.png", tiny)}, timeout=120).status_code

        pool = ThreadPoolExecutor(n)
        try:
            answers = [pool.submit(one, i) for i in range(n)]
            wait_for(lambda: requests.get(proc.base + "/healthz", timeout=10).json()["waiting"] == n, 25,
                     interval=0.5, what=f"{n} requests waiting at once")
            assert [a.result() for a in answers] == [504] * n
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def test_results_nobody_waits_for_are_kept_and_garbage_is_dropped(moto_server, tmp_path):
    """A result for an unknown id (e.g. sent while the web tier was down) is persisted; junk is deleted."""
    settings = web_settings(moto_server, tmp_path / "data")
    clients = Clients(settings)
    provision(settings, clients)
    sqs = clients.sqs
    resp_url = queue_url(sqs, settings.resp_queue)
    orphan = ImageResult("orphan" + uuid.uuid4().hex[:8], "lost.jpg", label="tabby", score=0.5, worker="i-x",
                         sent_at=time.time() - 2, done_at=time.time(), infer_ms=12.0)
    sqs.send_message(QueueUrl=resp_url, MessageBody=orphan.to_json())
    junk_bodies = ("not json", json.dumps({"v": 99}), json.dumps([1, 2]), json.dumps({"v": 1, "name": "x"}),
                   json.dumps({"v": 1, "request_id": "r1", "name": "x.jpg", "score": "high"}),
                   json.dumps({"v": 1, "request_id": "r2", "name": "x.jpg", "label": {"a": 1}}))
    for junk in junk_bodies:
        sqs.send_message(QueueUrl=resp_url, MessageBody=junk)
    with running_web(settings, tmp_path / "web.log") as proc:
        wait_for(lambda: queue_depth(sqs, resp_url).backlog == 0, 20, what="response queue drained")
        job = requests.get(f"{proc.base}/api/jobs/{orphan.request_id}", timeout=10).json()
        assert job["status"] == "done" and job["label"] == "tabby" and job["answer"] == "lost:tabby"
        assert log_text(proc).count("dropping garbled") == len(junk_bodies)
        for bad_id in ("r1", "r2"):
            assert requests.get(f"{proc.base}/api/jobs/{bad_id}", timeout=10).status_code == 404


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly(moto_server, tmp_path, sig):
    settings = web_settings(moto_server, tmp_path / "data")
    provision(settings, Clients(settings))
    proc = start_module("web_tier", settings, log_path=tmp_path / "web.log")
    try:
        wait_for(lambda: "listening on" in log_text(proc), 30, what="web tier start")
        assert f"http://{settings.web_host}:{settings.web_port}/" in log_text(proc)
        proc.send_signal(sig)
        assert proc.wait(10) == 0, log_text(proc)  # a stop that hangs fails here (TimeoutExpired)
        # With no result outstanding the dispatcher's long poll is not waited out (it is a daemon).
        text = log_text(proc)
        assert "web tier stopped" in text and ("dispatcher stopped" in text or "still in a long poll" in text)
        assert "deleted" in text or "handed" in text  # the reply queue was released
    except subprocess.TimeoutExpired:
        pytest.fail(f"web tier did not stop on {sig.name}:\n" + log_text(proc))
    finally:
        stop_process(proc)


def test_store_is_reachable_in_app_extensions(stack):
    """The documented hook a dashboard blueprint reads (no dispatcher, so no reply queue either)."""
    from web_tier import create_app, get_state

    app = create_app(stack, start_dispatcher=False)
    state = get_state(app)
    assert app.extensions["imgrec"] is state
    assert state.store.get("nothing") is None and state.store.table == stack.jobs_table
    assert not state.dispatcher.is_alive() and state.reply.url is None and state.reply_to() is None
    assert app.config["MAX_CONTENT_LENGTH"] == state.max_body_bytes




def test_a_result_recorded_by_another_process_answers_a_waiting_post_promptly(moto_server, tmp_path):
    """The result lands in the job store, not on this process's reply queue (a worker after a reply-queue
    fallback, another web process, the reaper): the waiting POST / answers within a few seconds, not at
    its 120 s timeout."""
    from infra.jobstore import JobStore

    settings = web_settings(moto_server, tmp_path / "data", request_timeout_s=120.0)
    clients = Clients(settings)
    provision(settings, clients)
    with running_web(settings, tmp_path / "web.log") as proc:
        answer: dict = {}

        def post():
            resp = requests.post(proc.base + "/", files={"myfile": ("elsewhere.jpg", jpeg_bytes(4))}, timeout=150)
            answer.update(status=resp.status_code, text=resp.text)

        waiting = threading.Thread(target=post)
        waiting.start()
        sqs = clients.sqs
        msg = wait_for(lambda: sqs.receive_message(QueueUrl=queue_url(sqs, settings.req_queue),
                                                   WaitTimeSeconds=1).get("Messages"), 20, what="the request")[0]
        request = ImageRequest.from_json(msg["Body"])
        JobStore(clients.dynamodb, settings.jobs_table).complete(
            ImageResult(request.request_id, request.name, label="goldfish", score=0.9, worker="elsewhere"))
        waiting.join(10)
        assert not waiting.is_alive(), "POST / did not see the result recorded in the job store"
        assert answer == {"status": 200, "text": "elsewhere:goldfish"}
        assert "result found in the job store" in log_text(proc)


def test_web_processes_starting_together_leave_exactly_one_on_the_shared_queue(moto_server, tmp_path):
    """Every deployed web instance has the same settings (reply queue `shared`): three starting at once
    must not all answer from the response queue (its claim is one conditional write, not read-then-tag)."""
    settings = web_settings(moto_server, tmp_path / "data")
    provision(settings, Clients(settings))
    procs = []
    try:
        for i in range(3):
            s = settings.replace(web_port=free_port())
            procs.append(start_module("web_tier", s, log_path=tmp_path / f"web{i}.log", IMGREC_REPLY_QUEUE="shared"))
        chose = lambda p: ("answers from the shared response queue" in log_text(p)  # noqa: E731
                           or "reply queue" in log_text(p) and " made for web process" in log_text(p))
        wait_for(lambda: all(chose(p) for p in procs), 60, what="each web process to choose its reply queue")
        shared = [p for p in procs if "answers from the shared response queue" in log_text(p)]
        assert len(shared) == 1, [log_text(p)[-400:] for p in procs]
        # The holder stops cleanly: the claim is released, and a new process takes the shared queue at once.
        holder = shared[0]
        stop_process(holder, timeout=20)
        procs.remove(holder)
        again = start_module("web_tier", settings.replace(web_port=free_port()), log_path=tmp_path / "web3.log",
                             IMGREC_REPLY_QUEUE="shared")
        procs.append(again)
        wait_for(lambda: chose(again), 60, what="the new process to choose")
        assert "answers from the shared response queue" in log_text(again)
    finally:
        for p in procs:
            stop_process(p)


def test_shared_queue_claim_is_one_conditional_write(stack, clients):
    """Three claimants released at the same instant (a barrier): exactly one holds the shared queue."""
    from web_tier.replies import ReplyQueue

    barrier = threading.Barrier(3)
    replies = [ReplyQueue(stack, clients.sqs, clients.dynamodb, owner=f"host:{i}:x") for i in range(3)]

    def claim(reply):
        barrier.wait()
        return reply._claim_shared()

    with ThreadPoolExecutor(3) as pool:
        won = list(pool.map(claim, replies))
    assert sum(won) == 1, won
    holder = replies[won.index(True)]
    assert holder.claim.renew() and not replies[won.index(False)].claim.renew()
