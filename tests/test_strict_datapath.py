"""The strict local AWS's data-path behaviours (SQS tombstones, DynamoDB index lag and unprocessed keys): each holds
on our moto server and not on plain moto, and the system holds under them."""

from __future__ import annotations

import time

import pytest

from infra.local.strict import client
from infra.local.strict.ddb_unprocessed import held_back
from tests.helpers import assert_aws_only_where_emulated, aws_client, error_code, wait_until

aws = aws_client
code_of = error_code


def _table(db, name: str) -> None:
    db.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                    AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"},
                                          {"AttributeName": "g", "AttributeType": "S"}],
                    KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                    GlobalSecondaryIndexes=[{"IndexName": "by-g", "KeySchema": [{"AttributeName": "g",
                                                                                  "KeyType": "HASH"}],
                                             "Projection": {"ProjectionType": "ALL"}}])


# ------------------------------------------------------------ checks: True when the server behaved as AWS does
def sqs_deleted_queue_lingers(url: str, scope: str) -> bool:
    client.configure(url, scope, sqs_tombstone_s=3)
    sqs = aws(url, "sqs")
    name = f"{scope}-reply"
    q = sqs.create_queue(QueueName=name)["QueueUrl"]
    sqs.delete_queue(QueueUrl=q)
    deleted = time.monotonic()
    send = code_of(lambda: sqs.send_message(QueueUrl=q, MessageBody="lost"))
    batch = code_of(lambda: sqs.send_message_batch(QueueUrl=q, Entries=[{"Id": "1", "MessageBody": "lost too"}]))
    receive = code_of(lambda: sqs.receive_message(QueueUrl=q))
    again = code_of(lambda: sqs.create_queue(QueueName=name))
    new = wait_until(lambda: code_of(lambda: sqs.create_queue(QueueName=name)) is None
                     and sqs.get_queue_url(QueueName=name)["QueueUrl"], timeout=10)
    gone = sqs.receive_message(QueueUrl=new, WaitTimeSeconds=0).get("Messages", [])
    return (send is None and batch is None and receive == "AWS.SimpleQueueService.NonExistentQueue"
            and again == "AWS.SimpleQueueService.QueueDeletedRecently" and gone == []
            and time.monotonic() - deleted >= 2.5)  # the name came back only after the tombstone (mandated)


def ddb_index_lags_its_table(url: str, scope: str) -> bool:
    client.configure(url, scope, ddb_gsi_lag_s=2)
    db = aws(url, "dynamodb")
    table = f"{scope}-jobs"
    _table(db, table)

    def listed() -> list[str]:
        return [i["id"]["S"] for i in db.query(TableName=table, IndexName="by-g", KeyConditionExpression="g = :g",
                                                ExpressionAttributeValues={":g": {"S": "b1"}})["Items"]]

    db.put_item(TableName=table, Item={"id": {"S": "j1"}, "g": {"S": "b1"}, "st": {"S": "queued"}})
    written = time.monotonic()
    at_once = listed()
    table_read = db.get_item(TableName=table, Key={"id": {"S": "j1"}}, ConsistentRead=True).get("Item")
    wait_until(lambda: listed() == ["j1"], timeout=10)
    caught_up = time.monotonic() - written
    db.update_item(TableName=table, Key={"id": {"S": "j1"}}, UpdateExpression="SET st = :d",
                   ExpressionAttributeValues={":d": {"S": "done"}})
    status = db.query(TableName=table, IndexName="by-g", KeyConditionExpression="g = :g",
                      ExpressionAttributeValues={":g": {"S": "b1"}})["Items"][0]["st"]["S"]
    return at_once == [] and table_read is not None and caught_up >= 1.5 and status == "queued"


def ddb_batch_get_leaves_keys(url: str, scope: str) -> bool:
    client.configure(url, scope, ddb_unprocessed=0.5)
    db = aws(url, "dynamodb")
    table = f"{scope}-jobs"
    _table(db, table)
    for i in range(4):
        db.put_item(TableName=table, Item={"id": {"S": f"k{i}"}, "g": {"S": "x"}})
    keys = [{"id": {"S": f"k{i}"}} for i in range(4)]
    resp = db.batch_get_item(RequestItems={table: {"Keys": keys, "ConsistentRead": True}})
    got = {i["id"]["S"] for i in resp["Responses"][table]}
    left = resp.get("UnprocessedKeys", {}).get(table, {})
    return got == {"k0", "k1"} and left.get("Keys") == keys[2:] and left.get("ConsistentRead") is True


CHECKS = [sqs_deleted_queue_lingers, ddb_index_lags_its_table, ddb_batch_get_leaves_keys]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_behaves_as_aws_only_where_emulated(strict_or_plain, check):
    url, strict, scope = strict_or_plain
    assert_aws_only_where_emulated(check, strict, url, scope)


