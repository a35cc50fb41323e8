"""One reading of everything the dashboard shows, from the sources a grader uses.

SQS attributes (through ``infra.observe.queue_depth``), ``describe_instances``
(``infra.observe.app_instances``) and CloudWatch metrics in
``settings.metrics_namespace`` with dimension ``Stack=<prefix>``. Each source is
read on its own: when one fails its fields are ``None`` (a gap on the charts) and
its error is reported, and it is retried after a growing back-off so a dead
endpoint is neither hammered nor logged every second.

Percentiles: workers publish latencies as statistic sets (count, sum, min, max
per 5-s flush), from which CloudWatch itself computes no percentiles, and moto
(5.2.5) answers percentile statistics with HTTP 500. So p50/p95 are approximated
from 1-second buckets (``approx_percentiles``); on real AWS the native ``p50``/``p95``
are asked for too and win when they hold data (raw values published one by one).
The reading says which (``latency_mode``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from botocore.exceptions import BotoCoreError, ClientError

from infra.config import Settings
from infra.metrics import Metric, metric_query
from infra.observe import LEAVING_STATES, Instance, InstanceState, app_instances, count_by_state, queue_depth, queue_url

log = logging.getLogger(__name__)

IMAGES_PROCESSED = Metric.IMAGES_PROCESSED
IMAGE_ERRORS = Metric.IMAGE_ERRORS
END_TO_END_MS = Metric.END_TO_END_MS
DESIRED_INSTANCES = Metric.DESIRED_INSTANCES
CAPACITY_ERRORS = Metric.CAPACITY_ERRORS
THROTTLED_CALLS = Metric.THROTTLED_CALLS

RATE_WINDOW_S = 10  # images/s and errors/s are averaged over this many seconds
LATENCY_WINDOW_S = 30  # p50/p95 cover the samples of this many seconds
METRIC_LAG_S = 1  # leave the newest second out: workers may still be publishing into it
PER_INSTANCE_EVERY_S = 5.0  # "images done" per instance is refreshed this often
MAX_BACKOFF_S = 15.0

SERIES = (
    "req_visible", "req_in_flight", "resp_visible", "dlq_visible",
    "inst_pending", "inst_running", "inst_stopping", "inst_stopped", "desired",
    "images_per_s", "errors_per_s", "latency_p50_ms", "latency_p95_ms", "launch_refusals",
)
SOURCES = ("sqs", "ec2", "cloudwatch")


@dataclass
class Reading:
    """One sample: a value (or None) per series, the instance table, and per-source errors."""

    t: float
    values: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(SERIES))
    instances: list[dict] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    latency_mode: str = "approx"


# ---------------------------------------------------------------- pure helpers

def weighted_percentile(pairs: list[tuple[float, float]], q: float) -> float | None:
    """The ``q`` quantile (0-1) of values given as (value, weight) pairs; None when there are none."""
    pairs = sorted((v, w) for v, w in pairs if w > 0)
    total = sum(w for _, w in pairs)
    if not total:
        return None
    rank, seen = q * total, 0.0
    for value, weight in pairs:
        seen += weight
        if seen >= rank:
            return value
    return pairs[-1][0]


def approx_percentiles(buckets: list[tuple[float, float, float]]) -> tuple[float | None, float | None]:
    """p50/p95 from (average, maximum, count) 1-second buckets when the service has no percentiles.

    p50 is the sample-weighted median of the bucket averages, p95 the weighted 95th
    percentile of the bucket maxima: exact when each second holds one sample, and
    biased upward (never hiding a slow second) when seconds hold several.
    """
    p50 = weighted_percentile([(avg, n) for avg, _, n in buckets], 0.50)
    p95 = weighted_percentile([(mx, n) for _, mx, n in buckets], 0.95)
    return p50, p95


def state_counts(instances: list[Instance]) -> dict[str, int]:
    """The chart's four states; shutting-down counts as stopping (both are on their way out)."""
    c = count_by_state(instances)
    return {
        "inst_pending": c[InstanceState.PENDING],
        "inst_running": c[InstanceState.RUNNING],
        "inst_stopping": sum(c[s] for s in LEAVING_STATES),
        "inst_stopped": c[InstanceState.STOPPED],
    }


