"""The CloudWatch dashboard deploy creates: the system at a glance in the AWS console.

The body is a pure function of the settings. Custom metrics carry the dimension
``Stack=<prefix>`` in ``settings.metrics_namespace``: the controller publishes
Backlog, BacklogPerInstance, DesiredInstances, RunningInstances; workers publish
ImagesProcessed, ImageErrors, InferenceMs, EndToEndMs.
"""

from __future__ import annotations

import json
import logging

from botocore.exceptions import ClientError

from infra import metrics
from infra.config import Settings
from infra.provision import Report

log = logging.getLogger(__name__)

PERIOD_S = 60
CONTROLLER_METRICS = tuple(str(m) for m in metrics.CONTROLLER_METRICS)
WORKER_METRICS = tuple(str(m) for m in metrics.WORKER_METRICS)


def dashboard_name(settings: Settings) -> str:
    return f"{settings.prefix}-dashboard"


def _custom(settings: Settings, metric: str, stat: str = "Average", **extra) -> list:
    options = {"stat": stat, **extra}
    return [settings.metrics_namespace, str(metric), metrics.STACK_DIMENSION, settings.prefix, options]


def _widget(title: str, metrics: list, x: int, y: int, **props) -> dict:
    return {"type": "metric", "x": x, "y": y, "width": 12, "height": 6,
            "properties": {"title": title, "metrics": metrics, "view": "timeSeries", "region": props.pop("region"),
                           "period": PERIOD_S, **props}}


def dashboard_body(settings: Settings) -> dict:
    """Five graphs: queue depth, backlog per instance, instances, images/s, latency."""
    r = settings.region
    queue = settings.req_queue
    return {"widgets": [
        _widget("Request queue depth", [
            ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", queue, {"stat": "Maximum"}],
            ["AWS/SQS", "ApproximateNumberOfMessagesNotVisible", "QueueName", queue, {"stat": "Maximum"}],
            _custom(settings, metrics.Metric.BACKLOG, "Maximum"),
            ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", settings.dlq,
             {"stat": "Maximum", "label": "dead letters"}],
        ], 0, 0, region=r),
        _widget("Backlog per instance", [
            _custom(settings, metrics.Metric.BACKLOG_PER_INSTANCE, "Average"),
        ], 12, 0, region=r, annotations={"horizontal": [
            {"label": "target", "value": settings.target_backlog_per_instance}]}),
        _widget("App-tier instances", [
            _custom(settings, metrics.Metric.RUNNING_INSTANCES, "Maximum"),
            _custom(settings, metrics.Metric.DESIRED_INSTANCES, "Maximum"),
        ], 0, 6, region=r, yAxis={"left": {"min": 0, "max": settings.max_instances + 1}}),
        _widget("Images per second", [
            [{"expression": f"m1/{PERIOD_S}", "label": "images/s", "id": "e1"}],
            [{"expression": f"m2/{PERIOD_S}", "label": "errors/s", "id": "e2"}],
            _custom(settings, metrics.Metric.IMAGES_PROCESSED, "Sum", id="m1", visible=False),
            _custom(settings, metrics.Metric.IMAGE_ERRORS, "Sum", id="m2", visible=False),
        ], 12, 6, region=r),
        _widget("Latency (ms)", [
            _custom(settings, metrics.Metric.INFERENCE_MS, "Average", label="inference avg"),
            _custom(settings, metrics.Metric.INFERENCE_MS, "p90", label="inference p90"),
            _custom(settings, metrics.Metric.END_TO_END_MS, "Average", label="end-to-end avg"),
            _custom(settings, metrics.Metric.END_TO_END_MS, "p90", label="end-to-end p90"),
        ], 0, 12, region=r),
    ]}


def console_url(settings: Settings) -> str:
    r = settings.region
    return f"https://{r}.console.aws.amazon.com/cloudwatch/home?region={r}#dashboards:name={dashboard_name(settings)}"


def ensure_dashboard(cloudwatch, settings: Settings, report: Report) -> None:
    name = dashboard_name(settings)
    wanted = dashboard_body(settings)
    try:
        have = json.loads(cloudwatch.get_dashboard(DashboardName=name)["DashboardBody"])
    except ClientError as err:
        if err.response["Error"]["Code"] not in ("ResourceNotFound", "ResourceNotFoundException"):
            log.error("get_dashboard %s failed", name)
            raise
        have = None
    if have == wanted:
        report.add(f"dashboard {name}", "unchanged")
        return
    try:
        cloudwatch.put_dashboard(DashboardName=name, DashboardBody=json.dumps(wanted))
    except ClientError:
        log.error("put_dashboard %s failed", name)
        raise
    report.add(f"dashboard {name}", "created" if have is None else "updated")


def delete_dashboard(cloudwatch, settings: Settings, report: Report) -> None:
    """Dashboards cannot carry tags; the name (``<prefix>-dashboard``) marks it as ours."""
    name = dashboard_name(settings)
    names = [d["DashboardName"] for d in cloudwatch.list_dashboards(DashboardNamePrefix=name)["DashboardEntries"]]
    if name not in names:
        report.add(f"dashboard {name}", "absent")
        return
    cloudwatch.delete_dashboards(DashboardNames=[name])
    report.add(f"dashboard {name}", "deleted")
