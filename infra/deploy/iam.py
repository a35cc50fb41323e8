"""Least-privilege IAM for the two instance kinds, generated from the configured names.

Policy documents are pure functions of the settings and the ARNs deploy learned, so
tests read them as plain JSON. ``*`` appears only as the resource of actions that AWS
does not scope to resources (ec2:Describe*, cloudwatch:GetMetricData, and
cloudwatch:PutMetricData, narrowed by a namespace condition instead); never as an action.
SQS batch calls (SendMessageBatch, DeleteMessageBatch, ...) are authorized by the
single-message actions granted here.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from botocore.exceptions import ClientError

from infra.config import Settings
from infra.deploy.errors import DeployError
from infra.deploy.model import uri_keys
from infra.messages import REPLY_INFIX
from infra.report import Report
from infra.tags import ROLE_TAG, STACK_TAG, owned_by

log = logging.getLogger(__name__)

POLICY_VERSION = "2012-10-17"
# Actions AWS evaluates only against Resource "*" (no resource-level permissions).
UNSCOPED_ACTIONS = frozenset({"ec2:DescribeInstances", "ec2:DescribeInstanceStatus", "cloudwatch:PutMetricData",
                              "cloudwatch:GetMetricData", "sqs:ListQueues"})

EC2_TRUST_POLICY = {
    "Version": POLICY_VERSION,
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def partition_for(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


@dataclass(frozen=True)
class Arns:
    """ARN builder for one account and region."""

    region: str
    account: str

    @property
    def partition(self) -> str:
        return partition_for(self.region)

    def sqs(self, queue: str) -> str:
        return f"arn:{self.partition}:sqs:{self.region}:{self.account}:{queue}"

    def table(self, table: str) -> str:
        return f"arn:{self.partition}:dynamodb:{self.region}:{self.account}:table/{table}"

    def bucket(self, bucket: str) -> str:
        return f"arn:{self.partition}:s3:::{bucket}"

    def objects(self, bucket: str) -> str:
        return f"arn:{self.partition}:s3:::{bucket}/*"

    def object(self, bucket: str, key: str) -> str:
        return f"arn:{self.partition}:s3:::{bucket}/{key}"

    def ec2(self, resource: str) -> str:
        return f"arn:{self.partition}:ec2:{self.region}:{self.account}:{resource}"

    def image(self, ami_id: str) -> str:
        return f"arn:{self.partition}:ec2:{self.region}::image/{ami_id}"

    def role(self, name: str) -> str:
        return f"arn:{self.partition}:iam::{self.account}:role/{name}"


def account_id(sts) -> str:
    try:
        return sts.get_caller_identity()["Account"]
    except ClientError:
        log.error("sts get_caller_identity failed: are AWS credentials configured?")
        raise


def app_role_name(settings: Settings) -> str:
    return f"{settings.prefix}-app-role"


def web_role_name(settings: Settings) -> str:
    return f"{settings.prefix}-web-role"


def _namespace_condition(settings: Settings) -> dict:
    return {"StringEquals": {"cloudwatch:namespace": settings.metrics_namespace}}


def app_policy(settings: Settings, arns: Arns) -> dict:
    """App-tier worker: take work from the request queue, read inputs, write results (output bucket, job
    table, reply queues), put metrics; at boot, read its model artifact (exactly the two objects
    ``IMGREC_MODEL_URI`` names)."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            *_model_statements(settings, arns),
            {"Sid": "WorkRequestQueue", "Effect": "Allow",
             "Action": ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                        "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
             "Resource": [arns.sqs(settings.req_queue)]},
            {"Sid": "AnswerResponseQueue", "Effect": "Allow",
             "Action": ["sqs:GetQueueUrl", "sqs:SendMessage"],
             "Resource": [arns.sqs(settings.resp_queue)]},
            {"Sid": "AnswerReplyQueues", "Effect": "Allow", "Action": ["sqs:SendMessage"],
             "Resource": [arns.sqs(f"{settings.prefix}-{REPLY_INFIX}-*")]},
            {"Sid": "ReadInputs", "Effect": "Allow",
             "Action": ["s3:GetObject", "s3:GetObjectVersion"],
             "Resource": [arns.objects(settings.in_bucket)]},
            # Without ListBucket S3 answers a missing input with 403, which cannot be told from a denial;
            # with it, 404 NoSuchKey: the worker answers at once with an error naming the key.
            {"Sid": "TellMissingInputs", "Effect": "Allow", "Action": ["s3:ListBucket"],
             "Resource": [arns.bucket(settings.in_bucket)]},
            # The worker records each result in the job table (and moves its batch's counters in the same
            # transaction, authorised as its UpdateItems), so no result depends on a reply queue.
            {"Sid": "RecordResults", "Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:UpdateItem"],
             "Resource": [arns.table(settings.jobs_table)]},
            {"Sid": "WriteResults", "Effect": "Allow",
             "Action": ["s3:PutObject"],
             "Resource": [arns.objects(settings.out_bucket)]},
            # PutMetricData has no resource-level permissions; the namespace condition narrows it.
            {"Sid": "PutMetrics", "Effect": "Allow", "Action": ["cloudwatch:PutMetricData"],
             "Resource": "*", "Condition": _namespace_condition(settings)},
        ],
    }


