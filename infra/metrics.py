"""The CloudWatch metric contract: every name and dimension set that workers and the controller publish
and that the controller, dashboards and deploy's CloudWatch dashboard read. Defined here once.

Workers publish each metric twice, with ``Stack=<prefix>`` (the fleet view) and with ``Stack`` plus
``InstanceId`` (per instance, for scale-in's idle check); the controller publishes with ``Stack`` only.
"""

from __future__ import annotations

from enum import StrEnum

STACK_DIMENSION = "Stack"
INSTANCE_DIMENSION = "InstanceId"


class Metric(StrEnum):
    # Worker counts (Unit Count) and timings (Unit Milliseconds, as statistic sets).
    IMAGES_PROCESSED = "ImagesProcessed"
    IMAGE_ERRORS = "ImageErrors"
    INFERENCE_MS = "InferenceMs"
    END_TO_END_MS = "EndToEndMs"
    # Controller gauges (Unit Count).
    BACKLOG = "Backlog"
    BACKLOG_PER_INSTANCE = "BacklogPerInstance"
    DESIRED_INSTANCES = "DesiredInstances"
    RUNNING_INSTANCES = "RunningInstances"


WORKER_COUNTS = (Metric.IMAGES_PROCESSED, Metric.IMAGE_ERRORS)
WORKER_TIMINGS = (Metric.INFERENCE_MS, Metric.END_TO_END_MS)
WORKER_METRICS = WORKER_COUNTS + WORKER_TIMINGS
CONTROLLER_METRICS = (Metric.BACKLOG, Metric.BACKLOG_PER_INSTANCE, Metric.DESIRED_INSTANCES,
                      Metric.RUNNING_INSTANCES)


def stack_dimensions(prefix: str) -> list[dict[str, str]]:
    return [{"Name": STACK_DIMENSION, "Value": prefix}]


def instance_dimensions(prefix: str, instance_id: str) -> list[dict[str, str]]:
    return [*stack_dimensions(prefix), {"Name": INSTANCE_DIMENSION, "Value": instance_id}]
