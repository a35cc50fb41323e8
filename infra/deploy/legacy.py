"""A deployment made before the stack existed: the boto3 deployer (and `python -m infra provision`) created the
same names one by one, each tagged ``imgrec:stack=<prefix>``, with no CloudFormation stack around them.

``find`` lists what is there, so deploy can refuse to build over it (the stack's names would collide);
``remove`` deletes it in the old deployer's order: instances, load balancer, launch template, roles, security
groups, dashboard, buckets, queues, job table. Only resources tagged with the prefix go (the dashboard, which
cannot be tagged, by its name); anything else of the same name is kept and reported.
"""

from __future__ import annotations

import logging
import time

from botocore.exceptions import ClientError

from infra.cfn import changes, names
from infra.cfn.stack import delete_reply_queues
from infra.clients import make_client
from infra.config import Settings
from infra.observe import LIVE_STATES
from infra.provision import empty_bucket
from infra.report import Report
from infra.tags import ROLE_TAG, STACK_TAG, Role, owned_by, tag_dict

log = logging.getLogger(__name__)

ROLES = (Role.WEB, Role.APP)
DETACH_TIMEOUT_S = 300.0  # network interfaces of just-terminated instances take a while to release a group
GONE = ("NoSuchEntity", "NoSuchBucket", "NoSuchTagSet", "404", "ResourceNotFoundException",
        "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "InvalidLaunchTemplateName.NotFoundException")


def _answer(call, **kwargs) -> dict | None:
    """``call``'s answer, or None when what it asks about does not exist."""
    try:
        return call(**kwargs)
    except ClientError as err:
        if err.response["Error"]["Code"] in GONE:
            return None
        raise


def _tags_or_none(call, key: str = "Tags", **kwargs) -> dict[str, str] | None:
    """A resource's tags (AWS's list or SQS's map), or None when it does not exist."""
    found = _answer(call, **kwargs)
    if found is None:
        return None
    value = found.get(key, {})
    return value if isinstance(value, dict) else tag_dict(value)


def _instances(ec2, settings: Settings, role: Role | None = None) -> list[str]:
    filters = [{"Name": "instance-state-name", "Values": [str(s) for s in LIVE_STATES]},
               {"Name": f"tag:{STACK_TAG}", "Values": [settings.prefix]}]
    if role:
        filters.append({"Name": f"tag:{ROLE_TAG}", "Values": [role]})
    return sorted(i["InstanceId"] for r in ec2.describe_instances(Filters=filters)["Reservations"]
                  for i in r["Instances"])


def _groups(ec2, settings: Settings) -> list[dict]:
    return ec2.describe_security_groups(Filters=[{"Name": f"tag:{STACK_TAG}", "Values": [settings.prefix]}])[
        "SecurityGroups"]


def _balancers(elb, settings: Settings) -> tuple[list[str], list[str]]:
    """(load balancer ARNs, target group ARNs) tagged with the stack."""
    lbs = [lb["LoadBalancerArn"] for lb in elb.describe_load_balancers()["LoadBalancers"]]
    tgs = [tg["TargetGroupArn"] for tg in elb.describe_target_groups()["TargetGroups"]]
    ours = []
    for arns in (lbs, tgs):
        tagged = [d for i in range(0, len(arns), 20)
                  for d in elb.describe_tags(ResourceArns=arns[i:i + 20])["TagDescriptions"]] if arns else []
        ours.append([d["ResourceArn"] for d in tagged if owned_by(d.get("Tags"), settings.prefix)])
    return ours[0], ours[1]


def find(settings: Settings, clients) -> list[str]:
    """What of a stack-less deployment with this prefix exists (empty: none)."""
    iam, s3, sqs = clients.iam, clients.s3, clients.sqs
    found = [f"instance {i}" for i in _instances(clients.ec2, settings)]
    found += [f"security group {g['GroupName']}" for g in _groups(clients.ec2, settings)]
    for role in ROLES:
        name = names.role_name(settings.prefix, role)
        if owned_by(_tags_or_none(iam.list_role_tags, RoleName=name), settings.prefix):
            found.append(f"role {name}")
    for bucket in (settings.in_bucket, settings.out_bucket, f"{settings.prefix}-model-bucket"):
        if owned_by(_tags_or_none(s3.get_bucket_tagging, "TagSet", Bucket=bucket), settings.prefix):
            found.append(f"bucket {bucket}")
    for queue in settings.queue_names:
        url = (_answer(sqs.get_queue_url, QueueName=queue) or {}).get("QueueUrl")
        if url and owned_by(sqs.list_queue_tags(QueueUrl=url).get("Tags", {}), settings.prefix):
            found.append(f"queue {queue}")
    return found


def _delete_role(iam, settings: Settings, name: str, report: Report) -> None:
    if not owned_by(_tags_or_none(iam.list_role_tags, RoleName=name), settings.prefix):
        return
    profile = _answer(iam.get_instance_profile, InstanceProfileName=name)
    if profile is not None:
        for role in profile["InstanceProfile"].get("Roles", []):
            iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=role["RoleName"])
        iam.delete_instance_profile(InstanceProfileName=name)
    for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
        iam.delete_role_policy(RoleName=name, PolicyName=policy)
    iam.delete_role(RoleName=name)
    report.add(f"role {name} (and its instance profile)", "deleted")


