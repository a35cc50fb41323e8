"""Dead-lettered requests: their jobs read failed with the reason (a waiting `POST /` answers at once),
`python -m infra redrive` brings them back; a newer schema version reaches the DLQ instead of being dropped."""

from __future__ import annotations

import json
import signal
import threading
import time

import requests

from controller.reaper import Reaper
from infra.cfn.stack import provision
from infra.clients import Clients
from infra.jobstore import Job, JobStatus, JobStore
from infra.messages import ImageRequest
from infra.observe import queue_depth, queue_url
from infra.redrive import redrive, summary
from tests.helpers import wait_until
from tests.images import jpeg_bytes
from tests.procs import log_text, running_web, start_module, stop_process, web_settings


def _dead_letter_one(sqs, settings) -> dict:
    """What the redrive policy does after maxReceiveCount receives: the message moves to the DLQ."""
    req_url, dlq_url = queue_url(sqs, settings.req_queue), queue_url(sqs, settings.dlq)
    msg = wait_until(lambda: sqs.receive_message(QueueUrl=req_url, MaxNumberOfMessages=1,
                                                 WaitTimeSeconds=1).get("Messages"), 20, what="the request")[0]
    sqs.send_message(QueueUrl=dlq_url, MessageBody=msg["Body"])
    sqs.delete_message(QueueUrl=req_url, ReceiptHandle=msg["ReceiptHandle"])
    return msg


def test_a_waiting_post_answers_at_once_when_its_request_is_dead_lettered_and_redrive_brings_it_back(
        moto_server, tmp_path):
    settings = web_settings(moto_server, tmp_path / "data", request_timeout_s=120.0)
    clients = Clients(settings)
    provision(settings, clients)
    sqs = clients.sqs
    with running_web(settings, tmp_path / "web.log") as web:
        answer: dict = {}

        def post():
            resp = requests.post(web.base + "/", files={"myfile": ("poison.jpg", jpeg_bytes(3))}, timeout=150)
            answer.update(status=resp.status_code, text=resp.text, at=time.monotonic())

        waiting = threading.Thread(target=post)
        waiting.start()
        msg = _dead_letter_one(sqs, settings)
        job_id = ImageRequest.from_json(msg["Body"]).request_id
        marked_at = time.monotonic()
        assert Reaper(settings, sqs, JobStore(clients.dynamodb, settings.jobs_table)).mark_dead_letters() == 1
        waiting.join(15)  # a bounded wait: without the store re-read it would hang for the 120 s timeout
        assert not waiting.is_alive(), "POST / still waiting after its job was marked failed"
        assert answer["status"] == 422 and "dead-letter queue" in answer["text"], answer
        assert answer["text"].startswith("poison:error:")
        job = requests.get(f"{web.base}/api/jobs/{job_id}", timeout=10).json()
        assert job["status"] == "failed" and "redrive" in job["error"]
        print(f"answered {answer['at'] - marked_at:.2f} s after the job was marked")

    # A second pass marks nothing again; the message stays for the redrive.
    reaper = Reaper(settings, sqs, JobStore(clients.dynamodb, settings.jobs_table))
    assert reaper.mark_dead_letters() == 0
    lines: list[str] = []
    result = redrive(settings, sqs, wait_s=60, say=lines.append)
    assert result.moved == 1 and result.failed == result.left_in_flight == 0, (result, lines)
    assert "1 requests moved" in summary(result, settings)
    req = queue_depth(sqs, queue_url(sqs, settings.req_queue))
    dlq = queue_depth(sqs, queue_url(sqs, settings.dlq))
    assert (req.visible, dlq.visible + dlq.in_flight) == (1, 0)
    back = sqs.receive_message(QueueUrl=queue_url(sqs, settings.req_queue), WaitTimeSeconds=1)["Messages"][0]
    assert back["Body"] == msg["Body"]  # the same request, byte for byte


