"""Done-when test for the dashboard: headless Chromium watches a burst rise and fall.

Chromium is driven with selenium, as the other browser tests are (``tests.helpers.chrome``).
The burst is made directly with boto3 on the data sources the
page reads: messages on the request queue, moto EC2 instances tagged like app-tier
instances, and CloudWatch metrics published by the workers' own publisher.

Set IMGREC_DASHBOARD_SCREENSHOT=docs/dashboard.png to refresh the committed screenshot.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from app_tier.metrics import Metrics
from tests.dashboard_server import DashboardServer
from tests.helpers import chrome, chromium_paths, wait_listed
from tests.procs import ROOT, wait_for
from web_tier.metrics_source import DESIRED_INSTANCES, END_TO_END_MS, IMAGE_ERRORS, IMAGES_PROCESSED

BURST_MESSAGES = 80
PER_INSTANCE_PER_STEP = 2

pytestmark = pytest.mark.skipif(
    not all(chromium_paths()),
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
)


class Burst:
    """Plays the app tier for a burst: each instance takes a few messages per step and
    finishes them the step after (so they show in flight), answers on the response
    queue and publishes its counters with the workers' own CloudWatch publisher."""

    def __init__(self, settings, clients):
        self.s, self.c = settings, clients
        sqs = clients.sqs
        self.req = sqs.get_queue_url(QueueName=settings.req_queue)["QueueUrl"]
        self.resp = sqs.get_queue_url(QueueName=settings.resp_queue)["QueueUrl"]
        self.dlq = sqs.get_queue_url(QueueName=settings.dlq)["QueueUrl"]
        self.instances: list[str] = []
        self.metrics: dict[str, Metrics] = {}
        self.held: dict[str, list[dict]] = {}
        self.sent_at: dict[str, float] = {}
        self.steps = 0

    def launch(self, n: int) -> None:
        for _ in range(n):
            number = len(self.instances) + 1
            resp = self.c.ec2.run_instances(ImageId=self.s.ami_id, MinCount=1, MaxCount=1, TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": self.s.app_instance_name(number)}]}])
            iid = resp["Instances"][0]["InstanceId"]
            self.instances.append(iid)
            self.metrics[iid] = Metrics(self.c.cloudwatch, self.s.metrics_namespace, self.s.prefix, iid)
            self.held[iid] = []

    def terminate(self, keep: int) -> None:
        gone, self.instances = self.instances[keep:], self.instances[:keep]
        if gone:
            self.c.ec2.terminate_instances(InstanceIds=gone)

    def send(self, n: int) -> None:
        for first in range(0, n, 10):
            entries = [{"Id": str(i), "MessageBody": f'{{"request_id": "burst-{first + i}"}}'}
                       for i in range(min(10, n - first))]
            self.c.sqs.send_message_batch(QueueUrl=self.req, Entries=entries)
        self.sent_at["batch"] = time.time()

    def desire(self, n: int) -> None:
        """What the controller publishes each tick (same metric, same dimension)."""
        self.c.cloudwatch.put_metric_data(Namespace=self.s.metrics_namespace, MetricData=[
            {"MetricName": DESIRED_INSTANCES, "Dimensions": [{"Name": "Stack", "Value": self.s.prefix}],
             "Value": float(n), "Unit": "Count"}])

    def poison(self, n: int) -> None:
        for i in range(n):
            self.c.sqs.send_message(QueueUrl=self.dlq, MessageBody=f'{{"request_id": "poison-{i}"}}')

    def step(self) -> None:
        self.steps += 1
        sqs = self.c.sqs
        for iid in self.instances:
            done = self.held[iid]
            if done:
                sqs.delete_message_batch(QueueUrl=self.req, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)])
                sqs.send_message_batch(QueueUrl=self.resp, Entries=[
                    {"Id": str(i), "MessageBody": m["Body"]} for i, m in enumerate(done)])
                self.metrics[iid].count(IMAGES_PROCESSED, len(done))
                for _ in done:
                    self.metrics[iid].timing(END_TO_END_MS, (time.time() - self.sent_at["batch"]) * 1000)
                if self.steps % 3 == 0 and iid == self.instances[0]:
                    self.metrics[iid].count(IMAGE_ERRORS, 1)
            got = sqs.receive_message(QueueUrl=self.req, MaxNumberOfMessages=PER_INSTANCE_PER_STEP,
                                      VisibilityTimeout=60, WaitTimeSeconds=0)
            self.held[iid] = got.get("Messages", [])
            if self.steps % 2 == 0:
                self.metrics[iid].flush()
        if self.steps % 2 == 0:  # the web tier collects answers a little behind
            got = sqs.receive_message(QueueUrl=self.resp, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            msgs = got.get("Messages", [])
            if msgs:
                sqs.delete_message_batch(QueueUrl=self.resp, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)])

    def flush(self) -> None:
        for m in self.metrics.values():
            m.flush()

    def drained(self) -> bool:
        return not any(self.held.values()) and self._backlog() == 0

    def _backlog(self) -> int:
        a = self.c.sqs.get_queue_attributes(QueueUrl=self.req, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])