def instance_rows(instances: list[Instance], done: dict[str, float], now: float) -> list[dict]:
    return [
        {"id": i.id, "name": i.name, "state": i.state.value, "uptime_s": max(0, round(now - i.launch_time)),
         "images_done": int(done[i.id]) if i.id in done else None, "health": i.health}
        for i in instances
    ]


def live_queries(settings: Settings, native_percentiles: bool) -> list[dict]:
    """The per-tick CloudWatch queries, 1-second buckets over the latency window."""
    ns, prefix = settings.metrics_namespace, settings.prefix
    queries = [
        metric_query("ip", ns, prefix, IMAGES_PROCESSED, "Sum", 1),
        metric_query("ie", ns, prefix, IMAGE_ERRORS, "Sum", 1),
        metric_query("de", ns, prefix, DESIRED_INSTANCES, "Maximum", 1),
        metric_query("lc", ns, prefix, CAPACITY_ERRORS, "Sum", 1),
        metric_query("lt", ns, prefix, THROTTLED_CALLS, "Sum", 1),
    ]
    queries += [metric_query("la", ns, prefix, END_TO_END_MS, "Average", 1),
                metric_query("lx", ns, prefix, END_TO_END_MS, "Maximum", 1),
                metric_query("ln", ns, prefix, END_TO_END_MS, "SampleCount", 1)]
    if native_percentiles:
        queries += [metric_query("p50", ns, prefix, END_TO_END_MS, "p50", LATENCY_WINDOW_S),
                    metric_query("p95", ns, prefix, END_TO_END_MS, "p95", LATENCY_WINDOW_S)]
    return queries


def summarize_live(results: dict[str, list[tuple[float, float]]], end: float) -> tuple[dict[str, float | None], str]:
    """Series values from query results given as id -> [(epoch seconds, value)], and the latency mode."""
    def recent_sum(qid: str) -> float:
        return sum(v for ts, v in results.get(qid, []) if ts >= end - RATE_WINDOW_S)

    out: dict[str, float | None] = {
        "images_per_s": round(recent_sum("ip") / RATE_WINDOW_S, 3),
        "errors_per_s": round(recent_sum("ie") / RATE_WINDOW_S, 3),
    }
    desired = results.get("de", [])
    out["desired"] = max(desired)[1] if desired else None
    # RunInstances refused for capacity or throttled (the controller backs off): over the whole window.
    out["launch_refusals"] = sum(v for qid in ("lc", "lt") for _, v in results.get(qid, []))
    p50, p95 = results.get("p50"), results.get("p95")
    if p50 and p95:
        out["latency_p50_ms"], out["latency_p95_ms"] = p50[-1][1], p95[-1][1]
        return out, "native"
    avg, mx, n = (dict(results.get(k, [])) for k in ("la", "lx", "ln"))
    buckets = [(avg[ts], mx.get(ts, avg[ts]), n.get(ts, 1.0)) for ts in avg]
    out["latency_p50_ms"], out["latency_p95_ms"] = approx_percentiles(buckets)
    return out, "approx"


def history_period(age_s: float) -> int:
    """A CloudWatch period covering ``age_s`` in one bucket, of a length CloudWatch accepts."""
    unit = 3600 if age_s > 15 * 86400 else 60
    return max(unit, math.ceil(age_s / unit) * unit)


def _results(resp: dict) -> dict[str, list[tuple[float, float]]]:
    return {r["Id"]: sorted(zip((t.timestamp() for t in r["Timestamps"]), r["Values"], strict=True))
            for r in resp["MetricDataResults"]}


def _short(err: Exception) -> str:
    if isinstance(err, ClientError):
        e = err.response.get("Error", {})
        return f"{e.get('Code', 'error')}: {e.get('Message', '')}"[:200]
    return f"{type(err).__name__}: {err}"[:200]


# ---------------------------------------------------------------- actuation (reads only)

