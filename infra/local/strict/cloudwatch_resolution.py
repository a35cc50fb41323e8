"""CloudWatch keeps each datum at the resolution it was put with, and reads follow AWS's Period and StartTime rules.

AWS (MetricDatum, ``StorageResolution``): "Valid values are 1 and 60. Setting this to 1 specifies this metric
as a high-resolution metric, so that CloudWatch stores the metric with sub-minute resolution down to one
second. Setting this to 60 specifies this metric as a regular-resolution metric, which CloudWatch stores at
1-minute resolution. ... if you do not specify it the default of 60 is used."
https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_MetricDatum.html
(MetricStat, ``Period``): "For metrics with regular resolution, a period can be as short as one minute (60
seconds) and must be a multiple of 60. For high-resolution metrics that are collected at intervals of less
than one minute, the period can be 1, 5, 10, 20, 30, 60, or any multiple of 60." ... "If the StartTime
parameter specifies a time stamp that is greater than 3 hours ago, you must specify the period as follows or
no data points in that time range is returned: Start time between 3 hours and 15 days ago - Use a multiple of
60 seconds (1 minute). ..." https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_MetricStat.html
(GetMetricData, ``StartTime``): "Start time less than 15 days ago - Round down to the nearest whole minute.
... If you set Period to 5, 10, 20, or 30, the start time of your request is rounded down to the nearest time
that corresponds to even 5-, 10-, 20-, or 30-second divisions of a minute."
https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricData.html

moto ignores ``StorageResolution`` and buckets any period from the exact StartTime, so a 10 s read of a
worker's standard-resolution ``ImagesProcessed`` finds data locally and nothing on AWS. Here
(``IMGREC_STRICT_CW_RESOLUTION``, on) a standard-resolution datum is stored at the start of its minute and a
high-resolution one at its second; a period other than 1, 5, 10, 20, 30 or a multiple of 60 is refused
(``InvalidParameterValue``: we pick the harsher side where AWS's text says only "must"); StartTime is rounded
as quoted (whole minutes, or the 5/10/20/30 s division; 5 minutes and 1 hour for older starts); data older
than 3 hours is not returned at periods under a minute.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

from infra.local.strict import cloudwatch_reads
from infra.local.strict.control import StrictState

KEY = "cw_resolution"
STANDARD, HIGH = 60, 1
SUB_MINUTE_PERIODS = (1, 5, 10, 20, 30)
HIGH_RES_RETENTION = timedelta(hours=3)


def valid_period(period: int) -> bool:
    return period in SUB_MINUTE_PERIODS or (period > 0 and period % 60 == 0)


def _now_like(ts: datetime) -> datetime:
    now = datetime.now(UTC)
    return now if ts.tzinfo else now.replace(tzinfo=None)


def round_start(start: datetime, period: int, now: datetime) -> datetime:
    """StartTime as CloudWatch rounds it for a read at ``period``."""
    age = now - start
    if age > timedelta(days=63):
        return start.replace(minute=0, second=0, microsecond=0)
    if age > timedelta(days=15):
        return start.replace(minute=start.minute - start.minute % 5, second=0, microsecond=0)
    if period in SUB_MINUTE_PERIODS and period > 1:
        return start.replace(second=start.second - start.second % period, microsecond=0)
    if period == 1:
        return start.replace(microsecond=0)
    return start.replace(second=0, microsecond=0)


def stored_at(ts: datetime, resolution: int) -> datetime:
    """Where CloudWatch keeps a datum: the start of its minute (standard) or of its second (high)."""
    return ts.replace(microsecond=0) if resolution == HIGH else ts.replace(second=0, microsecond=0)


def _member_sizes(metric_data: list[dict]) -> list[int]:
    """How many moto data each put member becomes (a Values list is expanded by its Counts)."""
    sizes = []
    for member in metric_data:
        if member.get("Values"):
            counts = member.get("Counts") or ["1"] * len(member["Values"])
            sizes.append(sum(int(float(c)) for c in counts))
        else:
            sizes.append(1)
    return sizes


def apply(state: StrictState) -> None:
    from moto.cloudwatch.exceptions import InvalidParameterValue

    def put_keeping_resolution(namespace, metric_data, new):
        at = 0
        for member, size in zip(metric_data, _member_sizes(metric_data), strict=True):
            resolution = int(member.get("StorageResolution") or STANDARD)
            for datum in new[at:at + size]:
                names = [namespace, *(d.value for d in datum.dimensions)]
                datum.strict_resolution = resolution if state.value(KEY, names) else None
            at += size

    def check(read: cloudwatch_reads.Read):
        if not state.value(KEY, read.names):
            return None
        for period in read.periods:
            if not valid_period(period):
                raise InvalidParameterValue(
                    f"The parameter Period must be 1, 5, 10, 20, 30, 60 or a multiple of 60; got {period}.")
        return cloudwatch_reads.with_start(read, round_start(read.start, read.shortest_period,
                                                             _now_like(read.start)))

    def view(data, read: cloudwatch_reads.Read):
        now = _now_like(read.start)
        out = []
        for datum in data:
            resolution = getattr(datum, "strict_resolution", None)
            if resolution is None:
                out.append(datum)
                continue
            if read.shortest_period < 60 and now - datum.timestamp > HIGH_RES_RETENTION:
                continue  # sub-minute data lives 3 hours
            seen = copy.copy(datum)
            seen.timestamp = stored_at(datum.timestamp, resolution)
            out.append(seen)
        return out

    cloudwatch_reads.install()
    cloudwatch_reads.PUTS.append(put_keeping_resolution)
    cloudwatch_reads.CHECKS.append(check)
    cloudwatch_reads.VIEWS.append(view)
