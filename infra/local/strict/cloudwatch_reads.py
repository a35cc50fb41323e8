"""Plumbing shared by the CloudWatch behaviours: what a PutMetricData stores, what a GetMetricData or
GetMetricStatistics call may see.

moto's ``put_metric_data`` is wrapped once, here: each of the *puts* the behaviours registered is then called
with ``(namespace, metric_data, new)``, ``new`` being the moto data that put added, and may mark them (when a
datum becomes readable, the resolution it was put with).

moto answers both reads from ``CloudWatchBackend.get_all_metrics()``. While one of them runs, this module
hands that list through the *views* the behaviours registered (ingest delay, storage resolution), each a
function ``(data, read) -> data`` that may drop a datum or return a copy with another timestamp; moto's
bucketing and statistics then run unchanged on what is left. ``checks`` see the read first and may raise a
CloudWatch error or return a rounded StartTime.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

_local = threading.local()
PUTS: list[Callable] = []
VIEWS: list[Callable] = []
CHECKS: list[Callable] = []
_installed = False


@dataclass(frozen=True)
class Read:
    start: datetime
    end: datetime
    periods: tuple[int, ...]  # every MetricStat's period (one for GetMetricStatistics)
    names: tuple[str, ...]  # namespaces and dimension values the read names: what scopes match

    @property
    def shortest_period(self) -> int:
        return min(self.periods) if self.periods else 60


def _dims(dimensions) -> list[str]:
    return [d.get("Value") or d.get("value") for d in dimensions or () if isinstance(d, dict)]


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.cloudwatch.models import CloudWatchBackend

    put_metric_data = CloudWatchBackend.put_metric_data
    get_all_metrics = CloudWatchBackend.get_all_metrics
    get_metric_data = CloudWatchBackend.get_metric_data
    get_metric_statistics = CloudWatchBackend.get_metric_statistics

    put_lock = threading.Lock()

    def put(self, namespace, metric_data):
        with put_lock:  # moto appends: what this put added is the tail, if no other put runs beside it
            before = len(self.metric_data)
            put_metric_data(self, namespace, metric_data)
            new = self.metric_data[before:]
        for hook in PUTS:
            hook(namespace, metric_data, new)

    def checked(read: Read) -> Read:
        for check in CHECKS:
            read = check(read) or read
        return read

    def all_metrics_seen(self):
        data = get_all_metrics(self)
        read = getattr(_local, "read", None)
        if read is None:
            return data
        for view in VIEWS:
            data = view(data, read)
        return data

    def metric_data(self, queries, start_time, end_time, scan_by="TimestampAscending"):
        stats = [q["MetricStat"] for q in queries if "MetricStat" in q]
        names = []
        for stat in stats:
            names += [stat["Metric"].get("Namespace"), *_dims(stat["Metric"].get("Dimensions"))]
        read = checked(Read(start_time, end_time, tuple(int(s["Period"]) for s in stats), tuple(n for n in names if n)))
        _local.read = read
        try:
            return get_metric_data(self, queries, read.start, read.end, scan_by)
        finally:
            _local.read = None

    def metric_statistics(self, namespace, metric_name, start_time, end_time, period, stats, dimensions, unit=None):
        read = checked(Read(start_time, end_time, (int(period),), tuple(n for n in (namespace, *_dims(dimensions)) if n)))
        _local.read = read
        try:
            return get_metric_statistics(self, namespace, metric_name, read.start, read.end, period, stats,
                                         dimensions, unit)
        finally:
            _local.read = None

    CloudWatchBackend.put_metric_data = put
    CloudWatchBackend.get_all_metrics = all_metrics_seen
    CloudWatchBackend.get_metric_data = metric_data
    CloudWatchBackend.get_metric_statistics = metric_statistics
    _installed = True


def with_start(read: Read, start: datetime) -> Read:
    return replace(read, start=start)
