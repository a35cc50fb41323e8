"""Dashboard cost: CPU the web process spends with 5 browsers polling vs. none.

Runs its own moto server and a web process serving the dashboard, seeds some data
(queued messages, app instances, worker metrics), starts the sampler, then
measures the web process's CPU for 30 s with no browser and for 30 s while 5
simulated browsers poll ``/api/metrics?since=`` every second (after one full
fetch of the page, its assets and the 10-minute history each). Target: the
delta is under 5 % of one core.

    .venv/bin/python -m tests.bench.bench_dashboard [--clients 5] [--seconds 30] [--web-tier]

``--web-tier`` measures ``python -m web_tier`` (the dashboard registered by
``create_app``) instead of a process serving only the dashboard blueprint.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
import requests

from app_tier.metrics import Metrics
from infra.cfn.stack import provision
from infra.clients import Clients
from infra.config import Settings
from infra.local.moto_server import MotoServer, free_port
from tests.procs import start_module, stop_process, wait_http

ASSETS = ("/dashboard/static/dashboard.js", "/dashboard/static/dashboard.css",
          "/dashboard/static/vendor/uplot-1.6.32/uPlot.iife.min.js")


def serve() -> int:
    """The measured process when not --web-tier: the dashboard blueprint alone, under waitress."""
    from flask import Flask
    from waitress import serve as waitress_serve

    from web_tier.dashboard import make_dashboard_blueprint

    settings = Settings.from_env()
    app = Flask(__name__)
    app.register_blueprint(make_dashboard_blueprint(settings, Clients(settings)))
    waitress_serve(app, host=settings.web_host, port=settings.web_port, threads=settings.web_threads)
    return 0


def seed(settings: Settings, clients: Clients) -> None:
    sqs = clients.sqs
    url = sqs.get_queue_url(QueueName=settings.req_queue)["QueueUrl"]
    for first in range(0, 30, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f'{{"n": {first + i}}}'}
                                                      for i in range(10)])
    for n in range(1, 7):
        resp = clients.ec2.run_instances(ImageId=settings.ami_id, MinCount=1, MaxCount=1, TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": settings.app_instance_name(n)}]}])
        metrics = Metrics(clients.cloudwatch, settings.metrics_namespace, settings.prefix,
                          resp["Instances"][0]["InstanceId"])
        metrics.count("ImagesProcessed", 10)
        for ms in (300, 450, 900):
            metrics.timing("EndToEndMs", ms)
        metrics.flush()


def cpu_percent(proc: psutil.Process, seconds: float) -> float:
    before = proc.cpu_times()
    time.sleep(seconds)
    after = proc.cpu_times()
    return 100.0 * ((after.user - before.user) + (after.system - before.system)) / seconds


def browser(base: str, stop: threading.Event, timings: list[float], sizes: list[int], errors: list[str]) -> None:
    """One simulated page: load it once, then poll only for new points, as dashboard.js does."""
    with requests.Session() as http:
        http.get(f"{base}/dashboard", timeout=10)
        for asset in ASSETS:
            http.get(base + asset, timeout=10)
        last = None
        while not stop.is_set():
            started = time.perf_counter()
            try:
                resp = http.get(f"{base}/api/metrics", params={"since": last} if last else None, timeout=10)
                resp.raise_for_status()
                body = resp.json()
            except (requests.RequestException, ValueError) as err:
                errors.append(str(err))
            else:
                timings.append((time.perf_counter() - started) * 1000)
                sizes.append(len(resp.content))
                if body["series"]["t"]:
                    last = body["series"]["t"][-1]
            stop.wait(max(0.0, 1.0 - (time.perf_counter() - started)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--web-tier", action="store_true", help="measure python -m web_tier instead")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve()

    with MotoServer(port=free_port()) as moto, tempfile.TemporaryDirectory() as tmp:
        prefix = f"bd{uuid.uuid4().hex[:8]}"
        settings = Settings.from_env({}, endpoint_url=moto.url, prefix=prefix, app_instance_prefix=f"{prefix}-app",
                                     web_port=free_port(), data_dir=str(Path(tmp) / "data"), receive_wait_s=20)
        clients = Clients(settings)
        provision(settings, clients)
        seed(settings, clients)
        base = f"http://127.0.0.1:{settings.web_port}"
        if args.web_tier:
            web = start_module("web_tier", settings, log_path=Path(tmp) / "web.log")
        else:
            web = start_module("tests.bench.bench_dashboard", settings, "--serve", log_path=Path(tmp) / "web.log")
        try:
            wait_http(f"{base}/dashboard", timeout=30)  # also starts the sampler
            proc = psutil.Process(web.pid)
            time.sleep(5)  # the sampler's first readings, imports and caches settle
            idle = cpu_percent(proc, args.seconds)
            stop, timings, sizes, errors = threading.Event(), [], [], []
            threads = [threading.Thread(target=browser, args=(base, stop, timings, sizes, errors), daemon=True)
                       for _ in range(args.clients)]
            for t in threads:
                t.start()
            time.sleep(2)  # past the first full-history fetches
            timings.clear(), sizes.clear()
            polled = cpu_percent(proc, args.seconds)
            stop.set()
            for t in threads:
                t.join(5)
            latest = requests.get(f"{base}/api/metrics", timeout=10).json()["latest"]
        finally:
            stop_process(web)
    delta = polled - idle
    print(f"web process: {'python -m web_tier' if args.web_tier else 'dashboard blueprint under waitress'}")
    print(f"sampler only (0 browsers, {args.seconds:.0f} s): {idle:.2f} % of one core")
    print(f"{args.clients} browsers polling every 1 s ({args.seconds:.0f} s): {polled:.2f} % of one core")
    print(f"delta from browsers: {delta:+.2f} % (target < 5 %)")
    if timings:
        print(f"polls: {len(timings)}, median {statistics.median(timings):.1f} ms, "
              f"max {max(timings):.1f} ms, median body {statistics.median(sizes):.0f} bytes, errors {len(errors)}")
    print(f"sources in error at the end: {sorted(latest['errors']) or 'none'}")
    return 0 if delta < 5.0 and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
