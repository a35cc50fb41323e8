"""A deployment's stack for a ``Settings``: put its template up (the whole system, or only the data part:
buckets, queues, job table) and take it down again, its data with it unless kept.

`python -m infra provision | teardown`, the local stack (`make run`), the test suite's fixtures and
`python -m infra deploy | destroy` all go through here, so every one of them makes its resources from the
one template.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from botocore.exceptions import ClientError

from infra.cfn import changes, names
from infra.cfn.template import render, stack_parameters, to_json
from infra.config import Settings
from infra.provision import empty_bucket, reply_queue_urls
from infra.report import Report
from infra.tags import owned_by

log = logging.getLogger(__name__)

DATA_BUCKET_OUTPUTS = ("InputBucketName", "OutputBucketName")  # RetainExceptOnCreate: kept by a stack delete


def stack_name(settings: Settings) -> str:
    return names.stack_name(settings.prefix)


def poll_interval(settings: Settings, poll_s: float | None = None) -> float:
    """How often to ask CloudFormation and EC2 how an operation goes: ``poll_s`` when given, else every 0.1 s on
    the local stack and 10 s on AWS."""
    return poll_s if poll_s is not None else (0.1 if settings.is_local else 10.0)


def put(settings: Settings, clients, *, data_only: bool = False, confirm: Callable[[changes.Plan], bool] | None = None,
        wait_s: float = 1800.0, poll_s: float | None = None, **values) -> tuple[changes.Plan, dict[str, str] | None]:
    """Create or update the stack through a change set; returns the plan and the stack's outputs (None when
    ``confirm`` said no). ``values``: parameters that are not settings (``stack_parameters``)."""
    template = render(settings, data_only=data_only)
    params = {k: v for k, v in stack_parameters(settings, **values).items() if k in template["Parameters"]}
    plan, stack = changes.apply(clients.cloudformation, stack_name(settings), to_json(template), params,
                                confirm=confirm or (lambda p: True), wait_s=wait_s,
                                poll_s=poll_interval(settings, poll_s))
    return plan, (changes.outputs(stack) if stack is not None else None)


def provision(settings: Settings, clients) -> Report:
    """The data part of the stack (buckets, queues, job table); running it twice changes nothing."""
    plan, _ = put(settings, clients, data_only=True)
    report = Report()
    for change in plan.changes:
        report.add(f"{change.resource_type} {change.logical_id}", {"Add": "created", "Modify": "updated",
                                                                    "Remove": "deleted"}[change.action])
    if plan.empty:
        report.add(f"stack {plan.stack}", "unchanged")
    return report


def web_group_instances(clients, settings: Settings) -> list[str] | None:
    """The web instances' ids as their Auto Scaling group has them (EC2 may not list a new one yet); None
    when there is no group."""
    group = names.web_group_name(settings.prefix)
    try:
        found = clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"]
    except ClientError:
        log.error("describe_auto_scaling_groups %s failed", group)
        raise
    return [i["InstanceId"] for i in found[0].get("Instances", [])] if found else None


def stop_web_group(clients, settings: Settings, *, wait_s: float = 0.0, poll_s: float = 1.0) -> list[str]:
    """Scale the web instances' group to nothing (and so stop the controller, which launches app instances);
    with ``wait_s``, wait until its instances are terminated. Returns their ids."""
    group = names.web_group_name(settings.prefix)
    ids = web_group_instances(clients, settings)
    if ids is None:
        return []
    try:
        clients.autoscaling.update_auto_scaling_group(AutoScalingGroupName=group, MinSize=0, MaxSize=0,
                                                      DesiredCapacity=0)
    except ClientError:
        log.error("scaling web group %s to 0 failed", group)
        raise
    if ids and wait_s:
        changes.wait_terminated(clients.ec2, ids, wait_s, poll_s)
    return ids


def delete_reply_queues(sqs, settings: Settings, report: Report) -> None:
    """The web processes' own reply queues (``<prefix>-reply-*``, by name as ``reply_queue_urls`` finds them;
    those tagged with another stack are kept): made at run time, so not the stack's."""
    for url in reply_queue_urls(sqs, settings):
        name = url.rpartition("/")[2]
        if not owned_by(sqs.list_queue_tags(QueueUrl=url).get("Tags"), settings.prefix):
            report.add(f"queue {name}", "kept (not ours)")
            continue
        sqs.delete_queue(QueueUrl=url)
        report.add(f"queue {name}", "deleted")


def _bucket_is_ours(s3, bucket: str, prefix: str) -> bool:
    try:
        return owned_by(s3.get_bucket_tagging(Bucket=bucket)["TagSet"], prefix)
    except ClientError as err:
        if err.response["Error"]["Code"] in ("NoSuchBucket", "NoSuchTagSet", "404"):
            return False
        raise


def teardown(settings: Settings, clients, *, keep_data: bool = False, wait_s: float = 1800.0,
             poll_s: float | None = None) -> Report:
    """Delete the reply queues, empty the stack's buckets (the input and output ones only unless
    ``keep_data``), delete the stack and wait, then the emptied data buckets it kept."""
    report = Report()
    cfn = clients.cloudformation
    stack = changes.describe(cfn, stack_name(settings))
    delete_reply_queues(clients.sqs, settings, report)
    if stack is None:
        report.add(f"stack {stack_name(settings)}", "absent")
        return report
    out = changes.outputs(stack)
    data = [out[k] for k in DATA_BUCKET_OUTPUTS if k in out]
    for bucket in ([] if keep_data else data) + ([out["ModelBucketName"]] if "ModelBucketName" in out else []):
        if _bucket_is_ours(clients.s3, bucket, settings.prefix):
            report.add(f"bucket {bucket}", f"emptied ({empty_bucket(clients.s3, bucket)} object versions)")
    changes.delete(cfn, stack["StackId"], wait_s=wait_s, poll_s=poll_interval(settings, poll_s))
    report.add(f"stack {stack_name(settings)}", "deleted")
    for bucket in data:
        if keep_data:
            report.add(f"bucket {bucket}", "kept with its data (--keep-data)")
        elif _bucket_is_ours(clients.s3, bucket, settings.prefix):
            empty_bucket(clients.s3, bucket)  # whatever arrived while the stack went
            clients.s3.delete_bucket(Bucket=bucket)
            report.add(f"bucket {bucket}", "deleted")
    return report
