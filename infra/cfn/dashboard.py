"""The CloudWatch dashboard the stack carries: the system at a glance in the AWS console.

Custom metrics carry the dimension ``Stack=<prefix>`` in ``settings.metrics_namespace``: the
controller publishes Backlog, BacklogPerInstance, DesiredInstances, RunningInstances; workers
publish ImagesProcessed, ImageErrors, InferenceMs, EndToEndMs. The body is built for the stack's
``{{...}}`` references (region, queue names), which the template resolves with ``Fn::Sub``.
"""

from __future__ import annotations

from infra import metrics
from infra.config import Settings

PERIOD_S = 60
REGION = "{{AWS::Region}}"


def _custom(settings: Settings, metric: str, stat: str = "Average", **extra) -> list:
    return [settings.metrics_namespace, str(metric), metrics.STACK_DIMENSION, settings.prefix, {"stat": stat, **extra}]


def _widget(title: str, lines: list, x: int, y: int, **props) -> dict:
    return {"type": "metric", "x": x, "y": y, "width": 12, "height": 6,
            "properties": {"title": title, "metrics": lines, "view": "timeSeries", "region": REGION,
                           "period": PERIOD_S, **props}}


def dashboard_body(settings: Settings, request_queue: str, dead_letter_queue: str) -> dict:
    """Five graphs: queue depth, backlog per instance, instances, images/s, latency."""
    depth = ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName"]
    return {"widgets": [
        _widget("Request queue depth", [
            [*depth, request_queue, {"stat": "Maximum"}],
            ["AWS/SQS", "ApproximateNumberOfMessagesNotVisible", "QueueName", request_queue, {"stat": "Maximum"}],
            _custom(settings, metrics.Metric.BACKLOG, "Maximum"),
            [*depth, dead_letter_queue, {"stat": "Maximum", "label": "dead letters"}],
        ], 0, 0),
        _widget("Backlog per instance", [_custom(settings, metrics.Metric.BACKLOG_PER_INSTANCE)], 12, 0,
                annotations={"horizontal": [{"label": "target", "value": settings.target_backlog_per_instance}]}),
        _widget("App-tier instances", [
            _custom(settings, metrics.Metric.RUNNING_INSTANCES, "Maximum"),
            _custom(settings, metrics.Metric.DESIRED_INSTANCES, "Maximum"),
        ], 0, 6, yAxis={"left": {"min": 0}}),
        _widget("Images per second", [
            [{"expression": f"m1/{PERIOD_S}", "label": "images/s", "id": "e1"}],
            [{"expression": f"m2/{PERIOD_S}", "label": "errors/s", "id": "e2"}],
            _custom(settings, metrics.Metric.IMAGES_PROCESSED, "Sum", id="m1", visible=False),
            _custom(settings, metrics.Metric.IMAGE_ERRORS, "Sum", id="m2", visible=False),
        ], 12, 6),
        _widget("Latency (ms)", [
            _custom(settings, metrics.Metric.INFERENCE_MS, "Average", label="inference avg"),
            _custom(settings, metrics.Metric.INFERENCE_MS, "p90", label="inference p90"),
            _custom(settings, metrics.Metric.END_TO_END_MS, "Average", label="end-to-end avg"),
            _custom(settings, metrics.Metric.END_TO_END_MS, "p90", label="end-to-end p90"),
        ], 0, 12),
    ]}
