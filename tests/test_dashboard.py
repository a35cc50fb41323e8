"""Dashboard API against a real moto server: values come from SQS, EC2 and CloudWatch."""

from __future__ import annotations

import logging
import time

import pytest
import requests

from app_tier.metrics import Metrics
from infra.clients import Clients
from infra.local.moto_server import free_port
from tests.dashboard_server import DashboardServer
from tests.helpers import stays_true, wait_until
from tests.procs import wait_for
from web_tier.dashboard import BadSince, parse_since
from web_tier.metrics_source import (
    END_TO_END_MS,
    IMAGE_ERRORS,
    IMAGES_PROCESSED,
    approx_percentiles,
    history_period,
    summarize_live,
    weighted_percentile,
)


@pytest.fixture
def dash(stack, clients):
    with DashboardServer(stack, clients) as server:
        yield server


def put_images(clients, settings, instance_id: str, latencies_ms: list[float], errors: int = 0) -> None:
    """Publish as a worker does: its own metrics publisher, one flush (statistic sets, both dimension sets)."""
    metrics = Metrics(clients.cloudwatch, settings.metrics_namespace, settings.prefix, instance_id)
    metrics.count(IMAGES_PROCESSED, len(latencies_ms))
    metrics.count(IMAGE_ERRORS, errors)
    for ms in latencies_ms:
        metrics.timing(END_TO_END_MS, ms)
    metrics.flush()


# ---------------------------------------------------------------- pure parts

def test_weighted_percentile():
    assert weighted_percentile([], 0.5) is None
    assert weighted_percentile([(10, 1), (20, 1), (30, 1)], 0.5) == 20
    assert weighted_percentile([(10, 9), (500, 1)], 0.5) == 10
    assert weighted_percentile([(10, 9), (500, 1)], 0.95) == 500
    assert weighted_percentile([(10, 0)], 0.5) is None


def test_approx_percentiles_exact_with_one_sample_per_second():
    buckets = [(float(v), float(v), 1.0) for v in range(1, 101)]
    assert approx_percentiles(buckets) == (50.0, 95.0)


def test_summarize_live_rates_and_latest_desired():
    end = 1000.0
    results = {"ip": [(985.0, 100.0), (991.0, 20.0), (999.0, 30.0)], "ie": [(995.0, 5.0)],
               "de": [(990.0, 7.0), (998.0, 3.0)], "la": [(999.0, 120.0)], "lx": [(999.0, 200.0)],
               "ln": [(999.0, 4.0)]}
    out, mode = summarize_live(results, end)
    assert mode == "approx"
    assert out["images_per_s"] == 5.0  # only the last 10 s: (20 + 30) / 10
    assert out["errors_per_s"] == 0.5
    assert out["desired"] == 3.0
    assert (out["latency_p50_ms"], out["latency_p95_ms"]) == (120.0, 200.0)
    native, mode = summarize_live(dict(results, p50=[(990.0, 80.0)], p95=[(990.0, 300.0)]), end)
    assert mode == "native" and (native["latency_p50_ms"], native["latency_p95_ms"]) == (80.0, 300.0)
    assert summarize_live({}, end)[0]["latency_p50_ms"] is None


def test_history_period_is_a_valid_cloudwatch_period():
    assert history_period(5) == 60
    assert history_period(61) == 120
    assert history_period(20 * 86400) % 3600 == 0


@pytest.mark.parametrize("raw", ["abc", "nan", "-1", "inf"])
def test_bad_since_is_refused(raw):
    with pytest.raises(BadSince):
        parse_since(raw)


# ---------------------------------------------------------------- against moto

def test_page_and_vendored_chart_library_are_served(dash):
    page = requests.get(f"{dash.url}/dashboard", timeout=10)
    assert page.status_code == 200
    for asset in ("/dashboard/static/vendor/uplot-1.6.32/uPlot.iife.min.js", "/dashboard/static/dashboard.js",
                  "/dashboard/static/dashboard.css", "/dashboard/static/vendor/uplot-1.6.32/uPlot.min.css"):
        assert asset in page.text
        assert requests.get(dash.url + asset, timeout=10).status_code == 200
    assert dash.bp.sampler.running  # the page started the sampler


