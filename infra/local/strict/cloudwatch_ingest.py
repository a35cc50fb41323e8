"""A datum put to CloudWatch is readable only after an ingest delay, not within the same millisecond.

AWS (PutMetricData): "Publishes metric data points to Amazon CloudWatch. CloudWatch associates the data points
with the specified metric. If the specified metric does not exist, CloudWatch creates the metric. When
CloudWatch creates a metric, it can take up to fifteen minutes for the metric to appear in calls to
ListMetrics." CloudWatch documents no upper bound for GetMetricData's own ingest delay; data is processed
asynchronously after PutMetricData returns.
https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricData.html

moto appends a datum to the list the very reads scan, so code that reads its own metric back at once (an idle
check right after a worker's batch, a dashboard that expects the newest second) passes locally only. Here a
datum becomes visible to GetMetricData and GetMetricStatistics ``cw_ingest_delay_s`` after its put
(``IMGREC_STRICT_CW_INGEST_DELAY``, resolved for the datum's namespace and dimension values).
"""

from __future__ import annotations

import time

from infra.local.strict import cloudwatch_reads
from infra.local.strict.control import StrictState

KEY = "cw_ingest_delay_s"


def apply(state: StrictState) -> None:
    def put_with_delay(namespace, metric_data, new):
        now = time.monotonic()
        for datum in new:
            delay = float(state.value(KEY, [namespace, *(d.value for d in datum.dimensions)]))
            datum.strict_readable_at = now + delay

    def view(data, read):
        now = time.monotonic()
        return [d for d in data if getattr(d, "strict_readable_at", 0.0) <= now]

    cloudwatch_reads.install()
    cloudwatch_reads.PUTS.append(put_with_delay)
    cloudwatch_reads.VIEWS.append(view)
