"""Bad input through both doors (``POST /`` and ``POST /api/jobs``) while good traffic flows.

Each kind gets the right 4xx with a one-line reason, or (valid but unusual images)
a classification; meanwhile two clients keep sending good images through ``POST /``
and every one of them must come back right.
"""

from __future__ import annotations

import json
import threading

import pytest
import requests

from infra.local.stack import StackProcess
from tests.helpers import wait_until
from tests.images import jpeg_bytes
from tests.reliability.inputs import (
    HOSTILE_NAMES,
    bad_files,
    maybe_bad_files,
    multipart,
    stream_upload,
    valid_images,
)
from tests.reliability.stack import wait_jobs
from tests.reliability.tally import TALLY

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]
GB = 1 << 30


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory):
    with StackProcess(tmp_path_factory.mktemp("badinput"), IMGREC_MAX_INSTANCES="3",
                      IMGREC_REQUEST_TIMEOUT="120") as stack:
        yield stack


def wrong_answers(outcomes: list[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
    """Good requests that did not come back 200 with their own name and a label."""
    return [o for o in outcomes if o[1] != 200 or not o[2].startswith(o[0].rsplit(".", 1)[0] + ":")]


@pytest.fixture(scope="module")
def good_traffic(local_stack):
    """Two clients sending good images through POST / for as long as the module runs; at the end, every
    one of them (whichever test ran last) must have been answered right."""
    stack = local_stack
    stop = threading.Event()
    outcomes: list[tuple[str, int, str]] = []

    def client(n: int):
        i = 0
        with requests.Session() as http:
            while not stop.is_set():
                name = f"good-{n}-{i}.jpg"
                try:
                    r = http.post(stack.url, files={"myfile": (name, jpeg_bytes(500 + i % 20), "image/jpeg")},
                                  timeout=120)
                    outcomes.append((name, r.status_code, r.text))
                except requests.RequestException as err:
                    outcomes.append((name, 0, repr(err)))
                i += 1

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(2)]
    for t in threads:
        t.start()
    yield outcomes
    stop.set()
    for t in threads:
        t.join(130)
    assert wrong_answers(outcomes) == [], wrong_answers(outcomes)[:5]


def record(kind: str, endpoint: str, outcome: str) -> None:
    TALLY.bad_inputs.append((kind, endpoint, outcome))


def one_line_reason(resp: requests.Response) -> str:
    if resp.headers.get("Content-Type", "").startswith("application/json"):
        body = resp.json()
        reason = body.get("error") or "; ".join(e["error"] for e in body.get("errors", []))
    else:
        reason = resp.text
    assert reason and "\n" not in reason.strip() and "Traceback" not in reason and len(reason) < 300, reason
    return reason


def post_form(stack, name, data, field="myfile") -> requests.Response:
    body, ctype = multipart([(field, name, data)])
    return requests.post(stack.url + "/", data=body, headers={"Content-Type": ctype}, timeout=120)


def post_api(stack, name, data) -> requests.Response:
    body, ctype = multipart([("files", name, data)])
    return requests.post(stack.url + "/api/jobs", data=body, headers={"Content-Type": ctype}, timeout=60)


def api_job(stack, resp: requests.Response) -> dict:
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["jobs"][0]["id"]
    return wait_jobs(stack.url, [job_id], timeout_s=120)[job_id]


def test_refused_files_get_the_right_4xx_on_both_endpoints(local_stack, good_traffic):
    cases = bad_files()
    cases.update({kind: (name, jpeg_bytes(11), {400}) for kind, name in HOSTILE_NAMES.items()})
    for kind, (name, data, statuses) in cases.items():
        for endpoint, send in (("POST /", post_form), ("POST /api/jobs", post_api)):
            resp = send(local_stack, name, data)
            reason = one_line_reason(resp)
            record(kind, endpoint, str(resp.status_code))
            assert resp.status_code in statuses, f"{kind} via {endpoint}: {resp.status_code} {reason}"


def test_unusual_valid_images_are_classified_on_both_endpoints(local_stack, good_traffic):
    for kind, (name, data) in valid_images().items():
        resp = post_form(local_stack, name, data)
        assert resp.status_code == 200, f"{kind}: {resp.status_code} {resp.text}"
        stem, _, label = resp.text.partition(":")
        assert stem == name.rsplit(".", 1)[0] and label, resp.text
        assert resp.headers["Content-Type"].startswith("text/plain")  # never rendered as HTML
        assert resp.headers["X-Content-Type-Options"] == "nosniff"  # nor sniffed into HTML
        record(kind, "POST /", "200 classified")
        job = api_job(local_stack, post_api(local_stack, name, data))
        assert job["status"] == "done" and job["label"], job
        assert job["name"] == name
        record(kind, "POST /api/jobs", "202 -> classified")


def test_damaged_images_are_refused_or_answered_with_a_reason(local_stack, good_traffic):
    for kind, (name, data) in maybe_bad_files().items():
        resp = post_form(local_stack, name, data)
        assert resp.status_code in (200, 415, 422), resp.text
        one_line_reason(resp)
        record(kind, "POST /", f"{resp.status_code} {resp.text[:40]!r}")
        resp = post_api(local_stack, name, data)
        if resp.status_code == 202:
            job = api_job(local_stack, resp)
            assert job["status"] in ("done", "failed") and (job["label"] or job["error"]), job
            record(kind, "POST /api/jobs", f"202 -> {job['status']} {job['error'] or job['label']}")
        else:
            assert resp.status_code == 415, resp.text
            record(kind, "POST /api/jobs", f"{resp.status_code} {one_line_reason(resp)[:40]!r}")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", ["/", "/api/jobs"])
def test_a_1_gb_stream_is_refused_without_reading_it(local_stack, good_traffic, path, chunked):
    host, port = local_stack.url.removeprefix("http://").split(":")
    got = stream_upload(host, int(port), path, total=GB, chunked=chunked)
    kind = f"1 GB stream ({'chunked' if chunked else 'Content-Length'})"
    record(kind, f"POST {path}", str(got.status))
    TALLY.upload_bytes.append(f"{kind} to POST {path}: {got.status} after {got.sent / 1e6:.2f} MB of 1073.7 MB "
                              f"({got.reason.strip()[:60]!r})")
    assert got.status == 413, got
    assert got.sent < 2 * local_stack.settings.max_upload_bytes, f"{got.sent} bytes went out before the refusal"


def test_hostile_multipart_bodies(local_stack, good_traffic):
    url = local_stack.url
    img = jpeg_bytes(12)
    cases = []  # (kind, path, body, content type, acceptable statuses)
    for path in ("/", "/api/jobs"):
        body, _ = multipart([("myfile", "a.jpg", img)])
        cases.append(("multipart without boundary", path, body, "multipart/form-data", {400}))
        cases.append(("boundary that never occurs", path, body, "multipart/form-data; boundary=nothere", {400}))
        body, ctype = multipart([("myfile", None, b"just a field, no file")])
        cases.append(("field without a file", path, body, ctype, {400}))
        body, ctype = multipart([(f"f{i}", None, b"x") for i in range(5000)])
        cases.append(("5000 parts", path, body, ctype, {400, 413}))
        unterminated = multipart([("myfile", "u.jpg", img)])[0].rsplit(b"--b0und4ry--", 1)[0]
        cases.append(("unterminated multipart", path, unterminated, "multipart/form-data; boundary=b0und4ry",
                      {400}))
        cases.append(("JSON body", path, json.dumps({"myfile": "aGVsbG8="}).encode(), "application/json", {400}))
        cases.append(("urlencoded form", path, b"myfile=hello.jpg", "application/x-www-form-urlencoded", {400}))
        cases.append(("raw JPEG body, no multipart", path, img, "image/jpeg", {400}))
    for kind, path, body, ctype, statuses in cases:
        resp = requests.post(url + path, data=body, headers={"Content-Type": ctype}, timeout=60)
        reason = one_line_reason(resp)
        record(kind, f"POST {path}", str(resp.status_code))
        assert resp.status_code in statuses, f"{kind} via {path}: {resp.status_code} {reason}"


def test_duplicate_file_fields(local_stack, good_traffic):
    one, two = jpeg_bytes(21), jpeg_bytes(22)
    body, ctype = multipart([("myfile", "dup-first.jpg", one), ("myfile", "dup-second.jpg", two)])
    resp = requests.post(local_stack.url + "/", data=body, headers={"Content-Type": ctype}, timeout=120)
    assert resp.status_code == 200 and resp.text.startswith("dup-first:"), resp.text  # the first, and only it
    record("duplicate file fields", "POST /", "200 first file classified")
    body, ctype = multipart([("files", "dup-a.jpg", one), ("files", "dup-a.jpg", two)])
    resp = requests.post(local_stack.url + "/api/jobs", data=body, headers={"Content-Type": ctype}, timeout=60)
    assert resp.status_code == 202 and len(resp.json()["jobs"]) == 2, resp.text  # each file is its own job
    ids = [j["id"] for j in resp.json()["jobs"]]
    jobs = wait_jobs(local_stack.url, ids, timeout_s=120)
    assert all(jobs[i]["status"] == "done" for i in ids), jobs
    record("duplicate file fields", "POST /api/jobs", "202 two jobs, both classified")


def test_wrong_methods(local_stack, good_traffic):
    for method, path in (("PUT", "/"), ("DELETE", "/"), ("PATCH", "/"), ("PUT", "/api/jobs"),
                         ("DELETE", "/api/jobs"), ("DELETE", "/api/jobs/abc"), ("POST", "/api/jobs/abc"),
                         ("POST", "/healthz")):
        resp = requests.request(method, local_stack.url + path, data=b"x", timeout=30)
        record(f"wrong method {method}", path, str(resp.status_code))
        assert resp.status_code == 405, f"{method} {path}: {resp.status_code}"


def test_good_traffic_was_served_throughout(local_stack, good_traffic):
    """Every good request sent so far was answered right (at least 10 of them, waited for if this runs
    early); the good_traffic fixture checks the rest when the module ends, wherever this test ran."""
    wait_until(lambda: len(good_traffic) >= 10, 300, interval=0.5, what="10 good requests answered")
    done = list(good_traffic)
    bad = wrong_answers(done)
    TALLY.requests(sent=len(done), answered=len(done) - len(bad), lost=len(bad))
    TALLY.notes.append(f"good requests during the bad-input attack: {len(done)} sent, {len(done) - len(bad)} right")
    assert len(done) >= 10
    assert bad == [], bad[:5]


def test_logs_hold_no_credentials_or_signatures(local_stack, good_traffic):
    logs = list((local_stack.data_dir / "logs").glob("*.log")) + [local_stack.log_path]
    assert len(logs) >= 4
    for path in logs:
        text = path.read_text(errors="replace")
        for needle in ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", "Credential=", "Signature=",
                       "Authorization:", "X-Amz-Security-Token"):
            assert needle not in text, f"{needle} in {path.name}"