PAGE_STATE = """
const d = window.imgrecDashboard, c = d && d.cols;
if (!c) return null;
return {t: c.t, visible: c.req_visible, inflight: c.req_in_flight, running: c.inst_running,
        rate: c.images_per_s, dlq: c.dlq_visible, rows: document.querySelectorAll('#instances tbody tr[data-instance-id]').length,
        backlogText: document.getElementById('cur-backlog').textContent,
        errors: document.querySelectorAll('#source-errors .badge-error').length,
        conn: document.getElementById('conn').textContent};
"""


def backlog_series(state: dict) -> list[int]:
    return [v + f for v, f in zip(state["visible"], state["inflight"], strict=True) if v is not None and f is not None]


def test_dashboard_shows_a_burst_rise_and_fall(stack, clients, tmp_path):
    burst = Burst(stack, clients)
    burst.launch(1)  # the minimum fleet, before the burst
    wait_listed(clients.ec2, burst.instances)  # listed by EC2 (eventually consistent) before the page's first sample
    with DashboardServer(stack, clients) as dash, chrome(tmp_path, width=1440, height=1400) as browser:
        browser.get(f"{dash.url}/dashboard")
        wait_for(lambda: (browser.execute_script(PAGE_STATE) or {}).get("rows") == 1, 20, interval=0.5,
                 what="the page to show the idle fleet")
        for _ in range(4):  # a flat baseline before the burst
            burst.desire(1)
            time.sleep(1)
        burst.send(BURST_MESSAGES)
        screenshot = tmp_path / "dashboard.png"
        peak_rows = 0
        for step in range(60):
            if step in (1, 3):
                burst.launch(2 if step == 1 else 3)  # what the controller would do: 1 -> 3 -> 6
            if step == 4:
                burst.poison(3)
            burst.desire(1 if step > 8 and burst.drained() else 6)
            burst.step()
            time.sleep(1.0)
            if step == 7:
                state = browser.execute_script(PAGE_STATE)
                peak_rows = state["rows"]
                browser.save_screenshot(str(screenshot))
            if step > 8 and burst.drained():
                break
        burst.flush()
        for _ in range(3):
            burst.desire(1)
            time.sleep(1)
        burst.terminate(keep=1)  # scale back in to the minimum
        final = wait_for(lambda: _settled(browser), 30, interval=1.0, what="the page to show the fleet back at 1")

    backlog = backlog_series(final)
    running = [r for r in final["running"] if r is not None]
    assert backlog[0] == 0 and max(backlog) >= 40 and backlog[-1] == 0, backlog
    assert running[0] == 1 and max(running) == 6 and running[-1] == 1, running
    assert max(r for r in final["rate"] if r is not None) > 0  # images/s from the CloudWatch metrics
    assert peak_rows == 6 and final["rows"] == 1
    assert final["backlogText"] == "0" and final["errors"] == 0 and final["conn"] == "live"
    target = os.environ.get("IMGREC_DASHBOARD_SCREENSHOT")
    if target:
        shutil.copyfile(screenshot, ROOT / target)


def _settled(browser) -> dict | None:
    state = browser.execute_script(PAGE_STATE)
    if state and state["rows"] == 1 and state["backlogText"] == "0" and state["running"][-1] == 1:
        return state
    return None
