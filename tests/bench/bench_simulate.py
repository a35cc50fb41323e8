"""The simulator against the real local stack: predicted and measured burst times, side by side.

Runs, on a fresh local stack each (strict AWS at its defaults), a ``--burst`` image burst (default 200)
with a fixed fleet of one (``IMGREC_MIN_INSTANCES=IMGREC_MAX_INSTANCES=1``) and the course's 100
requests with ``IMGREC_SCALING=course``, through the workload generator (100 concurrent clients). Then
asks ``python -m controller.simulate``'s model of this machine (``--world local``: shared-CPU mode, the
emulation's default lags; its figures are in ``controller/simulate.py``) for the same runs, fed the very
send times the generator recorded. Prints drain time (first request sent to last answer), measured and
predicted, and the issue's target: within 25 %. Figures, not assertions; other sessions share this machine.

    .venv/bin/python -m tests.bench.bench_simulate [--runs 1] [--burst 200] [--dataset ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from controller import simulate as sim
from infra.local.stack import StackProcess

DEFAULT_DATASET = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "imagenet-sample-200"
GOAL = 0.25
CASES = {  # name -> (stack environment, the simulator's policy, images)
    "fixed 1": ({"IMGREC_MIN_INSTANCES": "1", "IMGREC_MAX_INSTANCES": "1"}, "fixed 1", None),
    "course profile": ({"IMGREC_SCALING": "course"}, "course", 100),
}


def measure(env: dict[str, str], images: int, dataset: Path, tmp: Path) -> tuple[float, list[float], int]:
    """(drain s, send times relative to the first, peak fleet) of one burst on a fresh stack."""
    from workload import WorkloadConfig, run_workload

    stack = StackProcess(tmp / f"stack-{time.time_ns()}", **env).start(timeout=180)
    try:
        time.sleep(3)
        result = run_workload(WorkloadConfig(
            url=stack.url, image_folder=dataset, prediction_file=dataset / "labels.csv", num_request=images,
            repeat=True, monitor=True, monitor_png=stack.data_dir / "timeline.png", rest_timeout_s=20,
            settings=stack.settings, progress=False))
    finally:
        stack.stop()
    first = min(r.start_s for r in result.records)
    drain = max(r.end_s for r in result.records) - first
    return drain, sorted(r.start_s - first for r in result.records), result.fleet.peak if result.fleet else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_simulate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    args = parser.parse_args(argv)
    if not (args.dataset / "labels.csv").exists():
        print(f"bench: dataset not found at {args.dataset} (pass --dataset)", file=sys.stderr)
        return 2
    world = sim.LOCAL
    rows = []
    with tempfile.TemporaryDirectory(prefix="imgrec-bench-sim-") as tmp:
        for k in range(args.runs):
            for name, (env, policy, images) in CASES.items():
                n = images or args.burst
                measured, arrivals, peak = measure(env, n, args.dataset, Path(tmp))
                predicted = sim.simulate(world, policy, sim.policies(world)[policy], arrivals, name)
                rows.append((name, n, measured, predicted.drain_s + arrivals[0], peak, predicted.peak))
                print(f"run {k + 1} {name:<15} {n} images: measured {measured:5.1f} s (peak {peak}), predicted "
                      f"{predicted.drain_s:5.1f} s (peak {predicted.peak})", flush=True)
    print(f"\n==== simulator (--world local: {world.cores:g} shared cores, {world.cpu_per_image * 1000:.0f} ms CPU "
          f"per image, worker ceiling {world.rate:g}/s, boot {world.boot_median_s:g} s and "
          f"{world.boot_cpu_s:g} CPU-s) vs the local stack ====")
    print(f"{'case':<16}{'images':>7}{'measured s':>12}{'predicted s':>13}{'error':>8}")
    for name in CASES:
        mine = [r for r in rows if r[0] == name]
        measured = statistics.median(r[2] for r in mine)
        predicted = statistics.median(r[3] for r in mine)
        error = predicted / measured - 1
        print(f"{name:<16}{mine[0][1]:7d}{measured:12.1f}{predicted:13.1f}{error:+8.0%}  "
              f"(goal within {GOAL:.0%}: {'ok' if abs(error) <= GOAL else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