# ---------------------------------------------------------------- bad input that reaches AWS or the queue itself

def _admin(local_stack):
    """The administrator's clients of the running stack (the keys `make run` writes) and its job store."""
    from infra.clients import Clients, local_admin_credentials
    from infra.jobstore import JobStore

    clients = Clients(local_stack.settings, credentials=local_admin_credentials(local_stack.settings))
    return clients, JobStore(clients.dynamodb, local_stack.settings.jobs_table)


def _queued_job(store, name: str):
    """A job record as the web tier makes it, for a request this test puts on the queue itself."""
    import time

    from infra.jobstore import Job, JobStatus
    from infra.messages import new_request_id

    job = Job(new_request_id(), name, JobStatus.QUEUED, batch_id=f"bad-input-{new_request_id()[:12]}",
              created_at=time.time(), enqueued_at=time.time())
    store.add(job)
    return job


def test_unsigned_aws_requests_get_aws_errors_not_a_crash(local_stack, good_traffic):
    """`curl http://127.0.0.1:4566/` against the IAM-enforced local AWS: AWS's 403 error document, no traceback."""
    url = local_stack.settings.endpoint_url
    log = local_stack.data_dir / "logs" / "moto.log"
    before = log.read_text(errors="replace").count("Traceback") if log.exists() else 0
    for kind, method, headers, body in (
            ("unsigned AWS request (GET /)", "GET", {}, None),
            ("unsigned AWS request (SQS JSON)", "POST", {"X-Amz-Target": "AmazonSQS.ListQueues",
                                                        "Content-Type": "application/x-amz-json-1.0"}, b"{}"),
            ("AWS request with a malformed signature", "GET", {"Authorization": "Bearer abc"}, None)):
        resp = requests.request(method, url + "/", headers=headers, data=body, timeout=30)
        record(kind, "local AWS endpoint", f"{resp.status_code} {resp.text.split('<Code>')[-1].split('<')[0]}")
        assert resp.status_code in (400, 403), (kind, resp.status_code, resp.text[:200])
        assert "<Error>" in resp.text and "Traceback" not in resp.text and "<html" not in resp.text.lower()
    after = log.read_text(errors="replace").count("Traceback") if log.exists() else 0
    assert after == before, "the local AWS logged a traceback for an unsigned request"


