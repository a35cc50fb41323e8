"""Controller benchmark: the scaling timeline and the costs that shape it.

Runs its own moto server, `python -m controller` and `python -m infra.local.runner`
(``IMGREC_SCALING=course``, min 0 / max 15 by default: the course grader's profile) and prints:

1. idle CPU of the controller (and the runner) over ``--idle`` s, empty queue;
   target: controller < 5 % of one core;
2. wake-up: first message into an empty queue -> the controller's run_instances
   call (from its log); target <= 1 poll interval; and -> the answer;
3. a burst of ``--burst`` real images: a timeline (queue backlog, running,
   pending every 0.5 s), the peak, and the fleet back at min after the last answer;
4. run_instances -> that new local instance's first classified image (booted from
   its user data; tests/bench/bench_instances.py has more), against a cold
   ``python -m app_tier`` start.

    .venv/bin/python -m tests.bench.bench_controller [--burst 100] [--scaling course] [--min 0] [--max 15] [--idle 30]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import psutil

from controller.actuator import Ec2Actuator
from infra.clients import Clients
from infra.config import Settings
from infra.local.ami import ensure_launch_template
from infra.local.moto_server import MotoServer, free_port
from infra.observe import InstanceState, app_instances, queue_depth, queue_url
from infra.provision import provision
from tests.fleet import FleetSampler
from tests.helpers import collect_results, send_requests, upload_images
from tests.procs import log_text, start_module, stop_process, wait_for, worker_pids

LAUNCH_RE = re.compile(r"^(\S+ \S+) INFO controller\.actuator: launched (i-\w+)", re.M)


def log_time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def launches(proc) -> list[tuple[float, str]]:
    return [(log_time(t), iid) for t, iid in LAUNCH_RE.findall(log_text(proc))]


def active(clients, settings) -> int:
    return sum(i.state in (InstanceState.RUNNING, InstanceState.PENDING) for i in app_instances(clients.ec2, settings))


def idle_cpu(procs: dict[str, psutil.Process], seconds: float) -> dict[str, float]:
    for p in procs.values():
        p.cpu_percent(None)
    time.sleep(seconds)
    return {name: p.cpu_percent(None) for name, p in procs.items()}


def wake_up(clients, settings, ctl) -> None:
    before = len(launches(ctl))
    (req,) = upload_images(clients.s3, settings, 1, start=900)
    sent = send_requests(clients.sqs, settings, [req])
    result = collect_results(clients.sqs, settings, {req.request_id}, 60)[req.request_id]
    first = launches(ctl)[before][0]
    print(f"wake-up: message -> run_instances {first - sent:.2f} s (poll interval {settings.poll_interval_s:g} s); "
          f"-> answer {result.done_at - sent:.2f} s")


def burst(clients, settings, n: int) -> None:
    requests = upload_images(clients.s3, settings, n)
    sampler = FleetSampler(clients.ec2, settings)
    timeline: list[tuple[float, int, int]] = []
    with sampler.running():
        sent = send_requests(clients.sqs, settings, requests)
        results = collect_results(clients.sqs, settings, {r.request_id for r in requests}, 300)
        drained = max(r.done_at for r in results.values())
        deadline = time.time() + 60
        while time.time() < deadline and active(clients, settings) > settings.min_instances:
            time.sleep(0.2)
        time.sleep(0.5)
    at_min = next((s.at for s in sampler.samples if s.at > drained
                   and s.running + s.pending == settings.min_instances), float("nan"))
    # the timeline: a row whenever the fleet changed between two 0.2 s samples
    for s in sampler.samples:
        if not timeline or (s.running, s.pending) != timeline[-1][1:]:
            timeline.append((s.at - sent, s.running, s.pending))
    print(f"\nburst of {n} (min {settings.min_instances}, max {settings.max_instances}, target "
          f"{settings.target_backlog_per_instance}/instance, window {settings.scale_in_window_s:g} s):")
    print("   t(s)  running pending  (rows where the fleet changed; t from the last message sent)")
    for t, running, pending in timeline:
        print(f"  {t:5.1f}  {running:7d} {pending:7d}  {'#' * running}")
    peak_at = next(s.at for s in sampler.samples if s.running == sampler.peak_running)
    print(f"answered {len(results)}/{n}; peak running {sampler.peak_running} (max {settings.max_instances}) "
          f"{peak_at - sent:.1f} s after the burst; last answer {drained - sent:.1f} s after it; "
          f"back at min {settings.min_instances} {at_min - drained:.2f} s after the last answer")


def new_instance_latency(clients, settings, sup, repeat: int) -> None:
    act = Ec2Actuator(clients.ec2, settings)
    url = queue_url(clients.sqs, settings.req_queue)
    figures = []
    for k in range(repeat):
        (req,) = upload_images(clients.s3, settings, 1, start=950 + k)
        send_requests(clients.sqs, settings, [req])
        t0 = time.time()
        (iid,) = act.launch(1)
        result = collect_results(clients.sqs, settings, {req.request_id}, 60)[req.request_id]
        assert result.worker == iid, (result.worker, iid)
        figures.append(result.done_at - t0)
        act.remove([iid])
        wait_for(lambda: queue_depth(clients.sqs, url).backlog == 0 and worker_pids(sup) == [], 60,
                 what="the worker to drain")
    print(f"\nrun_instances -> first classified image, booted from user data ({repeat} runs): median "
          f"{statistics.median(figures):.2f} s, min {min(figures):.2f}, max {max(figures):.2f}")


def cold_start(clients, settings, tmp: Path) -> None:
    (req,) = upload_images(clients.s3, settings, 1, start=990)
    send_requests(clients.sqs, settings, [req])
    t0 = time.time()
    proc = start_module("app_tier", settings, log_path=tmp / "cold.log", IMGREC_INSTANCE_ID="i-cold")
    try:
        result = collect_results(clients.sqs, settings, {req.request_id}, 120)[req.request_id]
        print(f"for contrast, a cold `python -m app_tier` process: start -> first classified image "
              f"{result.done_at - t0:.2f} s, {psutil.Process(proc.pid).cpu_times().user:.1f} s of CPU")
    finally:
        stop_process(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--scaling", choices=("course", "work"), default="course",
                        help="the scaling profile (default course: the grader's expectations this bench times)")
    parser.add_argument("--min", type=int, default=0)
    parser.add_argument("--max", type=int, default=15)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    tmp = Path(tempfile.mkdtemp(prefix="bench-controller-"))
    with MotoServer(port=free_port()) as server:
        prefix = f"b{uuid.uuid4().hex[:8]}"
        settings = Settings.from_env({}, endpoint_url=server.url, prefix=prefix, app_instance_prefix=f"{prefix}-app",
                                     scaling=args.scaling, min_instances=args.min, max_instances=args.max,
                                     data_dir=str(tmp / "data"))
        clients = Clients(settings)
        provision(settings, clients)
        settings = settings.replace(launch_template=ensure_launch_template(clients.ec2, settings))
        sup = start_module("infra.local.runner", settings, log_path=tmp / "runner.log")
        ctl = None
        try:
            wait_for(lambda: "runner ready" in log_text(sup), 120, what="runner")
            ctl = start_module("controller", settings, log_path=tmp / "controller.log")
            wait_for(lambda: "controller for" in log_text(ctl), 30, what="controller")
            wait_for(lambda: active(clients, settings) == settings.min_instances
                     and len(worker_pids(sup)) == settings.min_instances, 30, what="fleet at min")
            time.sleep(2)
            cpu = idle_cpu({"controller": psutil.Process(ctl.pid), "runner": psutil.Process(sup.pid)}, args.idle)
            print(f"idle CPU over {args.idle:g} s (% of one core): controller {cpu['controller']:.2f} %, "
                  f"runner {cpu['runner']:.2f} % (polls every 0.25 s)")
            if settings.min_instances == 0:
                wake_up(clients, settings, ctl)
                wait_for(lambda: active(clients, settings) == 0, 30, what="back to 0")
            burst(clients, settings, args.burst)
            stop_process(ctl)
            for i in app_instances(clients.ec2, settings):
                if i.state == InstanceState.RUNNING:
                    clients.ec2.terminate_instances(InstanceIds=[i.id])
            wait_for(lambda: worker_pids(sup) == [], 60, what="workers to drain")
            new_instance_latency(clients, settings, sup, args.repeat)
            cold_start(clients, settings, tmp)
        finally:
            if ctl is not None:
                stop_process(ctl)
            stop_process(sup, timeout=40)
        print(f"\nlogs: {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
