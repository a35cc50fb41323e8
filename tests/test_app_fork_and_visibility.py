"""The visibility heartbeat and the worker's metrics (the forked-worker case is gone:
local instances now run the worker as its own process, tests/test_runner.py)."""

from __future__ import annotations

import subprocess
import sys
import time

from app_tier.visibility import HeldMessages
from infra.observe import queue_depth, queue_url
from tests.helpers import child_env, enqueue, stays_true, upload, wait_until
from tests.images import jpeg_bytes
from tests.procs import ROOT


def test_heartbeat_keeps_a_slow_batch_invisible_and_release_hands_it_back(stack, clients):
    sqs = clients.sqs
    url = queue_url(sqs, stack.req_queue)
    sqs.send_message(QueueUrl=url, MessageBody="x")
    [msg] = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=2)["Messages"]
    held = HeldMessages(sqs, url, 2, instance_id="t").start()
    try:
        held.add(msg["ReceiptHandle"], msg["MessageId"])
        # Watched until well past the 2 s timeout: only the heartbeat keeps it hidden.
        stays_true(lambda: queue_depth(sqs, url).visible == 0, 3.5, interval=0.1, what="the held message hidden")
        assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
        assert held.release_all() == 1
        again = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", [])
        assert [m["MessageId"] for m in again] == [msg["MessageId"]]
    finally:
        held.stop()


def test_worker_publishes_metrics(stack, clients):
    settings = stack
    requests = [upload(clients, settings, f"m{i}.jpg", jpeg_bytes(i)) for i in range(3)]
    enqueue(clients, settings, [*requests, upload(clients, settings, "bad.jpg", b"not an image")])
    proc = subprocess.run([sys.executable, "-m", "app_tier", "--until-empty"], cwd=ROOT,
                          env=child_env(settings, IMGREC_INSTANCE_ID="i-metrics"), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cw = clients.cloudwatch

    def total(name, dims):
        stats = cw.get_metric_statistics(Namespace=settings.metrics_namespace, MetricName=name, Dimensions=dims,
                                         StartTime=time.time() - 600, EndTime=time.time() + 60, Period=60,
                                         Statistics=["Sum", "SampleCount"])["Datapoints"]
        return sum(d["Sum"] for d in stats)

    stack_dim = [{"Name": "Stack", "Value": settings.prefix}]
    both = [*stack_dim, {"Name": "InstanceId", "Value": "i-metrics"}]
    # moto matches dimensions as a subset (CloudWatch matches exactly), so read the per-instance series.
    # CloudWatch serves a datum a moment after its put (the strict local AWS's ingest delay): wait for it.
    wait_until(lambda: total("ImagesProcessed", both) == 3 and total("ImageErrors", both) == 1, timeout=15,
               what="the worker's counts readable in CloudWatch")
    assert total("EndToEndMs", both) > 0 and total("InferenceMs", both) > 0
    listed = cw.list_metrics(Namespace=settings.metrics_namespace, MetricName="ImagesProcessed")["Metrics"]
    dim_sets = {tuple(sorted(d["Name"] for d in m["Dimensions"])) for m in listed}
    assert dim_sets == {("Stack",), ("InstanceId", "Stack")}