def test_a_request_for_a_missing_input_object_is_answered_at_once_naming_it(local_stack, good_traffic):
    """An input object deleted (or never stored) under a queued request: the worker answers at once with an error
    naming the object (the app role may list the input bucket, so S3 says 404, not a 403 retried to the DLQ)."""
    import time

    from infra.messages import ImageRequest
    from infra.observe import queue_url

    clients, store = _admin(local_stack)
    job = _queued_job(store, "vanished.jpg")
    key = f"uploads/vanished-{job.id[:8]}.jpg"
    request = ImageRequest(job.id, key, None, "vanished.jpg", time.time(), batch_id=job.batch_id)
    clients.sqs.send_message(QueueUrl=queue_url(clients.sqs, local_stack.settings.req_queue),
                             MessageBody=request.to_json())
    done = wait_jobs(local_stack.url, [job.id], timeout_s=60)[job.id]  # well before 3 receives' backoffs
    assert done["status"] == "failed" and "input object not found" in done["error"], done
    assert f"s3://{local_stack.settings.in_bucket}/{key}" in done["error"], done
    record("missing input object", "request queue", f"failed at once: {done['error'][:60]!r}")


def test_a_request_of_a_newer_schema_version_reaches_the_dlq_and_its_job_reads_failed(local_stack, good_traffic):
    """A rolling upgrade's newer web tier: the workers leave the v2 request for redelivery, it reaches the DLQ
    (the only thing there: the DLQ holds only poison and unknown versions), its job reads failed."""
    import json

    from infra.observe import queue_depth, queue_url

    clients, store = _admin(local_stack)
    job = _queued_job(store, "future.jpg")
    body = json.dumps({"v": 2, "request_id": job.id, "batch_id": job.batch_id, "name": "future.jpg",
                       "image": {"key": "future.jpg"}})
    sqs, settings = clients.sqs, local_stack.settings
    sqs.send_message(QueueUrl=queue_url(sqs, settings.req_queue), MessageBody=body)
    failed = wait_jobs(local_stack.url, [job.id], timeout_s=120)[job.id]
    assert failed["status"] == "failed" and "schema version 2" in failed["error"], failed
    dlq = queue_url(sqs, settings.dlq)
    wait_until(lambda: queue_depth(sqs, dlq).backlog == 1, 90, what="the v2 request in the DLQ")
    # The controller's reaper may be looking at it (hidden up to 30 s): wait until it can be read.
    [msg] = wait_until(lambda: sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10,
                                                   WaitTimeSeconds=1).get("Messages"), 60, what="the DLQ message")
    assert msg["Body"] == body and queue_depth(sqs, dlq).backlog == 1  # the very request, nothing else there
    sqs.delete_message(QueueUrl=dlq, ReceiptHandle=msg["ReceiptHandle"])  # the operator's call, after inspection
    record("unknown message version", "request queue", "left for redelivery -> DLQ; job failed")
