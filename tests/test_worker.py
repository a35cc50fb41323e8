"""Real `python -m app_tier` processes against the moto server: images in, labels and results out."""

from __future__ import annotations

import signal

import pytest

from app_tier.models import load_classifier
from app_tier.preprocess import decode_image
from infra.cfn.stack import provision
from infra.clients import Clients
from infra.jobstore import JobStore
from infra.messages import ImageRequest, ImageResult, output_key
from infra.observe import queue_depth, queue_url
from tests.helpers import collect, enqueue, upload
from tests.images import jpeg_bytes, truncated_jpeg
from tests.procs import log_text, start_module, stop_process, wait_for

WORKER_START_S = 90  # model load on a busy 2-core box


@pytest.fixture(scope="module")
def clf():
    return load_classifier("efficientnet_lite0", device="cpu", threads=1)


@pytest.fixture
def workers(tmp_path):
    """Start worker processes; every one is killed at the end, pass or fail."""
    started = []

    def start(settings, name="w1", *args):
        proc = start_module("app_tier", settings, *args, log_path=tmp_path / f"{name}.log",
                            IMGREC_INSTANCE_ID=name, IMGREC_TORCH_THREADS="1")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop_process(proc, timeout=5, sig=signal.SIGKILL)


def assert_queues_settled(clients, settings, dead_lettered: int = 0):
    sqs = clients.sqs
    req = queue_depth(sqs, queue_url(sqs, settings.req_queue))
    dlq = queue_depth(sqs, queue_url(sqs, settings.dlq))
    assert (req.visible, req.in_flight) == (0, 0), req
    assert (dlq.visible, dlq.in_flight) == (dead_lettered, 0), dlq


def test_images_and_bad_input_are_answered_and_nothing_loops(stack, clients, clf, workers):
    settings = stack
    good = {f"test_{i:02d}.jpg": jpeg_bytes(i) for i in range(5)}
    requests = [upload(clients, settings, name, data) for name, data in good.items()]
    twice = upload(clients, settings, "again.jpg", jpeg_bytes(9))
    requests += [twice, twice]  # the same request twice: answered twice, same output
    bad = {
        "corrupt.jpg": upload(clients, settings, "corrupt.jpg", truncated_jpeg(2)),
        "notes.jpg": upload(clients, settings, "notes.jpg", b"just some text, not a picture\n"),
        "empty.jpg": upload(clients, settings, "empty.jpg", b""),
        "gone.jpg": ImageRequest.new("uploads/never-uploaded.jpg", None, "gone.jpg"),
    }
    real = upload(clients, settings, "versioned.jpg", jpeg_bytes(1))
    bad["badversion.jpg"] = ImageRequest.new(real.key, "nosuchversion0000000000000000000", "badversion.jpg")
    # Garbage is dropped; a message of a newer schema version is left for an upgraded worker, then the DLQ.
    enqueue(clients, settings, [*requests, *bad.values(), "not json at all", '{"v": 99}'])

    proc = workers(settings)
    results = collect(clients, settings, {r.request_id for r in requests + list(bad.values())}, WORKER_START_S)

    expected = {name: pred.label for name, pred in
                zip([*good, "again.jpg"], clf.classify([decode_image(d) for d in [*good.values(), jpeg_bytes(9)]]),
                    strict=True)}
    for r in requests:
        for res in results[r.request_id]:
            assert res.ok and res.label == expected[r.name], res
            assert res.worker == "w1" and res.sent_at == r.sent_at and res.done_at >= r.sent_at
        body = clients.s3.get_object(Bucket=settings.out_bucket, Key=output_key(r.name))["Body"].read().decode()
        assert body == expected[r.name]
    assert len(results[twice.request_id]) == 2
    for name, r in bad.items():
        [res] = results[r.request_id]
        assert not res.ok and res.error and res.label is None, (name, res)
    gone_error = results[bad["gone.jpg"].request_id][0].error
    assert "not found" in gone_error and f"s3://{settings.in_bucket}/uploads/never-uploaded.jpg" in gone_error
    assert "empty" in results[bad["empty.jpg"].request_id][0].error
    out_keys = {o["Key"] for o in clients.s3.list_objects_v2(Bucket=settings.out_bucket).get("Contents", [])}
    assert out_keys == {output_key(n) for n in [*good, "again.jpg"]}  # no output for failures

    wait_for(lambda: proc.poll() is None and _settled(clients, settings), 60, what="request queue to settle")
    assert_queues_settled(clients, settings, dead_lettered=1)
    assert proc.poll() is None, "worker died on bad input"
    assert stop_process(proc, timeout=30) == 0
    text = log_text(proc)
    assert " size=" in text and "instance=w1" in text and "Traceback" not in text
    assert text.count("unknown message schema version 99") == 1  # logged once, when it goes to the DLQ


