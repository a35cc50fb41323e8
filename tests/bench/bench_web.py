"""Web-tier benchmark: overhead at light load, and 200 concurrent ``POST /``.

Runs its own moto server, web tier (`python -m web_tier`) and real worker(s)
(`python -m app_tier`), then prints figures:

* light load (one request at a time): median end-to-end latency, and the web
  tier's own share of it = end-to-end minus the time from enqueue to the
  dispatcher receiving the result (queue transit + the worker's own time);
  target <= 25 ms. Also end-to-end minus the worker's reported inference time.
* 200 concurrent ``POST /`` (unique names over images of known label): errors
  and mismatched answers (target zero of each), latency percentiles.

    .venv/bin/python -m tests.bench.bench_web [--light 40] [--concurrent 200] [--workers 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from infra.clients import Clients
from infra.config import Settings
from infra.local.moto_server import MotoServer, free_port
from infra.provision import provision
from tests.images import jpeg_bytes
from tests.procs import start_module, stop_process, wait_http

DISTINCT_IMAGES = 20


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))]


def post(base: str, name: str, data: bytes, timeout: float = 300) -> tuple[requests.Response, float]:
    started = time.perf_counter()
    resp = requests.post(base + "/", files={"myfile": (name, data)}, timeout=timeout)
    return resp, (time.perf_counter() - started) * 1000


def light_load(base: str, images: dict[int, bytes], n: int) -> dict[int, str]:
    """Sequential requests; returns each seed's label (the truth for the concurrent phase)."""
    truth, e2e, web_own, minus_infer, ingest, transit, deliver, waited = {}, [], [], [], [], [], [], []
    for i in range(n):
        seed = i % len(images)
        resp, ms = post(base, f"light_{i:03d}.jpg", images[seed])
        if resp.status_code != 200:
            raise SystemExit(f"light-load request {i} failed: {resp.status_code} {resp.text}")
        truth.setdefault(seed, resp.text.split(":", 1)[1])
        job = requests.get(f"{base}/api/jobs/{resp.headers['X-Job-Id']}", timeout=10).json()
        if i < 3:  # warm-up: first model run and connection set-up
            continue
        worker_span_ms = (job["result_at"] - job["enqueued_at"]) * 1000
        timing = dict(part.split(";dur=") for part in resp.headers["Server-Timing"].split(", "))
        waited.append(ms - float(timing["wait"]))
        e2e.append(ms)
        web_own.append(ms - worker_span_ms)
        minus_infer.append(ms - job["infer_ms"])
        ingest.append((job["enqueued_at"] - job["created_at"]) * 1000)
        transit.append((job["done_at"] - job["enqueued_at"]) * 1000)
        deliver.append((job["result_at"] - job["done_at"]) * 1000)
    med = statistics.median
    print(f"light load: {len(e2e)} sequential POST / (after 3 warm-up)")
    print(f"  end-to-end latency          median {med(e2e):7.1f} ms   p90 {pct(e2e, 90):7.1f} ms")
    print(f"  web tier own time           median {med(web_own):7.1f} ms   p90 {pct(web_own, 90):7.1f} ms"
          f"   (target <= 25 ms)")
    print(f"    of which handler start -> enqueue (S3 put) median {med(ingest):6.1f} ms")
    print(f"  end-to-end minus handler's wait (Server-Timing) median {med(waited):6.1f} ms"
          "   (all web work incl. the SQS send)")
    print(f"  enqueue -> worker done      median {med(transit):7.1f} ms   (queue transit + worker)")
    print(f"  worker done -> dispatcher   median {med(deliver):7.1f} ms   (response queue transit)")
    print(f"  end-to-end minus inference  median {med(minus_infer):7.1f} ms   (everything but the model)")
    return truth


def concurrent(base: str, images: dict[int, bytes], truth: dict[int, str], n: int) -> tuple[int, int]:
    barrier = threading.Barrier(n)

    def one(i: int):
        seed = i % len(images)
        barrier.wait()
        try:
            resp, ms = post(base, f"conc_{i:03d}.jpg", images[seed])
        except requests.RequestException as err:
            return i, None, str(err), 0.0
        return i, resp.status_code, resp.text, ms

    started = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - started
    errors = [r for r in results if r[1] != 200]
    mismatched = [r for r in results if r[1] == 200 and r[2] != f"conc_{r[0]:03d}:{truth[r[0] % len(images)]}"]
    lat = [r[3] for r in results if r[1] == 200]
    print(f"concurrent: {n} simultaneous POST / in {wall:.1f} s ({n / wall:.1f} req/s)")
    print(f"  errors {len(errors)}   mismatched answers {len(mismatched)}   (target 0 and 0)")
    if lat:
        print(f"  latency p50 {pct(lat, 50):.0f} ms   p90 {pct(lat, 90):.0f} ms   max {max(lat):.0f} ms")
    for r in (errors + mismatched)[:5]:
        print(f"  e.g. request {r[0]}: {r[1]} {r[2][:120]!r}")
    return len(errors), len(mismatched)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--light", type=int, default=40, help="sequential requests at light load")
    parser.add_argument("--concurrent", type=int, default=200, help="simultaneous requests")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench_web_"))
    images = {s: jpeg_bytes(s) for s in range(DISTINCT_IMAGES)}
    procs = []
    with MotoServer(port=free_port()) as moto:
        prefix = f"b{uuid.uuid4().hex[:8]}"
        settings = Settings.from_env({}, endpoint_url=moto.url, prefix=prefix, app_instance_prefix=f"{prefix}-app",
                                     data_dir=str(tmp / "data"), web_port=free_port(), receive_wait_s=20,
                                     log_level="WARNING")
        provision(settings, Clients(settings))
        try:
            for w in range(args.workers):
                procs.append(start_module("app_tier", settings, log_path=tmp / f"worker{w}.log",
                                          IMGREC_INSTANCE_ID=f"i-bench{w}"))
            web = start_module("web_tier", settings, log_path=tmp / "web.log")
            procs.append(web)
            base = f"http://{settings.web_host}:{settings.web_port}"
            wait_http(base + "/", 30)
            print(f"web tier {base}, {args.workers} worker(s), logs in {tmp}")
            truth = light_load(base, images, max(args.light, DISTINCT_IMAGES + 3))
            errors, mismatched = concurrent(base, images, truth, args.concurrent)
        finally:
            for proc in reversed(procs):
                stop_process(proc)
    return 1 if errors or mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
