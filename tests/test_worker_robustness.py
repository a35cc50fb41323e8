"""The worker under faults: retry backoff, maximum hold time, a dying stage (real processes, real moto).

Faults come from ``tests.fault_worker``: the real worker with one AWS SDK call made to
fail or hang; nothing of ours is replaced.
"""

from __future__ import annotations

import math
import signal
import time

import pytest

from app_tier.visibility import _Entry, due_for_extension
from app_tier.worker import RETRY_MAX_S, retry_visibility_s
from infra.cfn.stack import provision
from infra.clients import Clients
from infra.messages import ImageResult
from infra.observe import queue_depth, queue_url
from tests.helpers import enqueue, upload
from tests.images import jpeg_bytes
from tests.procs import log_text, start_module, stop_process, wait_for

START_S = 60  # process start + model verification on a busy 2-core box


@pytest.mark.parametrize(("count", "visibility", "want"), [
    (0, 60, 2), (1, 60, 2), (2, 60, 4), (3, 60, 8), (5, 60, 32), (6, 60, 60), (7, 60, 60),
    (7, 300, RETRY_MAX_S), (1000, 43200, RETRY_MAX_S), (3, 5, 5), (1, 1, 1),
])
def test_retry_backoff_is_a_function_of_the_receive_count(count, visibility, want):
    assert retry_visibility_s(count, visibility) == want


@pytest.mark.parametrize(("received_ago", "extended_ago", "max_hold", "want"), [
    (30, 30, math.inf, [("r", 60)]),  # no limit: the whole timeout
    (10, 10, math.inf, []),  # extended a third of the timeout ago or less: not due
    (30, 30, 100, [("r", 60)]),  # plenty of hold left
    (80, 30, 100, [("r", 20)]),  # cut so the hold ends at max_hold
    (99.5, 30, 100, []),  # under a second left: no more extensions
    (300, 30, 100, []),  # long past the limit (a wedged worker): it becomes visible again
])
def test_extensions_stop_at_the_maximum_hold_time(received_ago, extended_ago, max_hold, want):
    now = 1000.0
    entries = {"r": _Entry("m", extended_at=now - extended_ago, received_at=now - received_ago)}
    assert due_for_extension(entries, now, 20, 60, max_hold) == want


@pytest.fixture
def faulty(tmp_path):
    started = []

    def start(settings, fault: str, name: str = "w1", *args: str):
        proc = start_module("tests.fault_worker", settings, fault, *args, log_path=tmp_path / f"{name}.log",
                            IMGREC_INSTANCE_ID=name)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop_process(proc, timeout=5, sig=signal.SIGKILL)


def fresh_stack(settings, **changes):
    settings = settings.replace(**changes)
    clients = Clients(settings)
    provision(settings, clients)
    return settings, clients


def depth(clients, name):
    return queue_depth(clients.sqs, queue_url(clients.sqs, name))


def test_retryable_failure_comes_back_after_a_growing_backoff_then_goes_to_the_dlq(settings, faulty):
    settings, clients = fresh_stack(settings, visibility_timeout_s=60, max_receive_count=3)
    request = upload(clients, settings, "r.jpg", jpeg_bytes(1))
    enqueue(clients, settings, [request])
    started = time.monotonic()
    proc = faulty(settings, "s3-error")
    # Receives 1 and 2 retry after 2 s and 4 s; the third gives up (error result) and the next receive
    # finds it over maxReceiveCount: DLQ. Waiting out the 60 s timeout each time would take 3 minutes.
    wait_for(lambda: depth(clients, settings.dlq).visible == 1, START_S + 40, what="message in the DLQ")
    elapsed = time.monotonic() - started
    text = log_text(proc)
    for seconds in (2, 4, 8):
        assert f"1 messages retry later ({seconds} s;" in text, text
    # The bounded wait above (well under the 60 s visibility timeout per receive) is the "no waiting out the
    # timeout" check; the backoffs themselves are mandated delays: 2 + 4 s at least.
    assert elapsed >= 6
    resp = clients.sqs.receive_message(QueueUrl=queue_url(clients.sqs, settings.resp_queue), WaitTimeSeconds=1)
    [result] = [ImageResult.from_json(m["Body"]) for m in resp["Messages"]]
    assert result.request_id == request.request_id and not result.ok and "InternalError" in result.error
    assert stop_process(proc, timeout=30) == 0