def _settled(clients, settings) -> bool:
    d = queue_depth(clients.sqs, queue_url(clients.sqs, settings.req_queue))
    return d.visible == 0 and d.in_flight == 0


def test_sigterm_drains_and_exits_zero(stack, clients, workers):
    settings = stack
    requests = [upload(clients, settings, f"t{i:02d}.jpg", jpeg_bytes(i)) for i in range(70)]
    enqueue(clients, settings, requests)
    proc = workers(settings)
    url = queue_url(clients.sqs, settings.resp_queue)
    # The first result, as the worker records it in the job store (read consistently: the queue's approximate
    # counts lag, and by the time they showed it the worker could have finished all 70).
    store = JobStore(clients.dynamodb, settings.jobs_table)
    ids = [r.request_id for r in requests]
    wait_for(lambda: any(j.finished for j in store.get_many(ids).values()), WORKER_START_S, interval=0.05,
             what="first result")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=settings.visibility_timeout_s) == 0
    # Whatever the worker held was finished; nothing is left in flight.
    req = queue_depth(clients.sqs, queue_url(clients.sqs, settings.req_queue))
    assert req.in_flight == 0
    answered = _drain(clients, url)
    assert len(answered) + req.visible == len(requests)
    assert 0 < len(answered) < len(requests)
    assert "draining" in log_text(proc)


def _drain(clients, url) -> dict[str, list[ImageResult]]:
    got: dict[str, list[ImageResult]] = {}
    while True:
        msgs = clients.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        if not msgs:
            return got
        for m in msgs:
            r = ImageResult.from_json(m["Body"])
            got.setdefault(r.request_id, []).append(r)
            clients.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def test_sigkill_mid_batch_then_another_worker_answers_everything(settings, workers):
    settings = settings.replace(visibility_timeout_s=4)
    clients = Clients(settings)
    provision(settings, clients)
    # enough work that the first worker is still busy when it is killed after its first batch
    requests = [upload(clients, settings, f"k{i:02d}.jpg", jpeg_bytes(100 + i)) for i in range(60)]
    enqueue(clients, settings, requests)
    first = workers(settings, "w1")
    wait_for(lambda: " size=" in log_text(first), WORKER_START_S, what="first batch of w1")
    stop_process(first, sig=signal.SIGKILL)
    # The killed worker held messages it never finished: in flight until their 4 s visibility timeout ends.
    # SQS's counts are approximate (a snapshot up to a second old, as the strict local AWS serves them): poll.
    url = queue_url(clients.sqs, settings.req_queue)
    wait_for(lambda: queue_depth(clients.sqs, url).in_flight > 0, 3, what="the killed worker's messages in flight")
    second = workers(settings, "w2")
    results = collect(clients, settings, {r.request_id for r in requests}, WORKER_START_S)
    assert all(res.ok for rs in results.values() for res in rs)
    assert any(res.worker == "w2" for rs in results.values() for res in rs)
    wait_for(lambda: _settled(clients, settings), 20, what="request queue to settle")
    assert_queues_settled(clients, settings)
    assert stop_process(second, timeout=30) == 0


def test_second_signal_releases_and_exits_at_once(settings, workers):
    settings = settings.replace(visibility_timeout_s=120)
    clients = Clients(settings)
    provision(settings, clients)
    enqueue(clients, settings, [upload(clients, settings, f"s{i:02d}.jpg", jpeg_bytes(i)) for i in range(60)])
    proc = workers(settings, "w1")
    wait_for(lambda: " size=" in log_text(proc), WORKER_START_S, what="first batch")
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "draining" in log_text(proc), 5, interval=0.05, what="first stage")  # signals coalesce
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 128 + signal.SIGTERM
    # Released messages are visible again at once, not after the 120 s timeout.
    req = queue_depth(clients.sqs, queue_url(clients.sqs, settings.req_queue))
    assert req.in_flight == 0 and req.visible > 0
    assert "released" in log_text(proc)
