"""The run's summary (the course's exact lines first, for grading scripts) and the per-request CSV."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path

from workload.model import RequestRecord, RunResult, WorkloadError

CSV_COLUMNS = ("index", "name", "status", "error_kind", "http_status", "label", "expected", "correct",
               "latency_s", "start_s", "end_s", "scheduled_s", "error")


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), ``q`` in 0..100."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def error_counts(records: list[RequestRecord]) -> dict[str, int]:
    counts = Counter(r.error_kind for r in records if not r.ok)
    return dict(sorted(counts.items()))


def summary_lines(result: RunResult) -> list[str]:
    lines = [
        "+++++ Test Result Statistics +++++",
        f"Total number of requests: {result.total}",
        f"Total number of requests completed successfully: {result.succeeded}",
        f"Total number of failed requests: {result.failed}",
        f"Total number of correct predictions : {result.correct}",
        f"Total number of wrong predictions: {result.wrong}",
        f"Total response time: {result.wall_s:.2f}",
        f"Throughput: {result.throughput:.2f} requests/s",
    ]
    latencies = [r.latency_s for r in result.records if r.ok]
    if latencies:
        figures = " ".join(f"{name} {percentile(latencies, q):.3f}"
                           for name, q in (("min", 0), ("p50", 50), ("p95", 95), ("p99", 99), ("max", 100)))
        lines.append(f"Latency (s, successful requests): {figures}")
    else:
        lines.append("Latency (s, successful requests): n/a")
    errors = error_counts(result.records)
    lines.append("Errors by kind: " + (" ".join(f"{k}={v}" for k, v in errors.items()) if errors else "none"))
    if result.config.prediction_file is None:
        lines.append("Correctness: not judged (no --prediction_file)")
    elif result.unjudged:
        lines.append(f"Answers for images not in the prediction file: {result.unjudged}")
    if result.config.rate is not None:
        lines.append(f"Arrivals: Poisson, {result.config.rate:g} requests/s offered")
    fleet = result.fleet
    if fleet is not None:
        if fleet.peak_t_s is None:
            lines.append("Fleet: no instance readings")
        else:
            lines.append(f"Fleet peak: {fleet.peak} running app-tier instances at {fleet.peak_t_s:.1f} s")
            if fleet.peak <= fleet.min_instances:
                lines.append(f"Fleet back at min ({fleet.min_instances}): never went above it")
            elif fleet.back_at_min_t_s is None:
                lines.append(f"Fleet back at min ({fleet.min_instances}): not within the watch")
            else:
                lines.append(f"Fleet back at min ({fleet.min_instances}): at {fleet.back_at_min_t_s:.1f} s")
        rest = "not within the watch" if fleet.rested_t_s is None else f"at {fleet.rested_t_s:.1f} s"
        lines.append(f"System at rest (request queue empty, fleet at min): {rest}")
    if result.skipped_files:
        lines.append(f"Skipped non-image files: {len(result.skipped_files)}")
    if result.interrupted:
        lines.append("Run interrupted: unsent requests count as failed (cancelled)")
    lines.append("++++++++++++++++++++++++++++++++++++")
    return lines


def summary_text(result: RunResult) -> str:
    return "\n".join(summary_lines(result))


def write_csv(records: list[RequestRecord], path: Path | str) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_COLUMNS)
            for r in records:
                writer.writerow([
                    r.index, r.name, r.status.value, r.error_kind, r.http_status or "", r.label or "",
                    r.expected or "", "" if r.correct is None else str(r.correct).lower(),
                    f"{r.latency_s:.4f}", f"{r.start_s:.4f}", f"{r.end_s:.4f}",
                    "" if r.scheduled_s is None else f"{r.scheduled_s:.4f}", r.error,
                ])
    except OSError as err:
        raise WorkloadError(f"cannot write --csv {path}: {err.strerror}") from None
    return path
