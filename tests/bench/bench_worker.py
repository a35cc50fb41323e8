"""One worker process fed from a pre-filled queue vs the bare model, on a local moto server.

    .venv/bin/python tests/bench/bench_worker.py [--images 200] [--dataset DIR] [--model efficientnet_lite0]
        [--runtime torch|onnx]

The bare rate is torch's; for the onnx worker against bare onnxruntime on one core see
``bench_runtime.py``, which reuses this module's pieces.

Prints the bare model's images/s (decode + preprocess + inference, one thread, same
images, same run), the worker's images/s from its first receive to its last delete
(targets: >= 0.9x the bare rate), its peak RSS (target <= 600 MB), and how much the
pipeline overlapped: the sum of per-batch fetch + inference + write times is what a
worker doing the stages one after another would have needed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app_tier.models import load_classifier  # noqa: E402
from app_tier.preprocess import decode_image  # noqa: E402
from infra.cfn.stack import provision  # noqa: E402
from infra.clients import Clients  # noqa: E402
from infra.config import Settings  # noqa: E402
from infra.local.moto_server import MotoServer, free_port  # noqa: E402
from infra.messages import ImageRequest  # noqa: E402
from infra.observe import queue_url  # noqa: E402
from tests.helpers import child_env  # noqa: E402
from tests.images import jpeg_bytes  # noqa: E402

DEFAULT_DATASET = ROOT.parent / "shared" / "datasets" / "imagenet-sample-200"
SUMMARY = re.compile(r"answered (\d+) requests in ([\d.]+) s")
BATCH = re.compile(r"size=(\d+) .*fetch=(\d+)ms infer=(\d+)ms write=(\d+)ms")


def load_images(dataset: Path, count: int) -> list[tuple[str, bytes]]:
    files = sorted(dataset.glob("*.JPEG")) if dataset.is_dir() else []
    if files:
        return [(f"img_{i:03d}.jpg", files[i % len(files)].read_bytes()) for i in range(count)]
    print(f"(dataset {dataset} absent: using generated images)")
    return [(f"img_{i:03d}.jpg", jpeg_bytes(i, size=(500, 375))) for i in range(count)]


def bare_rate(model: str, images: list[tuple[str, bytes]], batch: int) -> tuple[float, float]:
    torch.set_num_threads(1)
    clf = load_classifier(model, device="cpu", threads=1)
    clf.warm_up()
    infer_s = 0.0
    started = time.perf_counter()
    for i in range(0, len(images), batch):
        tensor = clf.preprocess([decode_image(data) for _, data in images[i:i + batch]])
        t = time.perf_counter()
        clf.infer(tensor)
        infer_s += time.perf_counter() - t
    return len(images) / (time.perf_counter() - started), len(images) / infer_s


def torch_floor() -> float:
    """RSS (MB) of a Python that only imports torch: the floor this torch build sets for any worker."""
    code = "import torch, psutil; print(psutil.Process().memory_info().rss)"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout) / 2**20


@dataclass
class WorkerRun:
    code: int
    answered: int = 0
    busy_s: float = 0.0
    first_s: float | None = None  # process start -> first batch answered
    peak_rss: int = 0
    peak_uss: int = 0
    peak_pss: int = 0
    cpu_s: float = 0.0  # the worker's own CPU seconds from "ready" to its exit: other load on the core adds none
    text: str = ""

    @property
    def rate(self) -> float:
        return self.answered / self.busy_s if self.busy_s else 0.0

    @property
    def cpu_rate(self) -> float:
        """Images per CPU second of the worker process (imports and model load excluded)."""
        return self.answered / self.cpu_s if self.cpu_s else 0.0


def upload_images(settings: Settings, clients: Clients, images: list[tuple[str, bytes]]) -> list[ImageRequest]:
    requests = []
    for name, data in images:
        key = f"uploads/{name}"
        version = clients.s3.put_object(Bucket=settings.in_bucket, Key=key, Body=data)["VersionId"]
        requests.append(ImageRequest.new(key, version, name))
    return requests


def fill_queue(settings: Settings, clients: Clients, requests: list[ImageRequest]) -> None:
    url = queue_url(clients.sqs, settings.req_queue)
    for start in range(0, len(requests), 10):
        entries = [{"Id": str(n), "MessageBody": r.to_json()} for n, r in enumerate(requests[start:start + 10])]
        clients.sqs.send_message_batch(QueueUrl=url, Entries=entries)


def run_worker(settings: Settings, count: int, log_path: Path, *, cpu: int | None = None,
               **env: str) -> WorkerRun:
    """``python -m app_tier --max-messages count`` (on core ``cpu`` if given): its rate, memory and first answer."""
    prefix = ["taskset", "-c", str(cpu)] if cpu is not None else []
    with log_path.open("wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen([*prefix, sys.executable, "-m", "app_tier", "--max-messages", str(count)],
                                cwd=ROOT, env=child_env(settings, **env), stdout=log, stderr=subprocess.STDOUT)
    run = WorkerRun(code=-1)
    ps = psutil.Process(proc.pid)
    tick = 0
    cpu_ready = cpu_last = None
    try:
        while proc.poll() is None:
            try:
                times = ps.cpu_times()
                cpu_last = times.user + times.system
                if cpu_ready is None and tick % 2 == 0 and b" ready: model" in log_path.read_bytes():
                    cpu_ready = cpu_last
                run.peak_rss = max(run.peak_rss, ps.memory_info().rss)
                if tick % 40 == 20:  # reading smaps costs CPU: only now and then
                    mem = ps.memory_full_info()
                    run.peak_uss, run.peak_pss = max(run.peak_uss, mem.uss), max(run.peak_pss, mem.pss)
            except psutil.NoSuchProcess:
                break
            if run.first_s is None and tick % 2 == 0 and b" size=" in log_path.read_bytes():
                run.first_s = time.monotonic() - started
            tick += 1
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    run.code, run.text = proc.returncode, log_path.read_text()
    if cpu_ready is not None and cpu_last is not None:
        run.cpu_s = cpu_last - cpu_ready
    found = SUMMARY.search(run.text)
    if found:
        run.answered, run.busy_s = int(found.group(1)), float(found.group(2))
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--runtime", default="torch", choices=("torch", "onnx"))
    parser.add_argument("--log", type=Path, default=Path("/tmp/bench_worker.log"))
    args = parser.parse_args()
    images = load_images(args.dataset, args.images)

    with MotoServer(port=free_port()) as moto:
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        settings = Settings.from_env({}, endpoint_url=moto.url, prefix=prefix, receive_wait_s=1, model=args.model,
                                     torch_threads=1, instance_id="bench-worker", visibility_timeout_s=60,
                                     runtime=args.runtime)
        clients = Clients(settings)
        provision(settings, clients)
        fill_queue(settings, clients, upload_images(settings, clients, images))
        print(f"queue pre-filled with {len(images)} requests ({sum(len(d) for _, d in images) / 1e6:.1f} MB of JPEG)")

        bare, infer_only = bare_rate(args.model, images, settings.worker_batch_size)
        print(f"bare model  {bare:6.1f} images/s (decode+preprocess+infer, 1 thread)   inference alone {infer_only:6.1f}")
        run = run_worker(settings, len(images), args.log)
    if run.code != 0 or not run.answered:
        print(f"worker failed (exit {run.code}); see {args.log}")
        return 1
    stages = [tuple(map(int, m.groups())) for m in BATCH.finditer(run.text)]
    serial_s = sum(f + i + w for _, f, i, w in stages) / 1000
    print(f"worker      {run.rate:6.1f} images/s ({run.answered} answered in {run.busy_s:.1f} s, {len(stages)} "
          f"batches) = {run.rate / bare:.2f}x bare (target >= 0.9x)")
    print(f"worker peak RSS {run.peak_rss / 2**20:.0f} MB (target <= 600 MB); peak USS {run.peak_uss / 2**20:.0f} MB, "
          f"PSS {run.peak_pss / 2**20:.0f} MB; `import torch` alone: RSS {torch_floor():.0f} MB")
    if stages:
        print(f"stages one after another would take {serial_s:.1f} s (fetch {sum(s[1] for s in stages) / 1000:.1f}"
              f" + infer {sum(s[2] for s in stages) / 1000:.1f} + write {sum(s[3] for s in stages) / 1000:.1f});"
              f" pipelined {run.busy_s:.1f} s")
    print(f"worker log: {args.log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
