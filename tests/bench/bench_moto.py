"""moto's CPU per call, plain moto against our launcher's speed-ups (infra/local/moto_speedups.py).

Starts each server on a free port, puts 100 messages in a queue, then reads the server process's own CPU
time around N calls of receive_message(10) (visibility 0, so the queue stays full) and
get_queue_attributes(All). Prints ms of moto CPU per call.

    .venv/bin/python tests/bench/bench_moto.py [--calls 30]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from infra.local.moto_server import free_port, is_moto  # noqa: E402

VARIANTS = {"plain moto": ["-m", "moto.server"], "with speed-ups": ["-m", "infra.local.moto_server"]}


def start(args: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, *args, "-H", "127.0.0.1", "-p", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    deadline = time.monotonic() + 30
    while not is_moto(f"http://127.0.0.1:{port}", timeout=0.5):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"moto did not start: {args}")
        time.sleep(0.1)
    return proc


def cpu_ms_per_call(proc: psutil.Process, call, n: int) -> float:
    call()  # warm
    before = sum(proc.cpu_times()[:2])
    for _ in range(n):
        call()
    return (sum(proc.cpu_times()[:2]) - before) * 1000 / n


def measure(args: list[str], calls: int) -> dict[str, float]:
    port = free_port()
    proc = start(args, port)
    try:
        sqs = boto3.client("sqs", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        url = sqs.create_queue(QueueName="bench")["QueueUrl"]
        for start_at in range(0, 100, 10):
            sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{start_at + i}"}
                                                           for i in range(10)])
        p = psutil.Process(proc.pid)
        return {
            "receive_message(10)": cpu_ms_per_call(p, lambda: sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0), calls),
            "get_queue_attributes(All)": cpu_ms_per_call(p, lambda: sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["All"]), calls),
        }
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    results = {name: measure(cmd, args.calls) for name, cmd in VARIANTS.items()}
    print(f"moto CPU per call (ms), 100 messages queued, {args.calls} calls each")
    print(f"{'call':28s}" + "".join(f"{name:>18s}" for name in results))
    for call in next(iter(results.values())):
        print(f"{call:28s}" + "".join(f"{r[call]:18.1f}" for r in results.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
