"""A deployment made before the stack existed: the boto3 deployer (and `python -m infra provision`) created the
same names one by one, each tagged ``imgrec:stack=<prefix>``, with no CloudFormation stack around them.

``find`` lists what is there, so deploy can refuse to build over it (the stack's names would collide);
``remove`` deletes it in the old deployer's order: instances, load balancer, launch template, roles, security
groups, dashboard, buckets, queues, job table. Only resources tagged with the prefix go (the dashboard, which
cannot be tagged, by its name).
"""

from __future__ import annotations

import logging

from botocore.exceptions import ClientError

from infra.cfn import changes, names
from infra.cfn.stack import delete_reply_queues
from infra.clients import make_client
from infra.config import Settings
from infra.deploy.ec2 import delete_group
from infra.observe import LIVE_STATES
from infra.provision import empty_bucket
from infra.report import Report
from infra.tags import ROLE_TAG, STACK_TAG, Role, owned_by

log = logging.getLogger(__name__)

ROLES = (Role.WEB, Role.APP)
GONE = ("NoSuchEntity", "NoSuchBucket", "NoSuchTagSet", "404", "ResourceNotFoundException",
        "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "InvalidLaunchTemplateName.NotFoundException")


def _answer(call, **kwargs) -> dict:
    """``call``'s answer, or {} when what it asks about does not exist."""
    try:
        return call(**kwargs)
    except ClientError as err:
        if err.response["Error"]["Code"] in GONE:
            return {}
        raise


def _instances(ec2, settings: Settings, role: Role | None = None) -> list[str]:
    filters = [{"Name": "instance-state-name", "Values": [str(s) for s in LIVE_STATES]},
               {"Name": f"tag:{STACK_TAG}", "Values": [settings.prefix]},
               *([{"Name": f"tag:{ROLE_TAG}", "Values": [role]}] if role else [])]
    return sorted(i["InstanceId"] for r in ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"])


def _groups(ec2, settings: Settings) -> list[dict]:
    """The stack's security groups, the web one first (it may refer to the balancer's)."""
    found = ec2.describe_security_groups(Filters=[{"Name": f"tag:{STACK_TAG}", "Values": [settings.prefix]}])
    return sorted(found["SecurityGroups"], key=lambda g: g["GroupName"] != names.security_group_name(
        settings.prefix, Role.WEB))


def _roles(iam, settings: Settings) -> list[str]:
    return [n for n in (names.role_name(settings.prefix, r) for r in ROLES)
            if owned_by(_answer(iam.list_role_tags, RoleName=n).get("Tags"), settings.prefix)]


def _buckets(s3, settings: Settings, *, data: bool = True) -> list[str]:
    candidates = [f"{settings.prefix}-model-bucket", *([settings.in_bucket, settings.out_bucket] if data else [])]
    return [b for b in candidates
            if owned_by(_answer(s3.get_bucket_tagging, Bucket=b).get("TagSet"), settings.prefix)]


def _queues(sqs, settings: Settings) -> dict[str, str]:
    urls = {q: _answer(sqs.get_queue_url, QueueName=q).get("QueueUrl") for q in settings.queue_names}
    return {q: u for q, u in urls.items()
            if u and owned_by(sqs.list_queue_tags(QueueUrl=u).get("Tags"), settings.prefix)}


def find(settings: Settings, clients) -> list[str]:
    """What of a stack-less deployment with this prefix exists (empty: none)."""
    return [*(f"instance {i}" for i in _instances(clients.ec2, settings)),
            *(f"security group {g['GroupName']}" for g in _groups(clients.ec2, settings)),
            *(f"role {r}" for r in _roles(clients.iam, settings)),
            *(f"bucket {b}" for b in _buckets(clients.s3, settings)),
            *(f"queue {q}" for q in _queues(clients.sqs, settings))]


def remove(settings: Settings, clients, *, keep_data: bool = False, wait_s: float = 900.0,
           poll_s: float = 5.0) -> Report:
    report = Report()
    ec2, iam, s3, sqs = clients.ec2, clients.iam, clients.s3, clients.sqs
    if not find(settings, clients):
        report.add(f"stack {names.stack_name(settings.prefix)}", "absent")
        return report
    for role in (Role.WEB, None):  # the web instances (and the controller) first, then the rest
        if ids := _instances(ec2, settings, role):
            ec2.terminate_instances(InstanceIds=ids)
            changes.wait_terminated(ec2, ids, wait_s, poll_s)
            for iid in ids:
                report.add(f"instance {iid}", "terminated")
    elb = make_client("elbv2", settings)
    for kind, listing, key in (("load balancer", elb.describe_load_balancers, "LoadBalancers"),
                               ("target group", elb.describe_target_groups, "TargetGroups")):
        arns = [x[f"{key[:-1]}Arn"] for x in listing()[key]]
        for described in (elb.describe_tags(ResourceArns=arns[i:i + 20])["TagDescriptions"]
                          for i in range(0, len(arns), 20)):
            for arn in (d["ResourceArn"] for d in described if owned_by(d.get("Tags"), settings.prefix)):
                if kind == "load balancer":
                    elb.delete_load_balancer(LoadBalancerArn=arn)
                    elb.get_waiter("load_balancers_deleted").wait(LoadBalancerArns=[arn])
                else:
                    elb.delete_target_group(TargetGroupArn=arn)
                report.add(f"{kind} {arn.rsplit('/', 2)[-2]}", "deleted")
    template = names.launch_template_name(settings)
    found = _answer(ec2.describe_launch_templates, LaunchTemplateNames=[template]).get("LaunchTemplates", [])
    if found and owned_by(found[0].get("Tags"), settings.prefix):
        ec2.delete_launch_template(LaunchTemplateName=template)
        report.add(f"launch template {template}", "deleted")
    for name in _roles(iam, settings):
        if profile := _answer(iam.get_instance_profile, InstanceProfileName=name).get("InstanceProfile"):
            for role in profile.get("Roles", []):
                iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=role["RoleName"])
            iam.delete_instance_profile(InstanceProfileName=name)
        for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
            iam.delete_role_policy(RoleName=name, PolicyName=policy)
        iam.delete_role(RoleName=name)
        report.add(f"role {name} (and its instance profile)", "deleted")
    for group in _groups(ec2, settings):
        delete_group(ec2, group["GroupId"], group["GroupName"], report, timeout_s=min(wait_s, 300.0), poll_s=poll_s)
    dashboard = names.dashboard_name(settings.prefix)
    if clients.cloudwatch.list_dashboards(DashboardNamePrefix=dashboard)["DashboardEntries"]:
        clients.cloudwatch.delete_dashboards(DashboardNames=[dashboard])
        report.add(f"dashboard {dashboard}", "deleted")
    delete_reply_queues(sqs, settings, report)
    for bucket in _buckets(s3, settings, data=not keep_data):
        removed = empty_bucket(s3, bucket)
        s3.delete_bucket(Bucket=bucket)
        report.add(f"bucket {bucket}", f"deleted ({removed} object versions)")
    for queue, url in _queues(sqs, settings).items():
        sqs.delete_queue(QueueUrl=url)
        report.add(f"queue {queue}", "deleted")
    if table := _answer(clients.dynamodb.describe_table, TableName=settings.jobs_table).get("Table"):
        tags = clients.dynamodb.list_tags_of_resource(ResourceArn=table["TableArn"]).get("Tags")
        if owned_by(tags, settings.prefix):
            clients.dynamodb.delete_table(TableName=settings.jobs_table)
            report.add(f"table {settings.jobs_table}", "deleted")
    return report
