"""onnxruntime vs torch for the app tier: agreement, runtime table, standalone worker, one-core worker race.

    .venv/bin/python tests/bench/bench_runtime.py [--dataset ../shared/datasets/imagenet-sample-200] [--cpu 1]

Prints issue 13's targets (figures, not assertions):
- agreement on the shared set: numpy preprocessing vs torchvision's preset (max abs
  diff <= 1e-4), same top-1 as torch on >= 199/200, correct answers (161/200);
- runtime table: 1 thread, batch 1 and batch 10 images/s (inference only), RSS after
  loading, for torch (frozen TorchScript) and onnxruntime (the worker's options);
- standalone ``python -m app_tier`` (onnx): process start -> first batch answered
  (<= 2 s) and peak RSS (<= 300 MB), beside torch's;
- one worker on one core (taskset) fed from a pre-filled queue on a local moto server
  (moto on another core): onnx vs torch images/s on the same images in the same run
  (>= 2.0x), and onnx vs bare onnxruntime decode+preprocess+inference on that core (>= 0.9x).
Each measurement runs in its own process, so RSS and imports are that runtime's alone.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from infra.config import Settings  # noqa: E402

DEFAULT_DATASET = ROOT.parent / "shared" / "datasets" / "imagenet-sample-200"
MODEL = "efficientnet_lite0"


def dataset(folder: Path) -> tuple[list[Path], list[str]]:
    rows = list(csv.DictReader((folder / "labels.csv").open()))
    return [folder / r["file"] for r in rows], [r["label"] for r in rows]


# ------------------------------------------------------------------ children (one runtime per process)

def load(runtime: str, models_dir: str):
    if runtime == "torch":
        from app_tier.models import load_classifier

        clf = load_classifier(MODEL, device="cpu", threads=1)
    else:
        from app_tier.onnx_classifier import load_onnx_classifier

        clf = load_onnx_classifier(Path(models_dir) / MODEL, MODEL)
    clf.open(1)
    return clf


def child_table(runtime: str, models_dir: str, folder: Path) -> dict:
    """Inference-only images/s at batch 1 and 10 (1 thread) and RSS after loading, for one runtime."""
    import psutil

    from app_tier.preprocess import decode_image

    clf = load(runtime, models_dir)
    clf.warm_up()
    rss_loaded = psutil.Process().memory_info().rss  # before the 200 decoded inputs (~120 MB) exist
    files, _ = dataset(folder)
    inputs = clf.preprocess([decode_image(f.read_bytes()) for f in files])
    if runtime == "onnx":
        import numpy as np

        session, name = clf._ensure_session(), clf.manifest.input_name

        def run(batch):
            session.run(None, {name: np.ascontiguousarray(batch)})
    else:
        run = clf.logits
    out = {"rss_mb": rss_loaded / 2**20, "imports_torch": "torch" in sys.modules}
    for batch in (1, 10):
        started = time.perf_counter()
        for i in range(0, len(inputs), batch):
            run(inputs[i:i + batch])
        out[f"b{batch}"] = len(inputs) / (time.perf_counter() - started)
    return out


def child_bare(models_dir: str, folder: Path) -> dict:
    """Bare onnxruntime, no queues: decode + preprocess + inference of every image, 10 at a time."""
    from app_tier.preprocess import decode_image

    clf = load("onnx", models_dir)
    clf.warm_up()
    files, _ = dataset(folder)
    raw = [f.read_bytes() for f in files]
    started, cpu_started = time.perf_counter(), time.process_time()
    for i in range(0, len(raw), 10):
        clf.infer(clf.preprocess([decode_image(b, min_side=2 * clf.input_size) for b in raw[i:i + 10]]))
    return {"rate": len(raw) / (time.perf_counter() - started),
            "cpu_rate": len(raw) / (time.process_time() - cpu_started)}


def child_agreement(models_dir: str, folder: Path) -> dict:
    """numpy vs torchvision preprocessing, and onnx vs torch labels, on every image of the set."""
    import numpy as np
    from torchvision import transforms as T

    from app_tier.preprocess import IMAGENET_MEAN, IMAGENET_STD, decode_image, to_input

    torch_clf, ort_clf = load("torch", models_dir), load("onnx", models_dir)
    preset = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(224), T.ToTensor(),
                        T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    files, labels = dataset(folder)
    diff = logit_diff = 0.0
    same = right_onnx = right_torch = 0
    for f, want in zip(files, labels, strict=True):
        img = decode_image(f.read_bytes())
        diff = max(diff, float(np.abs(to_input(img, 256, 224) - preset(img).numpy()).max()))
        a = ort_clf.logits(ort_clf.preprocess([img]))
        b = torch_clf.logits(torch_clf.preprocess([img])).numpy()
        logit_diff = max(logit_diff, float(np.abs(a - b).max()))
        la, lb = ort_clf.categories[int(a.argmax())], torch_clf.categories[int(b.argmax())]
        same += la == lb
        right_onnx += la == want
        right_torch += lb == want
    return {"n": len(files), "prep_diff": diff, "logit_diff": logit_diff, "same": same, "right_onnx": right_onnx,
            "right_torch": right_torch}


def in_child(kind: str, cpu: int, *args: str) -> dict:
    cmd = ["taskset", "-c", str(cpu), sys.executable, __file__, "--child", kind, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} child failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ parent

def worker_race(args, models_dir: str) -> None:
    from bench_worker import fill_queue, run_worker, upload_images  # same folder

    from infra.cfn.stack import provision
    from infra.clients import Clients
    from infra.local.moto_server import MotoServer, free_port

    files, _ = dataset(args.dataset)
    images = [(f"img_{i:03d}.jpg", f.read_bytes()) for i, f in enumerate(files)]
    other = [c for c in sorted(os.sched_getaffinity(0)) if c != args.cpu] or [args.cpu]
    with MotoServer(port=free_port()) as moto:
        os.sched_setaffinity(moto.proc.pid, other)
        os.sched_setaffinity(0, other)
        settings = Settings.from_env({}, endpoint_url=moto.url, prefix=f"bench{uuid.uuid4().hex[:8]}",
                                     receive_wait_s=1, model=MODEL, torch_threads=1, visibility_timeout_s=120,
                                     model_dir=models_dir)
        clients = Clients(settings)
        provision(settings, clients)
        requests = upload_images(settings, clients, images)
        runs = {}
        for runtime in ("onnx", "torch"):
            fill_queue(settings, clients, requests)
            runs[runtime] = run_worker(settings, len(requests), Path(f"/tmp/bench_runtime_{runtime}.log"),
                                       cpu=args.cpu, IMGREC_RUNTIME=runtime, IMGREC_INSTANCE_ID=f"bench-{runtime}")
    bare_run = in_child("bare", args.cpu, models_dir, str(args.dataset))
    bare, bare_cpu = bare_run["rate"], bare_run["cpu_rate"]
    onnx, torch_ = runs["onnx"], runs["torch"]
    for name, run in runs.items():
        if run.code != 0 or run.answered != len(requests):
            print(f"{name} worker failed (exit {run.code}, {run.answered} answered); see /tmp/bench_runtime_{name}.log")
    print(f"\nstandalone `python -m app_tier`, {len(requests)} images from a pre-filled queue, on core {args.cpu}:")
    print(f"{'runtime':<8} {'start->first batch':>19} {'peak RSS':>9} {'peak USS':>9} {'images/s':>9}")
    for name, run in runs.items():
        first = f"{run.first_s:.2f} s" if run.first_s is not None else "n/a"
        print(f"{name:<8} {first:>19} {run.peak_rss / 2**20:>6.0f} MB {run.peak_uss / 2**20:>6.0f} MB "
              f"{run.rate:>9.1f}")
    print(f"targets: onnx start->first batch answered {onnx.first_s or 0:.2f} s (<= 2 s); "
          f"onnx peak RSS {onnx.peak_rss / 2**20:.0f} MB (<= 300 MB)")
    print(f"one core: onnx worker {onnx.rate:.1f} images/s vs torch worker {torch_.rate:.1f} = "
          f"{onnx.rate / torch_.rate if torch_.rate else 0:.2f}x (target >= 2.0x)")
    print(f"one core: onnx worker {onnx.rate:.1f} images/s vs bare onnxruntime (decode+preprocess+infer) "
          f"{bare:.1f} = {onnx.rate / bare:.2f}x (target >= 0.9x)")
    print("per CPU second of each process (other load on the shared core does not count): "
          f"onnx worker {onnx.cpu_rate:.1f}, torch worker {torch_.cpu_rate:.1f} "
          f"({onnx.cpu_rate / torch_.cpu_rate if torch_.cpu_rate else 0:.2f}x), bare onnxruntime {bare_cpu:.1f} "
          f"(worker {onnx.cpu_rate / bare_cpu:.2f}x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)), help="the core measured on")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = {"table": lambda: child_table(rest[0], rest[1], Path(rest[2])),
                  "bare": lambda: child_bare(rest[0], Path(rest[1])),
                  "agreement": lambda: child_agreement(rest[0], Path(rest[1]))}[kind]()
        print(json.dumps(result))
        return 0
    if not (args.dataset / "labels.csv").is_file():
        print(f"dataset not found: {args.dataset / 'labels.csv'}", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    from app_tier import artifact

    _, manifest = artifact.ensure(settings.models_dir, MODEL)
    models_dir = str(Path(settings.models_dir).resolve())
    import onnxruntime
    import torch

    print(f"model {MODEL}: onnx {manifest.size / 1e6:.1f} MB, opset {manifest.opset}, sha256 {manifest.sha256[:16]}; "
          f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__}; {os.cpu_count()} cores, measured on core "
          f"{args.cpu}")

    agree = in_child("agreement", args.cpu, models_dir, str(args.dataset))
    n = agree["n"]
    print(f"\nagreement on {args.dataset.name} ({n} images):")
    print(f"  numpy preprocessing vs torchvision preset: max abs diff {agree['prep_diff']:.2e} (target <= 1e-4)")
    print(f"  onnx vs torch: same top-1 on {agree['same']}/{n} (target >= {n - 1}/{n}); max logit diff "
          f"{agree['logit_diff']:.1e}; correct: onnx {agree['right_onnx']}/{n}, torch {agree['right_torch']}/{n}")

    print(f"\nruntime table (1 thread, inference only, {n} images, core {args.cpu}):")
    print(f"{'runtime':<36} {'batch 1':>9} {'batch 10':>9} {'RSS after load':>15}")
    for runtime, label in (("torch", "torch, TorchScript frozen"), ("onnx", "onnxruntime (worker's options)")):
        t = in_child("table", args.cpu, runtime, models_dir, str(args.dataset))
        print(f"{label:<36} {t['b1']:>5.1f} /s {t['b10']:>5.1f} /s {t['rss_mb']:>12.0f} MB"
              f"{'' if t['imports_torch'] == (runtime == 'torch') else '  (torch import mismatch!)'}")

    worker_race(args, models_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
