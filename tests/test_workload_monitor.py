"""--monitor against the real moto server: queue depths and the app-tier fleet over a run."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import request
from PIL import Image

from infra.observe import queue_url
from tests.helpers import child_env, wait_listed
from tests.images import write_images
from tests.procs import ROOT
from tests.stub import create_stub_app, serve_in_thread
from workload import WorkloadConfig, WorkloadError, run_workload, summary_text

INTERVAL_S = 0.25


def _launch(clients, settings, count: int) -> list[str]:
    ids = []
    for n in range(1, count + 1):
        reservation = clients.ec2.run_instances(
            ImageId=settings.ami_id, MinCount=1, MaxCount=1, InstanceType=settings.instance_type,
            TagSpecifications=[{"ResourceType": "instance",
                                "Tags": [{"Key": "Name", "Value": settings.app_instance_name(n)}]}])
        ids.append(reservation["Instances"][0]["InstanceId"])
    return wait_listed(clients.ec2, ids)


def _load_queue(clients, settings, count: int) -> str:
    url = queue_url(clients.sqs, settings.req_queue)
    for i in range(count):
        clients.sqs.send_message(QueueUrl=url, MessageBody=f'{{"n": {i}}}')
    return url


def _drain_and_scale_in(clients, url: str, held: list[str], extra_ids: list[str], after_s: float,
                        log: dict) -> threading.Thread:
    """What the app tier and controller would do: work off the backlog, then terminate the extra instances."""
    def work():
        time.sleep(after_s)
        for handle in held:
            clients.sqs.delete_message(QueueUrl=url, ReceiptHandle=handle)
        while True:
            msgs = clients.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            if not msgs.get("Messages"):
                break
            for m in msgs["Messages"]:
                clients.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        log["drained_at"] = time.time()
        time.sleep(0.6)
        log["terminated_at"] = time.time()
        clients.ec2.terminate_instances(InstanceIds=extra_ids)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def images(tmp_path):
    write_images(tmp_path / "images", 6)
    return tmp_path / "images"


def test_monitor_sees_queue_and_fleet_and_when_it_came_back_to_rest(stack, clients, images, tmp_path):
    settings = stack  # min_instances is 1
    ids = _launch(clients, settings, 3)
    url = _load_queue(clients, settings, 5)
    held = clients.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, VisibilityTimeout=30)["Messages"]
    assert len(held) == 2  # being worked on
    events: dict[str, float] = {}
    app = create_stub_app({}, delay_s=0.3)
    started = []

    @app.before_request
    def drain_once_the_load_arrives():  # ties the scale-in to the run, however slow the machine is
        if request.method == "POST" and not started:
            started.append(_drain_and_scale_in(clients, url, [m["ReceiptHandle"] for m in held], ids[1:],
                                               after_s=0.5, log=events))

    png = tmp_path / "timeline.png"
    with serve_in_thread(app) as web:
        result = run_workload(WorkloadConfig(
            url=web, image_folder=images, concurrency=2, monitor=True, monitor_png=png,
            monitor_interval_s=INTERVAL_S, rest_timeout_s=20, settings=settings, progress=False))
    worker = started[0]
    worker.join(10)

    samples = result.samples
    assert len(samples) >= 4
    assert all(b.t_s > a.t_s for a, b in zip(samples, samples[1:], strict=False))
    first = samples[0]
    assert (first.req_visible, first.req_in_flight, first.count("running")) == (3, 2, 3)
    assert first.client_in_flight == 0 and first.client_completed == 0
    assert max(s.client_in_flight for s in samples) >= 1  # the monitor saw the load as it ran
    last = samples[-1]
    assert (last.req_visible, last.req_in_flight, last.count("running", "pending")) == (0, 0, 1)
    assert last.client_completed == 6

    fleet = result.fleet
    assert (fleet.peak, fleet.min_instances) == (3, 1)
    assert fleet.peak_t_s == first.t_s
    # Seen at the first sample after the scale-in happened, not before it (a sample's reads follow its time stamp).
    assert fleet.back_at_min_t_s is not None
    assert events["terminated_at"] - INTERVAL_S <= result.started_at + fleet.back_at_min_t_s <= events["terminated_at"] + 1.5
    assert fleet.rested_t_s is not None and fleet.rested_t_s >= fleet.back_at_min_t_s
    assert all(s.req_visible == 3 for s in samples if result.started_at + s.t_s < events["drained_at"] - 0.1)
    lines = summary_text(result).splitlines()
    assert f"Fleet peak: 3 running app-tier instances at {fleet.peak_t_s:.1f} s" in lines
    assert f"Fleet back at min (1): at {fleet.back_at_min_t_s:.1f} s" in lines
    assert "Total number of requests completed successfully: 6" in lines

    with Image.open(png) as img:
        assert img.format == "PNG"
        assert img.size[0] >= 800 and img.size[1] >= 800  # three panels
        assert len(img.getcolors(1 << 16) or range(1000)) > 5


def test_monitor_gives_up_after_the_rest_cap(stack, clients, images):
    settings = stack
    _launch(clients, settings, 2)
    _load_queue(clients, settings, 3)  # nobody works it off
    app = create_stub_app({})
    with serve_in_thread(app) as web, ThreadPoolExecutor(1) as pool:
        run = pool.submit(run_workload, WorkloadConfig(
            url=web, image_folder=images, monitor=True, monitor_png=images.parent / "t.png",
            monitor_interval_s=INTERVAL_S, rest_timeout_s=1.0, settings=settings, progress=False))
        result = run.result(timeout=30)  # a bounded wait: a monitor that never gives up fails here
    assert result.fleet.peak == 2 and result.fleet.back_at_min_t_s is None and result.fleet.rested_t_s is None
    lines = summary_text(result).splitlines()
    assert "Fleet back at min (1): not within the watch" in lines
    assert "System at rest (request queue empty, fleet at min): not within the watch" in lines
    assert all(s.req_visible == 3 for s in result.samples)


def test_monitor_without_provisioned_queues_fails_before_any_request(settings, images):
    app = create_stub_app({})
    with serve_in_thread(app) as web:
        with pytest.raises(WorkloadError, match="--monitor: cannot read queues") as err:
            run_workload(WorkloadConfig(url=web, image_folder=images, monitor=True, settings=settings,
                                        progress=False))
    assert "\n" not in str(err.value)
    assert app.config["seen"] == []


def test_cli_monitor_reads_settings_from_the_environment(stack, clients, images, tmp_path):
    settings = stack
    _launch(clients, settings, 1)
    png = tmp_path / "cli.png"
    app = create_stub_app({})
    with serve_in_thread(app) as web:
        proc = subprocess.run(
            [sys.executable, "-m", "workload", "--url", web, "--image_folder", str(images), "--quiet",
             "--monitor", str(png), "--monitor_interval", "0.25", "--rest_timeout", "10"],
            cwd=ROOT, env=child_env(settings), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "Total number of requests: 6" in lines
    assert any(line.startswith("Fleet peak: 1 running app-tier instances at ") for line in lines)
    assert "Fleet back at min (1): never went above it" in lines
    assert any(line.startswith("System at rest (request queue empty, fleet at min): at ") for line in lines)
    assert png.stat().st_size > 10_000
    assert "Traceback" not in proc.stderr
