"""Worker counters published to CloudWatch, aggregated so a busy worker makes one call every few seconds.

Each flush sends every metric twice: with ``Stack=<prefix>`` (the fleet view the
controller and dashboard read) and with ``Stack`` plus ``InstanceId`` (per instance).
Timings go as statistic sets (count, sum, min, max). Publishing is best effort: a
CloudWatch failure is logged and the numbers dropped; it never stops the worker.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from infra.metrics import WORKER_COUNTS, WORKER_TIMINGS, instance_dimensions, stack_dimensions

log = logging.getLogger(__name__)

DEFAULT_FLUSH_S = 5.0
COUNTS = WORKER_COUNTS
TIMINGS = WORKER_TIMINGS


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
    counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, _Stats] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not any(self.counts.values()) and not self.timings


def metric_data(snap: Snapshot, stack: str, instance_id: str, now: datetime) -> list[dict]:
    """The put_metric_data entries for one flush (pure, so it can be checked without AWS)."""
    dims = (stack_dimensions(stack), instance_dimensions(stack, instance_id))
    out = []
    for dim in dims:
        for name in COUNTS:
            out.append({"MetricName": str(name), "Dimensions": dim, "Timestamp": now,
                        "Value": float(snap.counts.get(name, 0)), "Unit": "Count"})
        for name, st in snap.timings.items():
            out.append({"MetricName": str(name), "Dimensions": dim, "Timestamp": now, "Unit": "Milliseconds",
                        "StatisticValues": {"SampleCount": float(st.count), "Sum": st.total,
                                            "Minimum": st.low, "Maximum": st.high}})
    return out


class Metrics:
    """Thread-safe accumulator with a background flusher (start/close)."""

    def __init__(self, cloudwatch, namespace: str, stack: str, instance_id: str, *, flush_s: float = DEFAULT_FLUSH_S):
        self._cw = cloudwatch
        self.namespace, self.stack, self.instance_id = namespace, stack, instance_id
        self._flush_s = flush_s
        self._lock = threading.Lock()
        self._snap = Snapshot()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.totals = {name: 0 for name in COUNTS}  # since start, for the exit summary

    def count(self, name: str, n: int = 1) -> None:
        if n <= 0:
            return
        with self._lock:
            self._snap.counts[name] = self._snap.counts.get(name, 0) + n
            self.totals[name] = self.totals.get(name, 0) + n

    def timing(self, name: str, ms: float) -> None:
        with self._lock:
            self._snap.timings.setdefault(name, _Stats()).add(ms)

    def start(self) -> Metrics:
        self._thread = threading.Thread(target=self._loop, name="metrics", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._flush_s + 5)
        self.flush()

    def flush(self) -> None:
        with self._lock:
            snap, self._snap = self._snap, Snapshot()
        if snap.empty or self._cw is None:
            return
        data = metric_data(snap, self.stack, self.instance_id, datetime.now(UTC))
        try:
            for i in range(0, len(data), 1000):
                self._cw.put_metric_data(Namespace=self.namespace, MetricData=data[i:i + 1000])
        except Exception as err:  # noqa: BLE001 - metrics are best effort by design
            log.warning("put_metric_data to %s failed for instance %s (%s); dropped %d values",
                        self.namespace, self.instance_id, err, len(data))

    def _loop(self) -> None:
        while not self._stop.wait(self._flush_s):
            self.flush()