def test_a_newer_schema_version_reaches_the_dlq_and_its_job_reads_failed(stack, clients, tmp_path):
    """A rolling upgrade: the web tier speaks v2 before the workers do. The worker leaves the request (not
    dropped), it reaches the DLQ after maxReceiveCount receives, its job and batch read failed, the log
    names it once."""
    settings = stack.replace(max_receive_count=2)
    provision(settings, clients)  # the redrive policy with 2 receives
    store = JobStore(clients.dynamodb, settings.jobs_table)
    batch = "upgrade-" + settings.prefix
    store.add(Job("newer0001", "future.jpg", JobStatus.QUEUED, batch_id=batch, created_at=time.time(),
                  enqueued_at=time.time()))
    body = json.dumps({"v": 2, "request_id": "newer0001", "batch_id": batch, "name": "future.jpg",
                       "image": {"key": "future.jpg", "etag": "x"}})
    sqs = clients.sqs
    sqs.send_message(QueueUrl=queue_url(sqs, settings.req_queue), MessageBody=body)
    worker = start_module("app_tier", settings, log_path=tmp_path / "w.log", IMGREC_INSTANCE_ID="w-old",
                          IMGREC_TORCH_THREADS="1")
    try:
        dlq_url = queue_url(sqs, settings.dlq)
        wait_until(lambda: queue_depth(sqs, dlq_url).visible == 1, 90, what="the v2 request in the DLQ")
        job = wait_until(lambda: (j := store.get("newer0001")).finished and j, 10, what="the job marked")
        assert job.status is JobStatus.FAILED and "schema version 2" in job.result.error
        counts = store.batch_counts(batch)
        assert (counts.submitted, counts.failed, counts.finished) == (1, 1, True)
        assert sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=1)["Messages"][0]["Body"] == body
    finally:
        stop_process(worker, timeout=30, sig=signal.SIGTERM)
    text = log_text(worker)
    assert text.count("unknown message schema version 2") == 1 and "newer0001" in text and "Traceback" not in text


def test_a_reply_queue_reaped_during_a_burst_loses_nothing(moto_server, tmp_path):
    """AWS's two traps together: the request queue's counts lag (the reaper reads "empty" while 30 requests wait)
    and a deleted queue still accepts sends for 60 s, then drops them. The web process dies, its reply queue is
    reaped, the workers answer into the deleted queue: every job must still be answered."""
    from infra.jobstore import JobStore
    from tests.helpers import strict_aws

    settings = web_settings(moto_server, tmp_path / "data", reply_heartbeat_s=0.5)
    clients = Clients(settings)
    provision(settings, clients)
    sqs, store = clients.sqs, JobStore(clients.dynamodb, settings.jobs_table)
    req_url = queue_url(sqs, settings.req_queue)
    with strict_aws(settings, sqs_count_lag_s=60, sqs_tombstone_s=60):
        assert queue_depth(sqs, req_url).backlog == 0  # the snapshot the reaper will read for the next 60 s
        web = start_module("web_tier", settings, log_path=tmp_path / "web.log", IMGREC_REPLY_QUEUE="own")
        worker = None
        try:
            wait_until(lambda: " made for web process" in log_text(web), 30, what="the web process's reply queue")
            files = [("files", (f"burst-{i:02d}.jpg", jpeg_bytes(i), "image/jpeg")) for i in range(30)]
            base = f"http://{settings.web_host}:{settings.web_port}"
            wait_until(lambda: requests.get(base + "/healthz", timeout=5).status_code == 200, 30, what="healthz")
            ids = [j["id"] for j in requests.post(base + "/api/jobs", files=files, timeout=60).json()["jobs"]]
            assert len(ids) == 30
            web.send_signal(signal.SIGKILL)
            web.wait(10)
            reaper = Reaper(settings, sqs, store, min_quiet_s=0)
            actions = wait_until(lambda: [a for a in reaper.run_once(time.time(), time.monotonic()).values()
                                          if a.value == "delete"], 20, what="the dead owner's reply queue reaped")
            assert actions and queue_depth(sqs, req_url).backlog == 0  # the reaper was fooled by the lagging count
            worker = start_module("app_tier", settings, log_path=tmp_path / "worker.log", IMGREC_INSTANCE_ID="w1",
                                  IMGREC_TORCH_THREADS="1")
            jobs = wait_until(lambda: (got := store.get_many(ids)) and all(j.finished for j in got.values()) and got,
                              120, what="every job answered")
        finally:
            stop_process(web)
            if worker is not None:
                stop_process(worker, timeout=30)
    assert sorted(j.status.value for j in jobs.values()) == ["done"] * 30
    assert all(j.result.label for j in jobs.values())