def _model_statements(settings: Settings, arns: Arns) -> list[dict]:
    if not settings.model_uri:
        return []
    bucket, keys = uri_keys(settings.model_uri)
    return [{"Sid": "ReadModelArtifact", "Effect": "Allow", "Action": ["s3:GetObject"],
             "Resource": [arns.object(bucket, key) for key in keys]}]


def web_policy(settings: Settings, arns: Arns, *, launch_template_id: str, app_sg_id: str, ami_id: str) -> dict:
    """Web tier + controller: accept uploads, queue requests, read answers, scale the app tier."""
    stack_condition = {"StringEquals": {f"aws:ResourceTag/{STACK_TAG}": settings.prefix}}
    template_arn = arns.ec2(f"launch-template/{launch_template_id}")
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {"Sid": "StoreUploads", "Effect": "Allow",
             "Action": ["s3:PutObject"],
             "Resource": [arns.objects(settings.in_bucket)]},
            {"Sid": "ReadResults", "Effect": "Allow",
             "Action": ["s3:GetObject"],
             "Resource": [arns.objects(settings.out_bucket)]},
            {"Sid": "CountObjects", "Effect": "Allow",
             "Action": ["s3:ListBucket"],
             "Resource": [arns.bucket(settings.in_bucket), arns.bucket(settings.out_bucket)]},
            {"Sid": "SendRequests", "Effect": "Allow",
             "Action": ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"],
             "Resource": [arns.sqs(settings.req_queue)]},
            {"Sid": "ReceiveResults", "Effect": "Allow",
             "Action": ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                        "sqs:GetQueueUrl", "sqs:ListQueueTags", "sqs:ReceiveMessage", "sqs:TagQueue",
                        "sqs:UntagQueue"],
             "Resource": [arns.sqs(settings.resp_queue)]},
            # Each web process's own reply queue (made, beaten, removed by it; orphans by the controller).
            {"Sid": "ReplyQueues", "Effect": "Allow",
             "Action": ["sqs:ChangeMessageVisibility", "sqs:CreateQueue", "sqs:DeleteMessage", "sqs:DeleteQueue",
                        "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:ListQueueTags", "sqs:ReceiveMessage",
                        "sqs:TagQueue", "sqs:UntagQueue"],
             "Resource": [arns.sqs(f"{settings.prefix}-{REPLY_INFIX}-*")]},
            # ListQueues has no resource-level permissions; the reaper lists by name prefix.
            {"Sid": "FindReplyQueues", "Effect": "Allow", "Action": ["sqs:ListQueues"], "Resource": "*"},
            {"Sid": "JobState", "Effect": "Allow",
             "Action": ["dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:DescribeTable",
                        "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"],
             "Resource": [arns.table(settings.jobs_table), arns.table(f"{settings.jobs_table}/index/*")]},
            # The controller's reaper reads dead-lettered requests (never deletes them) to mark their jobs failed.
            {"Sid": "WatchDeadLetters", "Effect": "Allow",
             "Action": ["sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes", "sqs:GetQueueUrl",
                        "sqs:ReceiveMessage"],
             "Resource": [arns.sqs(settings.dlq)]},
            # Launches only through our launch template, with its AMI and security group.
            {"Sid": "LaunchAppTier", "Effect": "Allow",
             "Action": ["ec2:RunInstances"],
             "Resource": [arns.ec2("instance/*"), arns.ec2("volume/*"), arns.ec2("network-interface/*"),
                          arns.ec2("subnet/*"), arns.ec2(f"security-group/{app_sg_id}"),
                          arns.image(ami_id), template_arn],
             "Condition": {"ArnEquals": {"ec2:LaunchTemplate": template_arn}}},
            {"Sid": "TagAtLaunch", "Effect": "Allow",
             "Action": ["ec2:CreateTags"],
             "Resource": [arns.ec2("instance/*"), arns.ec2("volume/*")],
             "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}}},
            {"Sid": "ManageOwnInstances", "Effect": "Allow",
             "Action": ["ec2:StartInstances", "ec2:StopInstances", "ec2:TerminateInstances"],
             "Resource": [arns.ec2("instance/*")],
             "Condition": stack_condition},
            # EC2 Describe* calls have no resource-level permissions: AWS accepts only "*".
            {"Sid": "SeeFleet", "Effect": "Allow",
             "Action": ["ec2:DescribeInstanceStatus", "ec2:DescribeInstances"],
             "Resource": "*"},
            {"Sid": "PassAppRole", "Effect": "Allow",
             "Action": ["iam:PassRole"],
             "Resource": [arns.role(app_role_name(settings))],
             "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}},
            {"Sid": "PutMetrics", "Effect": "Allow", "Action": ["cloudwatch:PutMetricData"],
             "Resource": "*", "Condition": _namespace_condition(settings)},
            # The controller (idle check) and web dashboard read metrics back; GetMetricData
            # has no resource-level permissions or namespace condition key.
            {"Sid": "ReadMetrics", "Effect": "Allow", "Action": ["cloudwatch:GetMetricData"], "Resource": "*"},
        ],
    }