@pytest.mark.parametrize(("n", "fraction", "held"), [(10, 0, 0), (10, 0.01, 0), (10, 0.5, 5), (10, 1, 10),
                                                     (1, 0.5, 0), (1, 1, 1), (0, 1, 0)])
def test_unprocessed_share(n, fraction, held):
    assert held_back(list(range(n)), fraction) == held


# ------------------------------------------------------------ the system under them
def _submit(client_, names: list[str], batch: str | None = None) -> dict:
    from io import BytesIO

    from tests.images import jpeg_bytes

    files = [(BytesIO(jpeg_bytes(i)), n) for i, n in enumerate(names)]
    resp = client_.post("/api/jobs" + (f"?batch={batch}" if batch else ""), data={"files": files},
                        content_type="multipart/form-data")
    assert resp.status_code == 202, resp.get_data(as_text=True)
    return resp.get_json()


def test_a_lagging_batch_index_never_gives_404_or_a_premature_finished(stack):
    """AWS's batch index is eventually consistent: with a 5 s lag, a batch read right after submission is
    known and unfinished, a file added later (the batch is open) keeps it unfinished, and "finished" comes
    only once every job is done and listed."""
    from infra.jobstore import JobStore
    from infra.messages import ImageResult
    from tests.helpers import flask_app, strict_aws

    with strict_aws(stack, ddb_gsi_lag_s=5), flask_app(stack) as app:
        web = app.test_client()
        first = _submit(web, ["a.jpg", "b.jpg", "c.jpg"])
        batch = first["batch"]["id"]
        got = web.get(f"/api/batches/{batch}")
        assert got.status_code == 200, got.get_data(as_text=True)  # not 404, though the index lists nothing yet
        assert got.get_json()["finished"] is False and got.get_json()["total"] == 3
        later = _submit(web, ["d.jpg"], batch=batch)
        jobs = first["jobs"] + later["jobs"]
        store = JobStore(app.extensions["imgrec"].clients.dynamodb, stack.jobs_table)
        for job in jobs[:3]:  # the worker records three results; the fourth is still being worked on
            store.complete(ImageResult(job["id"], job["name"], label="tabby", batch_id=batch))
        body = web.get(f"/api/batches/{batch}").get_json()
        assert body["finished"] is False and body["counts"] == {"queued": 1, "done": 3, "failed": 0}
        store.complete(ImageResult(jobs[3]["id"], "d.jpg", label="goldfish", batch_id=batch))
        seen = []

        def finished_listing():
            resp = web.get(f"/api/batches/{batch}")
            assert resp.status_code == 200
            view = resp.get_json()
            seen.append((view["finished"], view["listed"]))
            if view["finished"]:  # never before every job is listed, done
                assert len(view["jobs"]) == 4 and all(j["status"] == "done" for j in view["jobs"]), view
            return view["finished"]

        wait_until(finished_listing, timeout=20, interval=0.5)
        assert any(not f for f, _ in seen) or len(seen) == 1
        csv = web.get(f"/api/batches/{batch}.csv")
        assert csv.status_code == 200 and csv.get_data(as_text=True).count("\r\n") == 5  # header + 4 rows


def test_unprocessed_keys_are_retried_then_503_never_404(stack):
    """BatchGetItem leftovers: half the keys left each time still read every job (retried after growing pauses);
    a table that processes none (AWS: ProvisionedThroughputExceededException) is 503 with Retry-After, never
    "unknown job" for jobs that exist."""
    from tests.helpers import flask_app, strict_aws

    with flask_app(stack) as app:
        web = app.test_client()
        ids = [j["id"] for j in _submit(web, ["x.jpg", "y.jpg", "z.jpg", "w.jpg"])["jobs"]]
        with strict_aws(stack, ddb_unprocessed=0.5):
            started = time.monotonic()
            both = web.get(f"/api/jobs?ids={','.join(ids)}")
            waited = time.monotonic() - started
            assert both.status_code == 200 and both.get_json()["unknown"] == [] and len(both.get_json()["jobs"]) == 4
            assert waited >= 0.15  # 4 keys: 2, then 1 left over: two pauses, 0.05 + 0.1 s (a mandated delay)
        with strict_aws(stack, ddb_unprocessed=1):
            one = web.get(f"/api/jobs/{ids[0]}")
            assert one.status_code == 503 and one.headers["Retry-After"] == "1", one.get_data(as_text=True)
            assert "busy" in one.get_json()["error"]
            batch = web.get(f"/api/jobs?ids={','.join(ids)}")
            assert batch.status_code == 503
        assert web.get(f"/api/jobs/{ids[0]}").status_code == 200
