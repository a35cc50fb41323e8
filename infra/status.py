"""`python -m infra status`: one compact table of queues, buckets and instances."""

from __future__ import annotations

from botocore.exceptions import ClientError

from infra.config import Settings
from infra.observe import app_instances, bucket_object_count, count_by_state, queue_depth, web_instances


def status_rows(settings: Settings, clients) -> list[tuple[str, str, str]]:
    rows = []
    sqs = clients.sqs
    for role, name in (("request queue", settings.req_queue), ("response queue", settings.resp_queue),
                       ("dead-letter queue", settings.dlq)):
        try:
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            d = queue_depth(sqs, url)
            rows.append((role, name, f"{d.visible} visible / {d.in_flight} in flight"))
        except ClientError:
            rows.append((role, name, "missing"))
    for role, bucket in (("input bucket", settings.in_bucket), ("output bucket", settings.out_bucket)):
        try:
            rows.append((role, bucket, f"{bucket_object_count(clients.s3, bucket)} objects"))
        except ClientError:
            rows.append((role, bucket, "missing"))
    apps = count_by_state(app_instances(clients.ec2, settings))
    rows.append(("app tier", f"{settings.app_instance_prefix}-*",
                 ", ".join(f"{n} {state}" for state, n in apps.items() if n) or "no instances"))
    web = count_by_state(web_instances(clients.ec2, settings))
    rows.append(("web tier", settings.web_instance_name,
                 ", ".join(f"{n} {state}" for state, n in web.items() if n) or "no instance (local web tier?)"))
    return rows


def format_table(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}" for a, b, c in rows)
