"""The supervisor's pattern (load once, fork a worker per instance), the visibility heartbeat, and metrics."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from app_tier.visibility import HeldMessages
from infra.observe import queue_depth, queue_url
from tests.conftest import child_env
from tests.helpers import collect, enqueue, stays_true, upload
from tests.images import jpeg_bytes
from tests.procs import ROOT

FORK_SCRIPT = textwrap.dedent("""
    import os, sys
    from app_tier.models import load_classifier
    from app_tier.worker import run_worker
    from infra.config import Settings
    settings = Settings.from_env()
    clf = load_classifier(settings.model, threads=1)   # in the parent, before the fork
    clf.warm_up()
    children = []
    for n in range(2):
        pid = os.fork()
        if pid == 0:
            os._exit(run_worker(settings, clf, f"forked-{n}", until_empty=True))
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    print("child exit codes", codes)
    sys.exit(max(codes))
""")


def test_forked_workers_share_one_loaded_classifier(stack, clients):
    settings = stack
    requests = [upload(clients, settings, f"f{i:02d}.jpg", jpeg_bytes(200 + i)) for i in range(24)]
    enqueue(clients, settings, requests)
    proc = subprocess.run([sys.executable, "-c", FORK_SCRIPT], cwd=ROOT, env=child_env(settings),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = collect(clients, settings, {r.request_id for r in requests}, 10)
    assert all(res.ok for rs in results.values() for res in rs)
    assert {res.worker for rs in results.values() for res in rs} <= {"forked-0", "forked-1"}


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
    assert total("ImagesProcessed", both) == 3 and total("ImageErrors", both) == 1
    assert total("EndToEndMs", both) > 0 and total("InferenceMs", both) > 0
    listed = cw.list_metrics(Namespace=settings.metrics_namespace, MetricName="ImagesProcessed")["Metrics"]
    dim_sets = {tuple(sorted(d["Name"] for d in m["Dimensions"])) for m in listed}
    assert dim_sets == {("Stack",), ("InstanceId", "Stack")}