class MetricsSource:
    """Reads the three sources; shared by one sampler thread, so it needs no locking."""

    def __init__(self, settings: Settings, clients, *, clock=time.time):
        self.settings = settings
        self.clients = clients
        self.clock = clock
        # moto answers a percentile query with HTTP 500 (and retries make that slow): ask real AWS only.
        self.native_percentiles = not settings.is_local
        self.latency_mode = "approx"
        self._urls: dict[str, str] = {}
        self._failures: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        self._last_error: dict[str, str] = {}
        self._done: dict[str, float] = {}
        self._done_at = 0.0
        self._instances: list[Instance] = []

    def read(self) -> Reading:
        now = self.clock()
        reading = Reading(t=round(now, 3))
        for source, fn in (("sqs", self._read_sqs), ("ec2", self._read_ec2), ("cloudwatch", self._read_cloudwatch)):
            if now < self._retry_at.get(source, 0.0):
                reading.errors[source] = self._last_error.get(source, "unavailable") + " (retrying)"
                continue
            try:
                reading.values.update(fn(now))
            except (ClientError, BotoCoreError, OSError, KeyError, ValueError) as err:
                self._failed(source, err, now)
                reading.errors[source] = self._last_error[source]
            else:
                if self._failures.pop(source, 0):
                    log.info("dashboard source %s is back", source)
                self._retry_at.pop(source, None)
        reading.latency_mode = self.latency_mode
        if "ec2" not in reading.errors:
            reading.instances = instance_rows(self._instances, self._done, now)
        return reading

    def _failed(self, source: str, err: Exception, now: float) -> None:
        n = self._failures.get(source, 0) + 1
        self._failures[source] = n
        self._last_error[source] = _short(err)
        self._retry_at[source] = now + min(MAX_BACKOFF_S, 2.0 ** (n - 1))
        if source == "sqs":
            self._urls.clear()  # a queue re-created by `provision` gets a new URL
        if n == 1:
            log.warning("dashboard source %s failed (%s); showing a gap until it answers", source, _short(err))

    def _url(self, name: str) -> str:
        if name not in self._urls:
            self._urls[name] = queue_url(self.clients.sqs, name)
        return self._urls[name]

    def _read_sqs(self, now: float) -> dict[str, float]:
        sqs, s = self.clients.sqs, self.settings
        req = queue_depth(sqs, self._url(s.req_queue))
        resp = queue_depth(sqs, self._url(s.resp_queue))
        dlq = queue_depth(sqs, self._url(s.dlq))
        return {"req_visible": req.visible, "req_in_flight": req.in_flight,
                "resp_visible": resp.visible, "dlq_visible": dlq.visible}

    def _read_ec2(self, now: float) -> dict[str, float]:
        self._instances = app_instances(self.clients.ec2, self.settings)
        return state_counts(self._instances)

    def _read_cloudwatch(self, now: float) -> dict[str, float | None]:
        """Rates, latency and desired count; sets ``latency_mode`` for the reading being built."""
        end = datetime.fromtimestamp(math.floor(now) - METRIC_LAG_S, UTC)
        start = end - timedelta(seconds=LATENCY_WINDOW_S)
        resp = self._get_metric_data(live_queries(self.settings, self.native_percentiles), start, end)
        values, self.latency_mode = summarize_live(_results(resp), end.timestamp())
        if now - self._done_at >= PER_INSTANCE_EVERY_S:
            self._refresh_done(now)
        return values

    def _refresh_done(self, now: float) -> None:
        """Images each live instance has finished, summed over its whole life (one call for all)."""
        self._done_at = now
        if not self._instances:
            self._done = {}
            return
        ids = [i.id for i in self._instances]
        age = now - min(i.launch_time for i in self._instances) + 60
        period = history_period(age)
        end = datetime.fromtimestamp(math.ceil(now), UTC)
        queries = [metric_query(f"i{n}", self.settings.metrics_namespace, self.settings.prefix, IMAGES_PROCESSED,
                                "Sum", period, iid) for n, iid in enumerate(ids)]
        results = _results(self._get_metric_data(queries, end - timedelta(seconds=period), end))
        self._done = {iid: sum(v for _, v in results.get(f"i{n}", [])) for n, iid in enumerate(ids)}

    def _get_metric_data(self, queries: list[dict], start: datetime, end: datetime) -> dict:
        try:
            return self.clients.cloudwatch.get_metric_data(MetricDataQueries=queries, StartTime=start, EndTime=end)
        except ClientError:
            log.error("get_metric_data failed for namespace %s stack %s", self.settings.metrics_namespace,
                      self.settings.prefix)
            raise