def test_metrics_reflect_queues_instances_and_cloudwatch(dash, stack, clients):
    sqs = clients.sqs
    req_url = sqs.get_queue_url(QueueName=stack.req_queue)["QueueUrl"]
    for i in range(7):
        sqs.send_message(QueueUrl=req_url, MessageBody=f'{{"n": {i}}}')
    sqs.receive_message(QueueUrl=req_url, MaxNumberOfMessages=2, VisibilityTimeout=60)
    resp_url = sqs.get_queue_url(QueueName=stack.resp_queue)["QueueUrl"]
    sqs.send_message(QueueUrl=resp_url, MessageBody="{}")
    inst = clients.ec2.run_instances(ImageId=stack.ami_id, MinCount=1, MaxCount=1, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": stack.app_instance_name(1)}]}])
    iid = inst["Instances"][0]["InstanceId"]
    # Someone else's instance must not be counted.
    clients.ec2.run_instances(ImageId=stack.ami_id, MinCount=1, MaxCount=1, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "unrelated-1"}]}])
    put_images(clients, stack, iid, [200.0, 250.0, 250.0, 260.0, 300.0, 900.0], errors=1)

    def settled():
        v = dash.latest().get("values", {})
        return (v.get("req_visible") == 5 and v.get("req_in_flight") == 2 and v.get("resp_visible") == 1
                and v.get("inst_running") == 1 and (v.get("images_per_s") or 0) > 0)

    wait_for(settled, 15, interval=0.5, what="dashboard to show the queued messages and the instance")
    latest = dash.latest()
    assert latest["errors"] == {}
    assert latest["values"]["images_per_s"] == pytest.approx(0.6)
    assert latest["values"]["errors_per_s"] == pytest.approx(0.1)
    # One flush = one statistic set: p50 is its mean, p95 its maximum (approximation on moto).
    assert latest["values"]["latency_p50_ms"] == pytest.approx(360.0)
    assert latest["values"]["latency_p95_ms"] == 900.0
    assert latest["latency_mode"] == "approx"  # moto answers percentile statistics with HTTP 500
    wait_for(lambda: [r.get("images_done") for r in dash.latest()["instances"]] == [6], 15, interval=0.5,
             what="per-instance images done")
    row = dash.latest()["instances"][0]
    assert (row["id"], row["name"], row["state"]) == (iid, stack.app_instance_name(1), "running")


def test_since_returns_only_newer_points(dash):
    wait_for(lambda: len(dash.metrics()["series"]["t"]) >= 3, 15, what="three samples")
    full = dash.metrics()["series"]
    assert full["t"] == sorted(full["t"])
    assert set(full) >= {"t", "req_visible", "inst_running", "images_per_s", "latency_p95_ms"}
    assert all(len(col) == len(full["t"]) for col in full.values())
    cut = full["t"][-2]
    newer = dash.metrics(since=cut)["series"]["t"]
    assert newer and all(t > cut for t in newer)
    assert dash.metrics(since=time.time() + 3600)["series"]["t"] == []
    bad = requests.get(f"{dash.url}/api/metrics", params={"since": "yesterday"}, timeout=10)
    assert bad.status_code == 400 and "epoch seconds" in bad.json()["error"]


def test_missing_queues_show_as_errors_not_500(settings, clients):
    """Not provisioned: SQS fails, EC2 and CloudWatch still answer; the API stays 200."""
    with DashboardServer(settings, clients) as server:
        wait_for(lambda: server.latest().get("errors"), 15, what="a reading")
        latest = server.latest()
        assert "sqs" in latest["errors"] and "ec2" not in latest["errors"]
        assert latest["values"]["req_visible"] is None
        assert latest["values"]["inst_running"] == 0


def test_dead_endpoint_keeps_the_sampler_alive_and_stops_cleanly(settings):
    dead = settings.replace(endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=1)
    with DashboardServer(dead, Clients(dead), interval_s=0.2) as server:
        wait_for(lambda: len(server.metrics()["series"]["t"]) >= 3, 20, what="samples despite failures")
        latest = server.latest()
        assert set(latest["errors"]) == {"sqs", "ec2", "cloudwatch"}
        assert all(v is None for v in latest["values"].values())
        assert server.bp.sampler.running
        server.bp.sampler.stop()
        assert not server.bp.sampler.running


def test_sampler_pauses_without_browsers_and_resumes_on_request(stack, clients, caplog):
    caplog.set_level(logging.INFO, logger="web_tier.dashboard_sampler")
    with DashboardServer(stack, clients, interval_s=0.2, idle_after_s=1.0) as server:
        server.metrics()  # starts the sampler
        wait_for(lambda: server.bp.sampler.idle, 5, interval=0.1, what="the sampler to go idle")
        # The thread logs this once its last read is done and it is about to wait.
        wait_until(lambda: "pausing AWS reads" in caplog.text, 10, interval=0.05, what="the sampler to pause")
        paused = len(server.bp.sampler.since(None)[0])
        stays_true(lambda: len(server.bp.sampler.since(None)[0]) == paused, 1.0,  # five sampling intervals
                   what="no AWS reads while nobody looks")
        assert server.bp.sampler.running  # paused, not dead
        server.metrics()
        wait_for(lambda: len(server.bp.sampler.since(None)[0]) >= paused + 2, 5, interval=0.1,
                 what="sampling to resume")
