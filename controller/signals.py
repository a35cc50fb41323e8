"""What the controller reads from CloudWatch for the work policy, every few seconds: thin reads into plain data.

One GetMetricData call returns the stack's per-second ``ImagesProcessed`` over the last
``LOOKBACK_S`` (the service rate and arrival estimates) and each young instance's ``WorkerStarts``
(its boot time). Workers publish both at high resolution (``app_tier/metrics.py``), so the 1 s
period is one AWS serves. Reads happen only while there is something to learn: a backlog, a
booting instance, or work done lately; an idle stack costs no GetMetricData.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from botocore.exceptions import BotoCoreError, ClientError

from controller.facts import Learner
from infra.config import Settings
from infra.metrics import HIGH_RESOLUTION_RETENTION_S, Metric, metric_query
from infra.observe import Instance

log = logging.getLogger(__name__)

LOOKBACK_S = 60
READ_EVERY_S = 5.0
MAX_QUERIES = 500  # GetMetricData's limit per call
START_LOOKBACK_S = 600  # an instance launched longer ago with no WorkerStarts read yet counts as serving


@dataclass(frozen=True)
class Reading:
    """One read: per-second images of the stack over [start, end), and worker start times by instance."""

    start: int
    end: int
    images: dict[int, float]
    started: dict[str, float]


def queries(settings: Settings, young: list[Instance]) -> list[dict]:
    ns, prefix = settings.metrics_namespace, settings.prefix
    out = [metric_query("images", ns, prefix, Metric.IMAGES_PROCESSED, "Sum", 1)]
    out += [metric_query(f"s{n}", ns, prefix, Metric.WORKER_STARTS, "Sum", 1, i.id)
            for n, i in enumerate(young[: MAX_QUERIES - 1])]
    return out


def parse(resp: dict, young: list[Instance], start: int, end: int) -> Reading:
    images: dict[int, float] = {}
    started: dict[str, float] = {}
    for result in resp.get("MetricDataResults", []):
        stamps = [t.timestamp() for t in result.get("Timestamps", [])]
        values = result.get("Values", [])
        if result["Id"] == "images":
            for ts, value in zip(stamps, values, strict=True):
                images[math.floor(ts)] = images.get(math.floor(ts), 0.0) + float(value)
        elif result["Id"].startswith("s"):
            seen = [ts for ts, value in zip(stamps, values, strict=True) if value > 0]
            if seen:
                started[young[int(result["Id"][1:])].id] = min(seen)
    return Reading(start, end, images, started)


def young(fleet: list[Instance], learner: Learner, wall: float) -> list[Instance]:
    """Instances launched lately whose worker start is not read yet: their ``WorkerStarts`` is worth a read."""
    return [i for i in fleet if not learner.measured_ready(i.id)
            and wall - i.launch_time < min(START_LOOKBACK_S, HIGH_RESOLUTION_RETENTION_S)]


def read(cloudwatch, settings: Settings, fleet: list[Instance], learner: Learner, wall: float) -> Reading | None:
    """Read and feed the learner; None (logged) when CloudWatch does not answer: the facts just age."""
    fresh = young(fleet, learner, wall)
    end = math.floor(wall) + 1
    start = end - LOOKBACK_S
    oldest = min([start, *(math.floor(i.launch_time) for i in fresh)])
    try:
        resp = cloudwatch.get_metric_data(MetricDataQueries=queries(settings, fresh),
                                          StartTime=datetime.fromtimestamp(oldest, UTC),
                                          EndTime=datetime.fromtimestamp(end, UTC) + timedelta(seconds=1))
    except (ClientError, BotoCoreError) as err:
        log.warning("cannot read %s metrics of %s for the work policy: %s", settings.metrics_namespace,
                    settings.prefix, err)
        return None
    reading = parse(resp, fresh, start, end)
    learner.record_images(start, end, {s: v for s, v in reading.images.items() if start <= s < end})
    launched = {i.id: i.launch_time for i in fresh}
    for iid, at in reading.started.items():
        learner.record_ready(iid, launched[iid], at)
    learner.update(wall)
    return reading
