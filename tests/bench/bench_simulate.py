"""The simulator against the real local stack: predicted and measured burst times, side by side.

Runs, on a fresh local stack each (strict AWS at its defaults), a ``--burst`` image burst (default 200)
with a fixed fleet of one (``IMGREC_MIN_INSTANCES=IMGREC_MAX_INSTANCES=1``) and the course's 100
requests with ``IMGREC_SCALING=course``, through the workload generator (100 concurrent clients). Then
asks ``python -m controller.simulate``'s model of this machine (``--world local``: shared-CPU mode, the
emulation's default lags; its figures are in ``controller/simulate.py``) for the same runs, fed the very
send times the generator recorded. The target (within 25 %) is judged on the model as shipped; beside it,
for sensitivity, the model with this run's own figures: CPU per image (the whole stack's CPU over the fixed
fleet's burst), an instance's launch-to-ready time (one launch at a time on an idle stack) and a boot's CPU
(six launched at once, as a scale-out does: boots cost each other more than one alone). Prints drain time (first request sent to last
answer), measured and predicted. Figures, not assertions; other sessions share this machine.

    .venv/bin/python -m tests.bench.bench_simulate [--runs 1] [--burst 200] [--dataset ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

from controller import simulate as sim
from infra.local.stack import StackProcess
from tests.bench.bench_scaling import tree_cpu

DEFAULT_DATASET = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "imagenet-sample-200"
GOAL = 0.25
TOGETHER = 6  # instances launched at once to measure what a boot costs in a scale-out
CASES = {  # name -> (stack environment, the simulator's policy, images)
    "fixed 1": ({"IMGREC_MIN_INSTANCES": "1", "IMGREC_MAX_INSTANCES": "1"}, "fixed 1", None),
    "course profile": ({"IMGREC_SCALING": "course"}, "course", 100),
}


def boots(tmp: Path, count: int = 3) -> tuple[float, float]:
    """(median launch-to-ready s of instances launched one at a time on an idle stack, CPU-s per boot of
    ``TOGETHER`` launched at once)."""
    from controller.actuator import Ec2Actuator
    from infra.clients import Clients
    from infra.local.runner import consoles_text

    stack = StackProcess(tmp / f"boots-{time.time_ns()}").start(timeout=180)
    walls, cpus = [], []
    try:
        time.sleep(5)
        root = psutil.Process(stack.proc.pid)
        settings = stack.settings.replace(launch_template=f"{stack.settings.prefix}-app-lt")
        act = Ec2Actuator(Clients(settings).ec2, settings)
        cpu, at = tree_cpu(root), time.monotonic()
        time.sleep(5)
        idle = (tree_cpu(root) - cpu) / (time.monotonic() - at)  # the stack's own CPU at rest, per second
        for _ in range(count):
            ready = consoles_text(stack.data_dir).count(" ready: ")
            cpu, at = tree_cpu(root), time.monotonic()
            act.launch(1)
            while consoles_text(stack.data_dir).count(" ready: ") <= ready:
                time.sleep(0.05)
            wall = time.monotonic() - at
            walls.append(wall)
            time.sleep(2)
        # CPU per boot when several boot at once (as a scale-out does): they cost each other more than one alone.
        ready = consoles_text(stack.data_dir).count(" ready: ")
        cpu, at = tree_cpu(root), time.monotonic()
        act.launch(TOGETHER)
        while consoles_text(stack.data_dir).count(" ready: ") < ready + TOGETHER:
            time.sleep(0.05)
        cpus.append(max(0.0, tree_cpu(root) - cpu - idle * (time.monotonic() - at)) / TOGETHER)
    finally:
        stack.stop()
    return statistics.median(walls), statistics.median(cpus)


def measure(env: dict[str, str], images: int, dataset: Path, tmp: Path) -> tuple[float, list[float], int, float]:
    """(drain s, send times relative to the first, peak fleet, CPU-s per image) of one burst on a fresh stack."""
    from workload import WorkloadConfig, run_workload

    stack = StackProcess(tmp / f"stack-{time.time_ns()}", **env).start(timeout=180)
    try:
        time.sleep(3)
        root = psutil.Process(stack.proc.pid)
        cpu = tree_cpu(root)
        result = run_workload(WorkloadConfig(
            url=stack.url, image_folder=dataset, prediction_file=dataset / "labels.csv", num_request=images,
            repeat=True, monitor=True, monitor_png=stack.data_dir / "timeline.png", rest_timeout_s=20,
            settings=stack.settings, progress=False))
        cpu = tree_cpu(root) - cpu
    finally:
        stack.stop()
    first = min(r.start_s for r in result.records)
    drain = max(r.end_s for r in result.records) - first
    return (drain, sorted(r.start_s - first for r in result.records), result.fleet.peak if result.fleet else 0,
            cpu / max(1, result.succeeded))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_simulate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    args = parser.parse_args(argv)
    if not (args.dataset / "labels.csv").exists():
        print(f"bench: dataset not found at {args.dataset} (pass --dataset)", file=sys.stderr)
        return 2
    model = sim.LOCAL
    measured_runs: list[tuple[str, int, float, list[float], int, float]] = []
    with tempfile.TemporaryDirectory(prefix="imgrec-bench-sim-") as tmp:
        boot_s, boot_cpu = boots(Path(tmp))
        print(f"this machine: launch to ready {boot_s:.2f} s (one at a time), {boot_cpu:.2f} CPU-s per boot "
              f"({TOGETHER} at once)", flush=True)
        for k in range(args.runs):
            for name, (env, _, images) in CASES.items():
                n = images or args.burst
                measured_runs.append((name, n, *measure(env, n, args.dataset, Path(tmp))))
                print(f"run {k + 1} {name:<15} {n} images: measured {measured_runs[-1][2]:5.1f} s "
                      f"(peak {measured_runs[-1][4]}, {measured_runs[-1][5] * 1000:.0f} ms CPU/image)", flush=True)
    cpu_image = statistics.median(r[5] for r in measured_runs if r[0] == "fixed 1")
    here = dataclasses.replace(model, boot_median_s=boot_s, boot_cpu_s=min(boot_cpu, boot_s), cpu_per_image=cpu_image)
    print(f"\n==== simulator (--world local) vs the local stack, {args.runs} run(s) each, this machine shared "
          f"with other sessions ====")
    for label, world in (("model (as shipped)", model), ("with this run's figures", here)):
        print(f"{label}: {world.cores:g} shared cores, {world.cpu_per_image * 1000:.0f} ms CPU per image, worker "
              f"ceiling {world.rate:g}/s, boot {world.boot_median_s:.1f} s of which {world.boot_cpu_s:.2f} CPU-s")
    print(f"{'case':<16}{'images':>7}{'measured s':>12}{'model s':>9}{'error':>7}{'here s':>8}{'error':>7}")
    for name, (_, policy, _) in CASES.items():
        mine = [r for r in measured_runs if r[0] == name]
        measured = statistics.median(r[2] for r in mine)
        out, errors = [f"{name:<16}{mine[0][1]:7d}{measured:12.1f}"], []
        for world in (model, here):
            predicted = statistics.median(
                sim.simulate(world, policy, sim.policies(world)[policy], r[3], name).drain_s for r in mine)
            errors.append(predicted / measured - 1)
            out.append(f"{predicted:{9 if world is model else 8}.1f}{errors[-1]:+7.0%}")
        print("".join(out) + f"  (model within {GOAL:.0%}: {'ok' if abs(errors[0]) <= GOAL else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