def test_wedged_worker_lets_go_after_max_hold_and_the_message_reaches_the_dlq(settings, faulty):
    settings, clients = fresh_stack(settings, visibility_timeout_s=2, max_hold_s=6, max_receive_count=2)
    enqueue(clients, settings, [upload(clients, settings, "h.jpg", jpeg_bytes(2))])
    proc = faulty(settings, "s3-hang")
    wait_for(lambda: depth(clients, settings.req_queue).in_flight == 1, START_S, interval=0.1, what="receive")
    held_from = time.monotonic()
    time.sleep(3 * settings.visibility_timeout_s / 2)  # past its 2 s timeout: only the heartbeat hides it
    assert depth(clients, settings.req_queue).in_flight == 1
    assert "extended visibility" in log_text(proc)
    wait_for(lambda: depth(clients, settings.req_queue).visible == 1, 30, interval=0.1, what="visible again")
    assert time.monotonic() - held_from >= settings.max_hold_s - 2
    assert "over IMGREC_MAX_HOLD_S=6: no longer extended" in log_text(proc)
    url = queue_url(clients.sqs, settings.req_queue)
    [again] = clients.sqs.receive_message(QueueUrl=url, VisibilityTimeout=1, WaitTimeSeconds=1)["Messages"]
    wait_for(lambda: not clients.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages")
             and depth(clients, settings.dlq).visible == 1, 20, what="redrive to the DLQ")
    dlq = clients.sqs.receive_message(QueueUrl=queue_url(clients.sqs, settings.dlq), WaitTimeSeconds=1)["Messages"]
    assert [m["MessageId"] for m in dlq] == [again["MessageId"]]
    assert proc.poll() is None  # wedged, not dead: the point is that its message escaped anyway


def test_a_dead_stage_makes_the_worker_exit_non_zero_and_release_what_it_held(settings, faulty):
    settings, clients = fresh_stack(settings, visibility_timeout_s=120)
    enqueue(clients, settings, [upload(clients, settings, f"d{i}.jpg", jpeg_bytes(i)) for i in range(25)])
    proc = faulty(settings, "receive-crash")
    code = proc.wait(START_S)
    text = log_text(proc)
    assert code == 1, text
    assert "prefetch stage died" in text and "RuntimeError: injected" in text
    req = depth(clients, settings.req_queue)
    assert req.in_flight == 0 and req.visible == 25 - _answered(text)  # answered, or handed back at once


def _answered(text: str) -> int:
    return sum(int(part.split("=")[1]) for line in text.splitlines() if " size=" in line
               for part in line.split() if part.startswith(("ok=", "errors=")))


def test_a_message_arriving_during_a_drain_is_finished_not_passed_round(settings, tmp_path):
    # Each hand-back costs a receive: in a scale-in, draining workers in long polls passed a new message
    # between them until the redrive policy sent it to the DLQ untried.
    settings, clients = fresh_stack(settings, receive_wait_s=20, max_receive_count=1)
    proc = start_module("app_tier", settings, log_path=tmp_path / "w.log", IMGREC_INSTANCE_ID="drainer")
    try:
        wait_for(lambda: " ready: model" in log_text(proc), START_S, interval=0.1, what="worker ready")
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "draining" in log_text(proc), 10, interval=0.05, what="drain")
        request = upload(clients, settings, "late.jpg", jpeg_bytes(3))
        enqueue(clients, settings, [request])
        assert proc.wait(30) == 0
        resp = clients.sqs.receive_message(QueueUrl=queue_url(clients.sqs, settings.resp_queue), WaitTimeSeconds=2)
        [result] = [ImageResult.from_json(m["Body"]) for m in resp["Messages"]]
        assert result.request_id == request.request_id and result.ok
        assert "arrived while stopping" in log_text(proc)
        assert depth(clients, settings.dlq).visible == 0 and depth(clients, settings.req_queue).visible == 0
    finally:
        stop_process(proc, timeout=5, sig=signal.SIGKILL)
