"""Worker counters published to CloudWatch, aggregated so a busy worker makes one call every few seconds.

Each flush sends every metric twice: with ``Stack=<prefix>`` (the fleet view the
controller and dashboard read) and with ``Stack`` plus ``InstanceId`` (per instance).
Counts go as one datum per whole second in which they happened (not per flush), so the
controller's per-second reads see when images were done, not when the worker happened to
publish: its service-rate windows are exact to the second. Timings go as statistic sets
(count, sum, min, max) per flush. Every datum is high resolution (``StorageResolution=1``):
the controller and the live dashboard read periods under a minute, which AWS only serves
for high-resolution data (``infra/metrics.py``).

``start()`` publishes ``WorkerStarts=1`` at once (the controller measures launch-to-ready
from it) and the first image counted is published at once too; after that, every
``flush_s``. Publishing is best effort: a CloudWatch failure is logged and the numbers
dropped; it never stops the worker.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from infra.metrics import HIGH_RESOLUTION, WORKER_COUNTS, WORKER_TIMINGS, Metric, instance_dimensions, stack_dimensions

log = logging.getLogger(__name__)

DEFAULT_FLUSH_S = 5.0
COUNTS = WORKER_COUNTS
TIMINGS = WORKER_TIMINGS
MAX_DATA_PER_CALL = 1000  # PutMetricData's limit


@dataclass
class _Stats:
    count: int = 0
    total: float = 0.0
    low: float = float("inf")
    high: float = float("-inf")

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.low = min(self.low, value)
        self.high = max(self.high, value)


@dataclass
class Snapshot:
    counts: dict[str, dict[int, int]] = field(default_factory=dict)  # metric -> {epoch second: count}
    timings: dict[str, _Stats] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not any(n for per_second in self.counts.values() for n in per_second.values()) and not self.timings

    def add(self, name: str, n: int, second: int) -> None:
        per_second = self.counts.setdefault(name, {})
        per_second[second] = per_second.get(second, 0) + n


def metric_data(snap: Snapshot, stack: str, instance_id: str, now: datetime) -> list[dict]:
    """The put_metric_data entries for one flush (pure, so it can be checked without AWS)."""
    dims = (stack_dimensions(stack), instance_dimensions(stack, instance_id))
    seconds = sorted({s for per_second in snap.counts.values() for s in per_second})
    out = []
    for dim in dims:
        for name in (*COUNTS, *(n for n in snap.counts if n not in COUNTS)):
            per_second = snap.counts.get(name, {})
            # A zero for each worker count in every second that had any count: "nothing failed" is data too.
            for second in seconds or [int(now.timestamp())]:
                out.append({"MetricName": str(name), "Dimensions": dim,
                            "Timestamp": datetime.fromtimestamp(second, UTC),
                            "Value": float(per_second.get(second, 0)), "Unit": "Count",
                            "StorageResolution": HIGH_RESOLUTION})
        for name, st in snap.timings.items():
            out.append({"MetricName": str(name), "Dimensions": dim, "Timestamp": now, "Unit": "Milliseconds",
                        "StatisticValues": {"SampleCount": float(st.count), "Sum": st.total,
                                            "Minimum": st.low, "Maximum": st.high},
                        "StorageResolution": HIGH_RESOLUTION})
    return out


class Metrics:
    """Thread-safe accumulator with a background flusher (start/close)."""

    def __init__(self, cloudwatch, namespace: str, stack: str, instance_id: str, *, flush_s: float = DEFAULT_FLUSH_S,
                 clock=time.time):
        self._cw = cloudwatch
        self.namespace, self.stack, self.instance_id = namespace, stack, instance_id
        self._flush_s = flush_s
        self._clock = clock
        self._lock = threading.Lock()
        self._snap = Snapshot()
        self._stop = threading.Event()
        self._soon = threading.Event()  # flush now rather than at the next tick (start, first image)
        self._first_counted = False
        self._thread: threading.Thread | None = None
        self.totals = {name: 0 for name in COUNTS}  # since start, for the exit summary

    def count(self, name: str, n: int = 1) -> None:
        if n <= 0:
            return
        with self._lock:
            self._snap.add(name, n, math.floor(self._clock()))
            self.totals[name] = self.totals.get(name, 0) + n
            first = not self._first_counted and name == Metric.IMAGES_PROCESSED
            self._first_counted = self._first_counted or first
        if first:
            self._soon.set()

    def timing(self, name: str, ms: float) -> None:
        with self._lock:
            self._snap.timings.setdefault(name, _Stats()).add(ms)

    def start(self) -> Metrics:
        """Say this worker is ready (``WorkerStarts``), published at once, then flush every ``flush_s``."""
        with self._lock:
            self._snap.add(Metric.WORKER_STARTS, 1, math.floor(self._clock()))
        self._soon.set()
        self._thread = threading.Thread(target=self._loop, name="metrics", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._soon.set()
        if self._thread is not None:
            self._thread.join(timeout=self._flush_s + 5)
        self.flush()

    def flush(self) -> None:
        with self._lock:
            snap, self._snap = self._snap, Snapshot()
        if snap.empty or self._cw is None:
            return
        data = metric_data(snap, self.stack, self.instance_id, datetime.fromtimestamp(self._clock(), UTC))
        try:
            for i in range(0, len(data), MAX_DATA_PER_CALL):
                self._cw.put_metric_data(Namespace=self.namespace, MetricData=data[i:i + MAX_DATA_PER_CALL])
        except Exception as err:  # noqa: BLE001 - metrics are best effort by design
            log.warning("put_metric_data to %s failed for instance %s (%s); dropped %d values",
                        self.namespace, self.instance_id, err, len(data))

    def _loop(self) -> None:
        next_at = time.monotonic() + self._flush_s
        while not self._stop.is_set():
            if self._soon.wait(max(0.0, next_at - time.monotonic())):
                self._soon.clear()
            if self._stop.is_set():
                break
            self.flush()
            if time.monotonic() >= next_at:
                next_at = time.monotonic() + self._flush_s