def _delete_group(ec2, group: dict, report: Report, wait_s: float, poll_s: float) -> None:
    """Retried while the interfaces of just-terminated instances still hold it (no waiter shows them gone)."""
    deadline = time.monotonic() + min(wait_s, DETACH_TIMEOUT_S)
    while True:
        try:
            ec2.delete_security_group(GroupId=group["GroupId"])
            report.add(f"security group {group['GroupName']}", "deleted")
            return
        except ClientError as err:
            if err.response["Error"]["Code"] != "DependencyViolation" or time.monotonic() > deadline:
                raise
            time.sleep(max(poll_s, 1.0))


def remove(settings: Settings, clients, *, keep_data: bool = False, wait_s: float = 900.0,
           poll_s: float = 5.0) -> Report:
    report = Report()
    ec2, iam, s3, sqs = clients.ec2, clients.iam, clients.s3, clients.sqs
    if not find(settings, clients):
        report.add(f"stack {names.stack_name(settings.prefix)}", "absent")
        return report
    for role in (Role.WEB, None):  # the web instances (and the controller) first, then the rest
        ids = _instances(ec2, settings, role)
        if ids:
            ec2.terminate_instances(InstanceIds=ids)
            changes.wait_terminated(ec2, ids, wait_s, poll_s)
            report.extend(Report([(f"instance {i}", "terminated") for i in ids]))
    elb = make_client("elbv2", settings)
    balancers, target_groups = _balancers(elb, settings)
    for arn in balancers:
        elb.delete_load_balancer(LoadBalancerArn=arn)
        elb.get_waiter("load_balancers_deleted").wait(LoadBalancerArns=[arn])
        report.add(f"load balancer {arn.rsplit('/', 2)[-2]}", "deleted")
    for arn in target_groups:
        elb.delete_target_group(TargetGroupArn=arn)
        report.add(f"target group {arn.rsplit('/', 2)[-2]}", "deleted")
    template = names.launch_template_name(settings)
    found = (_answer(ec2.describe_launch_templates, LaunchTemplateNames=[template]) or {}).get("LaunchTemplates", [])
    if found and owned_by(found[0].get("Tags"), settings.prefix):
        ec2.delete_launch_template(LaunchTemplateName=template)
        report.add(f"launch template {template}", "deleted")
    for role in ROLES:
        _delete_role(iam, settings, names.role_name(settings.prefix, role), report)
    for group in sorted(_groups(ec2, settings), key=lambda g: g["GroupName"] != names.security_group_name(
            settings.prefix, Role.WEB)):  # the web group refers to the balancer's: it goes first
        _delete_group(ec2, group, report, wait_s, poll_s)
    dashboard = names.dashboard_name(settings.prefix)
    if clients.cloudwatch.list_dashboards(DashboardNamePrefix=dashboard)["DashboardEntries"]:
        clients.cloudwatch.delete_dashboards(DashboardNames=[dashboard])
        report.add(f"dashboard {dashboard}", "deleted")
    delete_reply_queues(sqs, settings, report)
    data = [] if keep_data else [settings.in_bucket, settings.out_bucket]
    for bucket in [f"{settings.prefix}-model-bucket", *data]:
        if owned_by(_tags_or_none(s3.get_bucket_tagging, "TagSet", Bucket=bucket), settings.prefix):
            removed = empty_bucket(s3, bucket)
            s3.delete_bucket(Bucket=bucket)
            report.add(f"bucket {bucket}", f"deleted ({removed} object versions)")
    for queue in settings.queue_names:
        url = (_answer(sqs.get_queue_url, QueueName=queue) or {}).get("QueueUrl")
        if url and owned_by(sqs.list_queue_tags(QueueUrl=url).get("Tags", {}), settings.prefix):
            sqs.delete_queue(QueueUrl=url)
            report.add(f"queue {queue}", "deleted")
    table = _answer(clients.dynamodb.describe_table, TableName=settings.jobs_table)
    if table is not None:
        arn = table["Table"]["TableArn"]
        if owned_by(clients.dynamodb.list_tags_of_resource(ResourceArn=arn).get("Tags"), settings.prefix):
            clients.dynamodb.delete_table(TableName=settings.jobs_table)
            report.add(f"table {settings.jobs_table}", "deleted")
    return report
