"""The shared job store (DynamoDB on the moto server): one declaration of result fields, any order of writes,
batches, and the same answers from a second store object (another web process)."""

from __future__ import annotations

import dataclasses
import uuid

from infra.jobstore import Job, JobStatus, JobStore, from_item, to_item
from infra.messages import RESULT_FIELDS, ImageResult
from tests.helpers import wait_until


def _store(stack, clients) -> JobStore:
    return JobStore(clients.dynamodb, stack.jobs_table)


def test_result_fields_have_one_declaration():
    names = {f.name for f in dataclasses.fields(ImageResult)} - {"request_id", "batch_id"}
    assert set(RESULT_FIELDS) == names
    api = Job("j", "a.jpg", JobStatus.QUEUED).to_dict()
    assert set(RESULT_FIELDS) <= set(api)  # the API carries every result field, None while queued
    full = Job("j", "a.jpg", JobStatus.DONE, created_at=1.0, result_at=2.0,
               result=ImageResult("j", "a.jpg", label="cat", score=0.5, worker="i", sent_at=1.0, done_at=1.5,
                                  infer_ms=3.0))
    assert from_item(to_item(full)) == full  # the store's item round-trips every field
    assert {k: full.to_dict()[k] for k in RESULT_FIELDS} == {k: getattr(full.result, k) for k in RESULT_FIELDS}


def test_lifecycle_seen_from_another_process(stack, clients):
    web1, web2 = _store(stack, clients), _store(stack, clients)
    web1.add(Job("j1", "café.jpg", JobStatus.QUEUED, key="café.jpg", version="v1", batch_id="b0000001",
                 created_at=100.0, enqueued_at=100.01))
    assert web2.get("j1").status is JobStatus.QUEUED and web2.get("j1").answer is None
    web1.complete(ImageResult("j1", "café.jpg", label="tabby", score=0.9, worker="i-1", sent_at=100.01,
                              done_at=100.2, infer_ms=30.0), received_at=100.25)
    j1 = web2.get("j1")
    assert (j1.status, j1.result.label, j1.key, j1.version, j1.answer) == (JobStatus.DONE, "tabby", "café.jpg", "v1",
                                                                            "café:tabby")
    assert j1.total_ms == 250.0 and j1.to_dict()["status"] == "done" and j1.batch_id == "b0000001"
    web2.complete(ImageResult("orphan", "dog.png", error="cannot decode"), received_at=101.0)
    orphan = web1.get("orphan")
    assert orphan.status is JobStatus.FAILED and orphan.answer == "dog:error: cannot decode"
    assert web1.get("nope") is None and web1.get_many([]) == {}


def test_a_result_recorded_before_its_submit_record_is_kept(stack, clients):
    """Order does not matter: the result merges into the item, the submit record does not erase it."""
    store = _store(stack, clients)
    store.complete(ImageResult("j2", "x.jpg", label="cat"), received_at=5.0)
    store.add(Job("j2", "x.jpg", JobStatus.QUEUED, key="x.jpg", batch_id="b0000002", created_at=4.0))
    got = store.get("j2")
    assert got.status is JobStatus.DONE and got.result.label == "cat" and got.answer == "x:cat"
    assert got.batch_id == "b0000002" and got.total_ms == 1000.0
    # The batch index is eventually consistent (AWS; the strict local AWS lags it): wait for it.
    assert wait_until(lambda: store.batch("b0000002") == [got] and [got], 15) == [got]


def test_batches_and_many_ids(stack, clients):
    store = _store(stack, clients)
    for i in range(130):
        store.add(Job(f"k{i:03d}", f"{i}.jpg", JobStatus.QUEUED, batch_id="bbbbbbbb" if i < 120 else "cccccccc",
                      created_at=float(i)))
    store.complete(ImageResult("k005", "5.jpg", label="dog"))
    store.complete(ImageResult("k006", "6.jpg", error="cannot decode"))
    # The batch index is eventually consistent (AWS; the strict local AWS lags it): wait for it to catch up.
    batch = wait_until(lambda: (b := store.batch("bbbbbbbb")) and len(b) == 120 and b[5].finished and b[6].finished
                       and b, 15)
    assert [j.id for j in batch] == [f"k{i:03d}" for i in range(120)]  # oldest first
    assert [j.status for j in batch[4:7]] == [JobStatus.QUEUED, JobStatus.DONE, JobStatus.FAILED]
    assert store.batch("dddddddd") == []
    got = store.get_many([f"k{i:03d}" for i in range(130)] + ["missing"])
    assert len(got) == 130  # over BatchGetItem's 100 keys


def test_batch_counters_are_exact_whatever_the_order_and_repeats(stack, clients):
    """Submit records, results (some first, some twice, from several writers at once) and a failed job
    redriven to done: the counters end exactly right, and "finished" only once every job is."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    store = _store(stack, clients)
    batch = "cnt" + uuid.uuid4().hex[:10]
    ids = [f"c{i:03d}" for i in range(40)]
    ops = []
    for i, job_id in enumerate(ids):
        ops.append(("submit", job_id))
        outcome = ImageResult(job_id, f"{i}.jpg", label="cat", batch_id=batch) if i % 4 else \
            ImageResult(job_id, f"{i}.jpg", error="cannot decode", batch_id=batch)
        ops += [("result", outcome)] * (1 + i % 3)  # recorded once, twice or three times
    random.Random(5).shuffle(ops)

    def run(op):
        kind, arg = op
        if kind == "submit":
            store.add(Job(arg, "x.jpg", JobStatus.QUEUED, batch_id=batch, created_at=1.0, enqueued_at=1.0))
        else:
            store.complete(arg)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(run, ops))
    counts = store.batch_counts(batch)
    assert (counts.submitted, counts.done, counts.failed, counts.finished) == (40, 30, 10, True)
    # A failed job redriven after an upgrade and answered: one count moves from failed to done.
    assert store.complete(ImageResult("c000", "0.jpg", label="dog", batch_id=batch)) is True
    counts = store.batch_counts(batch)
    assert (counts.done, counts.failed) == (31, 9)
    # A dead-letter mark never overwrites a result; the same result again writes nothing.
    assert store.complete(ImageResult("c001", "1.jpg", error="dead-lettered", batch_id=batch),
                          only_if_queued=True) is False
    assert store.complete(ImageResult("c001", "1.jpg", label="cat", batch_id=batch)) is False
    assert store.get("c001").result.label == "cat"
    # The batch stays open: a file added later makes it unfinished until that one is answered too.
    store.add(Job("c999", "late.jpg", JobStatus.QUEUED, batch_id=batch, created_at=2.0))
    assert not store.batch_counts(batch).finished and store.batch_counts(batch).queued == 1
    store.complete(ImageResult("c999", "late.jpg", label="owl", batch_id=batch))
    counts = store.batch_counts(batch)
    assert (counts.submitted, counts.done, counts.failed, counts.finished) == (41, 32, 9, True)
    assert store.batch_counts("never" + uuid.uuid4().hex[:8]) is None


def test_a_refused_file_counts_as_submitted_and_failed(stack, clients):
    store = _store(stack, clients)
    batch = "ref" + uuid.uuid4().hex[:10]
    store.add(Job("r1", "bad.txt", JobStatus.FAILED, batch_id=batch, created_at=1.0, result_at=1.0,
                  result=ImageResult("r1", "bad.txt", error="not an image")))
    counts = store.batch_counts(batch)
    assert (counts.submitted, counts.failed, counts.finished) == (1, 1, True)
