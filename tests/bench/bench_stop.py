"""How long Ctrl-C takes to stop the whole local stack (`python -m infra up`); goal: under 10 s.

tests/test_e2e.py checks that Ctrl-C stops everything by itself and frees the ports; this prints the time.
Each run starts a fresh stack (free ports, temporary data dir), waits until it is ready (one idle worker),
optionally sends it a few requests so the worker holds a warm model, then sends SIGINT.

    .venv/bin/python -m tests.bench.bench_stop [--repeat 3] [--requests 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

from infra.local.stack import StackProcess
from tests.images import jpeg_bytes

GOAL_S = 10.0


def one_run(tmp: Path, n_requests: int) -> tuple[float, float, int]:
    started = time.monotonic()
    stack = StackProcess(tmp, log_path=tmp.parent / f"{tmp.name}.log").start()
    ready = time.monotonic() - started
    try:
        for i in range(n_requests):
            requests.post(stack.url + "/", files={"myfile": (f"b{i}.jpg", jpeg_bytes(i))}, timeout=120)
    finally:
        elapsed = stack.stop()
    return ready, elapsed, stack.proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--requests", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    stops = []
    for k in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="imgrec-bench-stop-") as tmp:
            ready, elapsed, code = one_run(Path(tmp), args.requests)
        stops.append(elapsed)
        print(f"run {k + 1}: ready in {ready:.1f} s; Ctrl-C -> every process gone in {elapsed:.2f} s (exit {code})",
              flush=True)
    print(f"Ctrl-C stop over {args.repeat} runs: median {statistics.median(stops):.2f} s, max {max(stops):.2f} s "
          f"(goal < {GOAL_S:g} s: {'ok' if max(stops) < GOAL_S else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
