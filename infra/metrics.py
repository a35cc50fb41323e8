"""The CloudWatch metric contract: every name and dimension set that workers and the controller publish
and that the controller, dashboards and deploy's CloudWatch dashboard read. Defined here once.

Workers publish each metric twice, with ``Stack=<prefix>`` (the fleet view) and with ``Stack`` plus
``InstanceId`` (per instance: scale-in's idle check, the controller's boot-time measurement); the
controller publishes with ``Stack`` only.

Resolution: "Setting this to 1 specifies this metric as a high-resolution metric, so that CloudWatch stores the
metric with sub-minute resolution down to one second. [...] if you do not specify it the default of 60 is used"
(MetricDatum.StorageResolution, https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_MetricDatum.html);
and a read's Period "For metrics with regular resolution [...] must be a multiple of 60. For high-resolution
metrics [...] can be 1, 5, 10, 20, 30, 60, or any multiple of 60"
(https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_MetricStat.html). Everything read at a
period under 60 s (the controller every few seconds, the live dashboard per second) is therefore published
with ``StorageResolution=HIGH_RESOLUTION``; ``read_period`` rounds any wish to a period AWS accepts.
"""

from __future__ import annotations

import math
from enum import StrEnum

STACK_DIMENSION = "Stack"
INSTANCE_DIMENSION = "InstanceId"
HIGH_RESOLUTION = 1  # StorageResolution of every datum we publish
HIGH_RESOLUTION_PERIODS = (1, 5, 10, 20, 30)
HIGH_RESOLUTION_RETENTION_S = 3 * 3600  # "Data points with a period of less than 60 seconds are available for 3 hours"


class Metric(StrEnum):
    # Worker counts (Unit Count) and timings (Unit Milliseconds, as statistic sets).
    IMAGES_PROCESSED = "ImagesProcessed"
    IMAGE_ERRORS = "ImageErrors"
    INFERENCE_MS = "InferenceMs"
    END_TO_END_MS = "EndToEndMs"
    WORKER_STARTS = "WorkerStarts"  # 1 when a worker has loaded its model and starts receiving: boot time
    # Controller gauges (Unit Count).
    BACKLOG = "Backlog"
    BACKLOG_PER_INSTANCE = "BacklogPerInstance"
    DESIRED_INSTANCES = "DesiredInstances"
    RUNNING_INSTANCES = "RunningInstances"
    # Controller counts: RunInstances refused for capacity (InsufficientInstanceCapacity, VcpuLimitExceeded,
    # ...) and EC2 calls throttled (RequestLimitExceeded) after botocore's own retries; the launch backs off.
    CAPACITY_ERRORS = "CapacityErrors"
    THROTTLED_CALLS = "ThrottledCalls"


WORKER_COUNTS = (Metric.IMAGES_PROCESSED, Metric.IMAGE_ERRORS)
WORKER_TIMINGS = (Metric.INFERENCE_MS, Metric.END_TO_END_MS)
WORKER_METRICS = WORKER_COUNTS + WORKER_TIMINGS
CONTROLLER_METRICS = (Metric.BACKLOG, Metric.BACKLOG_PER_INSTANCE, Metric.DESIRED_INSTANCES,
                      Metric.RUNNING_INSTANCES)


def stack_dimensions(prefix: str) -> list[dict[str, str]]:
    return [{"Name": STACK_DIMENSION, "Value": prefix}]


def instance_dimensions(prefix: str, instance_id: str) -> list[dict[str, str]]:
    return [*stack_dimensions(prefix), {"Name": INSTANCE_DIMENSION, "Value": instance_id}]


def metric_query(qid: str, namespace: str, prefix: str, metric: str, stat: str, period: int,
                 instance_id: str | None = None) -> dict:
    """One GetMetricData query: ``stat`` of ``metric`` over ``period`` s for the stack, or for one of its instances."""
    dims = stack_dimensions(prefix) if instance_id is None else instance_dimensions(prefix, instance_id)
    return {"Id": qid, "ReturnData": True, "MetricStat": {
        "Metric": {"Namespace": namespace, "MetricName": str(metric), "Dimensions": dims},
        "Period": period, "Stat": stat}}


def read_period(seconds: float) -> int:
    """The shortest period AWS accepts for high-resolution data that is at least ``seconds`` long (pure)."""
    want = max(1, math.ceil(seconds))
    for period in HIGH_RESOLUTION_PERIODS:
        if want <= period:
            return period
    return math.ceil(want / 60) * 60


def launch_refusals(cloudwatch, namespace: str, prefix: str, seconds: int = 60) -> dict[str, int]:
    """RunInstances refusals the controller published lately: {"capacity": n, "throttled": m} (zeros omitted).
    For status lines; raises what CloudWatch raises."""
    from datetime import UTC, datetime, timedelta

    end = datetime.now(UTC)
    period = max(60, math.ceil(seconds / 60) * 60)
    queries = [metric_query(qid, namespace, prefix, metric, "Sum", period)
               for qid, metric in (("capacity", Metric.CAPACITY_ERRORS), ("throttled", Metric.THROTTLED_CALLS))]
    resp = cloudwatch.get_metric_data(MetricDataQueries=queries, StartTime=end - timedelta(seconds=seconds),
                                      EndTime=end + timedelta(seconds=1))
    out = {r["Id"]: int(sum(r.get("Values", []))) for r in resp.get("MetricDataResults", [])}
    return {k: v for k, v in out.items() if v}