# ---------------------------------------------------------------- actuation

def _tags(settings: Settings, role: str) -> list[dict]:
    return [{"Key": STACK_TAG, "Value": settings.prefix}, {"Key": ROLE_TAG, "Value": role}]


def _is_ours(tags: list[dict] | None, settings: Settings) -> bool:
    return owned_by(tags, settings.prefix)


def _missing(err: ClientError) -> bool:
    return err.response["Error"]["Code"] in ("NoSuchEntity", "NoSuchEntityException")


def ensure_role(iam, settings: Settings, name: str, policy: dict, role: str, report: Report) -> str:
    """Create or converge role ``name`` with one inline policy; returns the instance profile ARN.

    The instance profile has the role's name, so one name finds both.
    """
    try:
        current = iam.get_role(RoleName=name)["Role"]
    except ClientError as err:
        if not _missing(err):
            log.error("get_role %s failed", name)
            raise
        current = None
    if current is None:
        try:
            iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(EC2_TRUST_POLICY),
                            Description=f"imgrec {role} instances of stack {settings.prefix}",
                            Tags=_tags(settings, role))
        except ClientError:
            log.error("create_role %s failed", name)
            raise
        report.add(f"iam role {name}", "created")
    elif not _is_ours(iam.list_role_tags(RoleName=name).get("Tags"), settings):
        raise DeployError(f"IAM role {name} exists but is not tagged {STACK_TAG}={settings.prefix}; "
                          "pick another IMGREC_PREFIX or delete it")
    else:
        report.add(f"iam role {name}", "unchanged")
    policy_name = f"{name}-policy"
    try:
        have = iam.get_role_policy(RoleName=name, PolicyName=policy_name)["PolicyDocument"]
    except ClientError as err:
        if not _missing(err):
            raise
        have = None
    if isinstance(have, str):
        have = json.loads(have)
    if have != policy:
        iam.put_role_policy(RoleName=name, PolicyName=policy_name, PolicyDocument=json.dumps(policy))
        report.add(f"iam policy {policy_name}", "created" if have is None else "updated")
    else:
        report.add(f"iam policy {policy_name}", "unchanged")
    return _ensure_profile(iam, settings, name, role, report)


def _ensure_profile(iam, settings: Settings, name: str, role: str, report: Report) -> str:
    try:
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        action = "unchanged"
    except ClientError as err:
        if not _missing(err):
            log.error("get_instance_profile %s failed", name)
            raise
        profile = iam.create_instance_profile(InstanceProfileName=name, Tags=_tags(settings, role))["InstanceProfile"]
        action = "created"
    if name not in [r["RoleName"] for r in profile.get("Roles", [])]:
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
        action = "created" if action == "created" else "role attached"
    report.add(f"instance profile {name}", action)
    return profile["Arn"]


def delete_role(iam, settings: Settings, name: str, report: Report) -> None:
    """Delete instance profile and role ``name`` when they carry our stack tag."""
    try:
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except ClientError as err:
        if not _missing(err):
            raise
        report.add(f"instance profile {name}", "absent")
    else:
        if _is_ours(profile.get("Tags"), settings):
            for r in profile.get("Roles", []):
                iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=r["RoleName"])
            iam.delete_instance_profile(InstanceProfileName=name)
            report.add(f"instance profile {name}", "deleted")
        else:
            report.add(f"instance profile {name}", "kept (not ours)")
    try:
        tags = iam.list_role_tags(RoleName=name).get("Tags")
    except ClientError as err:
        if not _missing(err):
            raise
        report.add(f"iam role {name}", "absent")
        return
    if not _is_ours(tags, settings):
        report.add(f"iam role {name}", "kept (not ours)")
        return
    for policy_name in iam.list_role_policies(RoleName=name)["PolicyNames"]:
        iam.delete_role_policy(RoleName=name, PolicyName=policy_name)
    for attached in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
        iam.detach_role_policy(RoleName=name, PolicyArn=attached["PolicyArn"])
    try:
        iam.delete_role(RoleName=name)
    except ClientError:
        log.error("delete_role %s failed", name)
        raise
    report.add(f"iam role {name}", "deleted")
