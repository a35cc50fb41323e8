"""Web-tier benchmark: overhead at light load, 200 concurrent ``POST /``, and scale-out.

Runs its own moto server, web tier (`python -m web_tier`) and real worker(s)
(`python -m app_tier`), then prints figures:

* light load (one request at a time): median end-to-end latency, and the web
  tier's own share of it = end-to-end minus the time from enqueue to the
  dispatcher receiving the result (queue transit + the worker's own time);
  target <= 25 ms. Also end-to-end minus the worker's reported inference time.
* 200 concurrent ``POST /`` (unique names over images of known label): errors
  and mismatched answers (target zero of each), latency percentiles.

``--scaleout`` measures the multi-process web tier instead (its own stacks, free ports):

* capacity: ``POST /api/jobs`` accepted per second from ``--clients`` (200) concurrent
  clients, with 1 and with 2 web processes sharing one port (SO_REUSEPORT), no
  worker (this measures intake), and the web processes' own CPU ms per request;
  ``--server gunicorn`` runs the same with gunicorn (gthread; not in requirements.txt: install it to compare);
* ``--sync`` (400) synchronous ``POST /`` round-robin over two web processes (two
  ports) and the same against one: right answers, stolen (another request's answer
  or none), latency p50/p95.

    .venv/bin/python -m tests.bench.bench_web [--light 40] [--concurrent 200] [--workers 1]
    .venv/bin/python -m tests.bench.bench_web --scaleout [--clients 200] [--per-client 5] [--sync 400] [--workers 2]
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

import psutil
import requests

from infra.cfn.stack import provision
from infra.clients import Clients
from infra.config import Settings
from infra.local.moto_server import MotoServer, free_port
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


# ---------------------------------------------------------------- scale-out

def _settings(moto, tmp: Path, **overrides) -> Settings:
    prefix = f"b{uuid.uuid4().hex[:8]}"
    settings = Settings.from_env({}, endpoint_url=moto.url, prefix=prefix, app_instance_prefix=f"{prefix}-app",
                                 data_dir=str(tmp / prefix), web_port=free_port(), receive_wait_s=20,
                                 log_level="WARNING", **overrides)
    provision(settings, Clients(settings))
    return settings


def _web_procs(settings: Settings, n: int, tmp: Path, server: str, ports: list[int]) -> list:
    """``n`` web processes: on one port (``ports`` of length 1, SO_REUSEPORT) or one port each."""
    procs = []
    if server == "gunicorn":
        procs.append(start_module("gunicorn", settings.replace(web_port=ports[0]), "--workers", str(n),
                                  "--worker-class", "gthread", "--threads", str(settings.web_threads),
                                  "--bind", f"127.0.0.1:{ports[0]}", "--log-level", "warning",
                                  "web_tier:create_app()", log_path=tmp / f"gunicorn-{ports[0]}.log"))
        wait_http(f"http://127.0.0.1:{ports[0]}/", 60)
        return procs
    for i in range(n):
        port = ports[i % len(ports)]
        procs.append(start_module("web_tier", settings.replace(web_port=port, web_processes=max(n, 2) if len(
            ports) == 1 else 1), log_path=tmp / f"web-{port}-{i}.log", IMGREC_REPLY_QUEUE="shared" if i == 0 else "own"))
        wait_http(f"http://127.0.0.1:{port}/", 60)
    return procs


def _cpu_s(procs) -> float:
    total = 0.0
    for proc in procs:
        try:
            root = psutil.Process(proc.pid)
            for p in [root, *root.children(recursive=True)]:
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def capacity(moto, tmp: Path, n_procs: int, clients: int, per_client: int, server: str) -> None:
    settings = _settings(moto, tmp)
    procs = _web_procs(settings, n_procs, tmp, server, [settings.web_port])
    base = f"http://127.0.0.1:{settings.web_port}"
    image = jpeg_bytes(1)
    barrier = threading.Barrier(clients)
    try:
        def client(c: int):
            ok = bad = 0
            with requests.Session() as session:  # one connection per client, as a browser keeps
                barrier.wait()
                for k in range(per_client):
                    try:
                        r = session.post(base + "/api/jobs", files={"f": (f"cap_{c}_{k}.jpg", image)}, timeout=120)
                        ok, bad = (ok + 1, bad) if r.status_code == 202 else (ok, bad + 1)
                    except requests.RequestException:
                        bad += 1
            return ok, bad

        cpu0, started = _cpu_s(procs), time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(client, range(clients)))
        wall, cpu = time.perf_counter() - started, _cpu_s(procs) - cpu0
        ok, bad = sum(r[0] for r in results), sum(r[1] for r in results)
        print(f"  {server:8s} {n_procs} process{'es' if n_procs > 1 else '  '}: {ok / wall:6.1f} accepted/s "
              f"({ok} accepted, {bad} failed, {wall:.1f} s), web CPU {cpu * 1000 / max(ok, 1):5.1f} ms/request")
    finally:
        for proc in reversed(procs):
            stop_process(proc)


def round_robin(moto, tmp: Path, n_procs: int, total: int, workers: int, concurrency: int) -> None:
    settings = _settings(moto, tmp, request_timeout_s=300.0)
    ports = [free_port() for _ in range(n_procs)]
    procs = [start_module("app_tier", settings, log_path=tmp / f"rr-worker{w}.log", IMGREC_INSTANCE_ID=f"i-rr{w}")
             for w in range(workers)]
    try:
        procs += _web_procs(settings, n_procs, tmp, "waitress", ports)
        bases = [f"http://127.0.0.1:{p}" for p in ports]
        images = {s: jpeg_bytes(s) for s in range(DISTINCT_IMAGES)}
        truth = {}
        for seed, data in images.items():  # each image's label, one by one (also warms the worker up)
            resp, _ = post(bases[0], f"rr_truth_{seed}.jpg", data)
            truth[seed] = resp.text.split(":", 1)[1]

        def one(i: int):
            seed = i % DISTINCT_IMAGES
            try:
                resp, ms = post(bases[i % n_procs], f"rr_{i:03d}.jpg", images[seed])
            except requests.RequestException as err:
                return i, None, str(err), 0.0
            return i, resp.status_code, resp.text, ms

        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(one, range(total)))
        wall = time.perf_counter() - started
        right = [r for r in results if r[1] == 200 and r[2] == f"rr_{r[0]:03d}:{truth[r[0] % DISTINCT_IMAGES]}"]
        stolen = [r for r in results if r[1] == 200 and r not in right and not r[2].startswith(f"rr_{r[0]:03d}:")]
        other = total - len(right) - len(stolen)
        lat = [r[3] for r in right]
        print(f"  {n_procs} web process{'es' if n_procs > 1 else '  '} ({'round-robin' if n_procs > 1 else 'one port'}):"
              f" {len(right)}/{total} right, {len(stolen)} stolen, {other} other errors; "
              f"p50 {pct(lat, 50):.0f} ms p95 {pct(lat, 95):.0f} ms; {total / wall:.1f} req/s")
    finally:
        for proc in reversed(procs):
            stop_process(proc)


def scaleout(args) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench_web_scaleout_"))
    with MotoServer(port=free_port()) as moto:
        print(f"web-tier capacity: POST /api/jobs from {args.clients} concurrent clients x {args.per_client}, "
              f"no worker (logs in {tmp})")
        for n in (1, 2):
            capacity(moto, tmp, n, args.clients, args.per_client, args.server)
        if args.sync:
            print(f"{args.sync} synchronous POST / ({args.workers} workers, {args.sync_concurrency} concurrent clients)")
            for n in (1, 2):
                round_robin(moto, tmp, n, args.sync, args.workers, args.sync_concurrency)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--light", type=int, default=40, help="sequential requests at light load")
    parser.add_argument("--concurrent", type=int, default=200, help="simultaneous requests")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--scaleout", action="store_true", help="measure 1 vs 2 web processes instead")
    parser.add_argument("--clients", type=int, default=200, help="scale-out: concurrent intake clients")
    parser.add_argument("--per-client", type=int, default=5, help="scale-out: POST /api/jobs per client")
    parser.add_argument("--sync", type=int, default=400, help="scale-out: synchronous POST / round-robin")
    parser.add_argument("--sync-concurrency", type=int, default=50, help="scale-out: clients for --sync")
    parser.add_argument("--server", choices=("waitress", "gunicorn"), default="waitress",
                        help="scale-out capacity: the server that runs the web processes")
    args = parser.parse_args(argv)
    if args.scaleout:
        return scaleout(args)
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
