"""Where a light-load request's time goes, hop by hop (prints medians; no assertions).

Starts the local stack, sends one image at a time with `POST /`, then reads each
job's timestamps back (`GET /api/jobs/<id>`): web tier storing the image, the
request's trip through SQS to a worker and back out, the worker's own inference,
the response queue to the dispatcher, and HTTP. All processes share this host's
clock, so the differences are meaningful.

    .venv/bin/python -m tests.bench.bench_latency [--requests 40]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import requests

from infra.local.stack import StackProcess
from tests.images import jpeg_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, StackProcess(Path(tmp)) as stack:
        session = requests.Session()
        for i in range(args.requests + 5):
            body = jpeg_bytes(i, (500, 375))
            t0 = time.time()
            resp = session.post(f"{stack.url}/", files={"myfile": (f"lat_{i:03d}.jpg", body, "image/jpeg")},
                                timeout=60)
            t1 = time.time()
            resp.raise_for_status()
            job = session.get(f"{stack.url}/api/jobs/{resp.headers['X-Job-Id']}", timeout=10).json()
            if i < 5:
                continue  # the first requests warm connections and caches
            rows.append({
                "client total": (t1 - t0) * 1000,
                "web: read + check + S3 put": (job["enqueued_at"] - job["created_at"]) * 1000,
                "SQS send -> worker done, less inference": (job["done_at"] - job["enqueued_at"]) * 1000
                - job["infer_ms"],
                "worker inference (1 thread)": job["infer_ms"],
                "response queue -> dispatcher": (job["result_at"] - job["done_at"]) * 1000,
                "HTTP in/out, wake the request": (t1 - t0) * 1000 - (job["result_at"] - job["created_at"]) * 1000,
            })
    print(f"light load, {len(rows)} sequential requests (500x375 JPEG), medians:")
    for key in rows[0]:
        values = sorted(r[key] for r in rows)
        print(f"  {key:42s} {statistics.median(values):7.1f} ms   (p90 {values[int(0.9 * (len(values) - 1))]:6.1f})")
    overhead = statistics.median(r["client total"] - r["worker inference (1 thread)"] for r in rows)
    print(f"  {'everything but inference':42s} {overhead:7.1f} ms")


if __name__ == "__main__":
    main()
