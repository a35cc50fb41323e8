"""Default scaling against fixed fleets on this machine: a 200-image burst through the whole local stack.

For each setting, a fresh local stack (``python -m infra up`` with free ports, strict AWS at its
defaults) and one burst of ``--burst`` images from ``--dataset`` by the workload generator (100
concurrent clients, as the course's). Settings: the default (``IMGREC_SCALING=work``), a fixed fleet of
one and of two (``IMGREC_MIN_INSTANCES=IMGREC_MAX_INSTANCES=n``), ``--runs`` rounds in rotating order (each
setting first, second and third once in three rounds), after one warm-up burst that is not counted.
Per run: drain (first request sent to last answer), images/s, instances launched, peak, and CPU per
image over every process of the stack (CPU-seconds of the whole process tree during the burst, exited
processes included through their parents, divided by the images).

Prints the issue's target (figures, not assertions): the default's median images/s >= 0.9x the best fixed
fleet's (best = shortest median drain), its median CPU per image within 1.2x that fleet's. Other sessions
share this machine: the order rotates so that load and position hit every setting alike.

    .venv/bin/python -m tests.bench.bench_scaling [--runs 3] [--burst 200] [--dataset ...]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

from infra.local.stack import StackProcess

DEFAULT_DATASET = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "imagenet-sample-200"
SETTINGS = {
    "default (work)": {},
    "fixed 1": {"IMGREC_MIN_INSTANCES": "1", "IMGREC_MAX_INSTANCES": "1"},
    "fixed 2": {"IMGREC_MIN_INSTANCES": "2", "IMGREC_MAX_INSTANCES": "2"},
}
SPEED_GOAL, CPU_GOAL = 0.9, 1.2
LAUNCH_RE = re.compile(r"controller\.actuator: launched (i-\w+)")


def tree_cpu(root: psutil.Process) -> float:
    """CPU-seconds of ``root`` and every descendant, those already reaped counted in their parents."""
    total = 0.0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def one_run(name: str, env: dict[str, str], burst: int, dataset: Path, tmp: Path) -> dict:
    from workload import WorkloadConfig, run_workload

    stack = StackProcess(tmp / f"{name.replace(' ', '-')}-{time.time_ns()}", **env).start(timeout=180)
    try:
        time.sleep(3)  # let the start-up settle (the at-rest fleet's first metrics, the first reaper pass)
        root = psutil.Process(stack.proc.pid)
        log = stack.data_dir / "logs" / "controller.log"
        launched_before = len(LAUNCH_RE.findall(log.read_text()))
        cpu0 = tree_cpu(root)
        result = run_workload(WorkloadConfig(
            url=stack.url, image_folder=dataset, prediction_file=dataset / "labels.csv", num_request=burst,
            repeat=True, monitor=True, monitor_png=stack.data_dir / "timeline.png", rest_timeout_s=5,
            settings=stack.settings, progress=False))
        cpu = tree_cpu(root) - cpu0
        drain = max(r.end_s for r in result.records) - min(r.start_s for r in result.records)
        launched = len(LAUNCH_RE.findall(log.read_text())) - launched_before
        return {"drain_s": drain, "ok": result.succeeded, "images_per_s": result.succeeded / drain,
                "cpu_ms": 1000 * cpu / max(1, result.succeeded), "launched": launched,
                "peak": result.fleet.peak if result.fleet else None}
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    args = parser.parse_args(argv)
    if not (args.dataset / "labels.csv").exists():
        print(f"bench: dataset not found at {args.dataset} (pass --dataset)", file=sys.stderr)
        return 2
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="imgrec-bench-scaling-") as tmp:
        warm = one_run("warm-up", {}, args.burst, args.dataset, Path(tmp))  # caches, the model file, moto's imports
        print(f"warm-up (not counted): drain {warm['drain_s']:.1f} s", flush=True)
        names = list(SETTINGS)
        for k in range(args.runs):
            order = names[k % len(names):] + names[:k % len(names)]
            for name in order:
                r = one_run(name, SETTINGS[name], args.burst, args.dataset, Path(tmp))
                runs[name].append(r)
                print(f"run {k + 1} {name:<15} drain {r['drain_s']:5.1f} s  {r['images_per_s']:5.1f} images/s  "
                      f"CPU {r['cpu_ms']:4.0f} ms/image  launched {r['launched']:2d}  peak {r['peak']}  "
                      f"({r['ok']}/{args.burst} ok)", flush=True)
    med = {name: {key: statistics.median(r[key] for r in rs) for key in ("drain_s", "images_per_s", "cpu_ms",
                                                                        "launched")}
           for name, rs in runs.items()}
    load = os.getloadavg()[2]  # 15-minute average: how busy the machine was around the runs, other sessions included
    print(f"\n==== {args.burst}-image burst, median of {args.runs} rotating runs (this machine, "
          f"{psutil.cpu_count()} cores, load average {load:.1f} over the last 15 min) ====")
    print(f"{'setting':<16}{'drain s':>9}{'images/s':>10}{'CPU ms/image':>14}{'launched':>10}")
    for name, m in med.items():
        print(f"{name:<16}{m['drain_s']:9.1f}{m['images_per_s']:10.1f}{m['cpu_ms']:14.0f}{m['launched']:10.0f}")
    best = min((n for n in SETTINGS if n.startswith("fixed")), key=lambda n: med[n]["drain_s"])
    speed = med["default (work)"]["images_per_s"] / med[best]["images_per_s"]
    cpu = med["default (work)"]["cpu_ms"] / med[best]["cpu_ms"]
    verdict = lambda ok: "ok" if ok else "MISSED"  # noqa: E731
    print(f"default vs the best fixed fleet ({best}): {speed:.2f}x its images/s (goal >= {SPEED_GOAL}: "
          f"{verdict(speed >= SPEED_GOAL)}), {cpu:.2f}x its CPU per image (goal <= {CPU_GOAL}: "
          f"{verdict(cpu <= CPU_GOAL)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
