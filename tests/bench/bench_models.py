"""Top-1/top-5 accuracy and images/s of every registered model available offline.

    .venv/bin/python tests/bench/bench_models.py [--dataset ../shared/datasets/imagenet-sample-200]
        [--threads 1] [--batch 10] [--models efficientnet_lite0,resnet18]

Models whose weights are not on this machine are skipped (downloads are off), with
the missing file named. images/s is given twice: the whole path a worker runs per
image (decode + preprocess + inference) and inference alone.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app_tier.models import MODELS, ModelUnavailable, load_classifier  # noqa: E402
from app_tier.preprocess import decode_image  # noqa: E402

DEFAULT_DATASET = ROOT.parent / "shared" / "datasets" / "imagenet-sample-200"


def evaluate(name: str, files: list[Path], labels: list[str], batch: int, threads: int) -> dict:
    clf = load_classifier(name, device="cpu", threads=threads, download=False)
    clf.warm_up()
    raw = [f.read_bytes() for f in files]
    top1 = top5 = 0
    decode_s = prep_s = infer_s = 0.0
    for start in range(0, len(raw), batch):
        t0 = time.perf_counter()
        images = [decode_image(b) for b in raw[start:start + batch]]
        t1 = time.perf_counter()
        tensor = clf.preprocess(images)
        t2 = time.perf_counter()
        logits = clf.logits(tensor)
        t3 = time.perf_counter()
        decode_s, prep_s, infer_s = decode_s + t1 - t0, prep_s + t2 - t1, infer_s + t3 - t2
        best5 = torch.topk(logits, 5, dim=1).indices.tolist()
        for want, idx in zip(labels[start:start + batch], best5, strict=True):
            names = [clf.categories[i] for i in idx]
            top1 += names[0] == want
            top5 += want in names
    n = len(raw)
    return {"top1": top1 / n, "top5": top5 / n, "n": n, "e2e": n / (decode_s + prep_s + infer_s),
            "infer": n / infer_s, "decode_ms": 1000 * decode_s / n, "prep_ms": 1000 * prep_s / n}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    labels_csv = args.dataset / "labels.csv"
    if not labels_csv.is_file():
        print(f"dataset not found: {labels_csv}", file=sys.stderr)
        return 2
    rows = list(csv.DictReader(labels_csv.open()))
    files = [args.dataset / r["file"] for r in rows]
    labels = [r["label"] for r in rows]
    print(f"dataset {args.dataset.name}: {len(rows)} images; torch {torch.__version__}, {args.threads} thread(s), "
          f"batch {args.batch}, cpu")
    print(f"{'model':<20} {'top-1':>7} {'top-5':>7} {'img/s e2e':>10} {'img/s infer':>12} {'decode ms':>10} "
          f"{'prep ms':>8}")
    for name in args.models.split(","):
        try:
            r = evaluate(name, files, labels, args.batch, args.threads)
        except ModelUnavailable as err:
            print(f"{name:<20} skipped: {err}")
            continue
        print(f"{name:<20} {r['top1']:>7.1%} {r['top5']:>7.1%} {r['e2e']:>10.1f} {r['infer']:>12.1f} "
              f"{r['decode_ms']:>10.1f} {r['prep_ms']:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
