"""`make bench`: the pipeline against the physical limit, from ONE run on this machine.

Prints: the bare model's images/s (decode + preprocess + inference in one process
using every core: what no pipeline can beat here), the whole local stack's
end-to-end images/s for a 200-image burst, their ratio, the median and p95
end-to-end latency at light load (one request at a time) minus the median bare
single-image time (the overhead the pipeline adds), the peak memory of all the
stack's processes together (PSS, so pages the forked workers share count once),
and saves the scaling timeline PNG.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from tqdm import tqdm

DEFAULT_DATASET = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "imagenet-sample-200"
RATIO_GOAL = 0.8
OVERHEAD_GOAL_MS = 30.0


def bare_model(folder: Path, settings, batch: int) -> dict:
    """Images/s of the model alone in the workers' runtime (IMGREC_RUNTIME), all cores, plus the
    single-image time a 1-thread worker sees."""
    from app_tier.preprocess import decode_image
    from app_tier.runtime import load_worker_classifier

    blobs = [p.read_bytes() for p in sorted(folder.glob("*.JPEG"))]
    threads = len(os.sched_getaffinity(0))
    classifier = load_worker_classifier(settings)
    classifier.open(threads)
    classifier.classify([decode_image(blobs[0])])  # first-call allocations
    started = time.perf_counter()
    for i in range(0, len(blobs), batch):
        classifier.classify([decode_image(b) for b in blobs[i : i + batch]])
    all_cores = len(blobs) / (time.perf_counter() - started)

    # What each worker process runs with: one thread (an ORT session's threads are fixed: a new one).
    single = classifier if classifier.runtime == "torch" else load_worker_classifier(settings)
    single.open(1)
    single.classify([decode_image(blobs[0])])
    singles = []
    for blob in blobs[:40]:
        t0 = time.perf_counter()
        single.classify([decode_image(blob)])
        singles.append((time.perf_counter() - t0) * 1000)
    return {"images_per_s": all_cores, "threads": threads, "single_ms_median": statistics.median(singles),
            "count": len(blobs), "runtime": str(classifier.runtime)}


class MemorySampler(threading.Thread):
    """Sums PSS over a process tree every half second; keeps the peak."""

    def __init__(self, processes_fn):
        super().__init__(daemon=True)
        self._fn, self._halt = processes_fn, threading.Event()
        self.peak_mb, self.peak_count = 0.0, 0

    def run(self) -> None:
        while not self._halt.wait(0.5):
            total, count = 0, 0
            for proc in self._fn():
                try:
                    total += proc.memory_full_info().pss
                    count += 1
                except Exception:  # a process that just exited
                    continue
            if total / 2**20 > self.peak_mb:
                self.peak_mb, self.peak_count = total / 2**20, count

    def stop(self) -> None:
        self._halt.set()
        self.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--light", type=int, default=30, help="sequential requests at light load")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    labels = args.dataset / "labels.csv"
    if not labels.exists():
        print(f"bench: dataset not found at {args.dataset} (pass --dataset)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)

    from infra.config import Settings
    from infra.local.stack import StackProcess
    from workload import WorkloadConfig, run_workload, summary_text

    settings = Settings.from_env()
    print(f"1/3 bare model ({settings.model}, {settings.runtime}) on {args.dataset.name} …", flush=True)
    bare = bare_model(args.dataset, settings, batch=10)

    print("2/3 starting the local stack …", flush=True)
    with tempfile.TemporaryDirectory(prefix="imgrec-bench-") as tmp, StackProcess(Path(tmp)) as stack:
        memory = MemorySampler(stack.processes)
        memory.start()
        print(f"    {args.burst}-image burst against {stack.url} …", flush=True)
        burst = run_workload(WorkloadConfig(
            url=stack.url, image_folder=args.dataset, prediction_file=labels, num_request=args.burst,
            repeat=True, monitor=True, monitor_png=args.out / "bench-timeline.png", rest_timeout_s=120,
            settings=stack.settings, progress=True))
        print("3/3 light load: one request at a time …", flush=True)
        light = run_workload(WorkloadConfig(
            url=stack.url, image_folder=args.dataset, prediction_file=labels, num_request=args.light,
            concurrency=1, settings=stack.settings, progress=False))
        memory.stop()

    # End-to-end images/s: answers over the time from the first send to the last answer.
    pipeline = burst.succeeded / max(r.end_s for r in burst.records)
    light_ms = sorted(r.latency_s * 1000 for r in light.records if r.ok)
    median_ms = statistics.median(light_ms)
    p95_ms = light_ms[min(len(light_ms) - 1, int(round(0.95 * (len(light_ms) - 1))))]
    ratio = pipeline / bare["images_per_s"]
    overhead = median_ms - bare["single_ms_median"]
    verdict = lambda ok: "ok" if ok else "MISSED"  # noqa: E731

    report = "\n".join([
        "",
        summary_text(burst).rstrip(),
        "",
        "==== imgrec bench (one run, this machine) ====",
        f"bare model                 {bare['images_per_s']:.1f} images/s ({bare['count']} images, "
        f"{bare['threads']} threads, {bare['runtime']}, decode+preprocess+inference)",
        f"pipeline, {args.burst}-image burst  {pipeline:.1f} images/s end to end "
        f"({burst.succeeded}/{burst.total} ok, {burst.correct} correct)",
        f"ratio                      {ratio:.2f}  (goal >= {RATIO_GOAL}: {verdict(ratio >= RATIO_GOAL)})",
        f"light load latency         median {median_ms:.0f} ms, p95 {p95_ms:.0f} ms ({len(light_ms)} requests)",
        f"bare single image (1 thr)  median {bare['single_ms_median']:.0f} ms",
        f"pipeline overhead          median {overhead:.0f} ms, p95 {p95_ms - bare['single_ms_median']:.0f} ms "
        f"(goal <= {OVERHEAD_GOAL_MS:.0f} ms: {verdict(overhead <= OVERHEAD_GOAL_MS)})",
        f"peak memory, all processes {memory.peak_mb:.0f} MB PSS ({memory.peak_count} processes at the peak)",
        f"fleet                      peak {burst.fleet.peak} at {burst.fleet.peak_t_s or 0:.1f} s, back at min "
        f"at {burst.fleet.back_at_min_t_s or float('nan'):.1f} s",
        f"timeline                   {args.out / 'bench-timeline.png'}",
    ])
    tqdm.write(report)
    (args.out / "bench.txt").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
