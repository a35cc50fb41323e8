"""Least-privilege IAM for the two instance kinds, as the template carries them.

Resources are written with ``{{...}}`` references (a template parameter, a resource's ``Ref`` or
``Logical.Attribute``, a pseudo parameter), which the template turns into ``Fn::Sub``; so one
document serves AWS and moto alike and tests read the resolved document back from IAM. ``*``
appears only as the resource of actions AWS does not scope to resources (``UNSCOPED_ACTIONS``),
never as an action; SQS batch calls are authorized by the single-message actions granted here.
"""

from __future__ import annotations

from infra.messages import REPLY_INFIX
from infra.tags import STACK_TAG

POLICY_VERSION = "2012-10-17"
# Actions AWS evaluates only against Resource "*" (no resource-level permissions).
UNSCOPED_ACTIONS = frozenset({"ec2:DescribeInstances", "ec2:DescribeInstanceStatus", "cloudwatch:PutMetricData",
                              "cloudwatch:GetMetricData", "sqs:ListQueues"})
EC2_SERVICE = "ec2.amazonaws.com"
EC2_TRUST_POLICY = {
    "Version": POLICY_VERSION,
    "Statement": [{"Effect": "Allow", "Principal": {"Service": EC2_SERVICE}, "Action": "sts:AssumeRole"}],
}
ARN = "arn:{{AWS::Partition}}"


def regional(service: str, resource: str) -> str:
    return f"{ARN}:{service}:{{{{AWS::Region}}}}:{{{{AWS::AccountId}}}}:{resource}"


def queue(logical_id: str) -> str:
    return f"{{{{{logical_id}.Arn}}}}"


def reply_queues(prefix: str) -> str:
    return regional("sqs", f"{prefix}-{REPLY_INFIX}-*")


def objects(bucket_logical_id: str, key: str = "*") -> str:
    return f"{{{{{bucket_logical_id}.Arn}}}}/{key}"


def statement(sid: str, actions: list[str], resources: list[str] | str, condition: dict | None = None) -> dict:
    out = {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": resources}
    if condition:
        out["Condition"] = condition
    return out


def _metrics(namespace: str) -> dict:
    # PutMetricData has no resource-level permissions; the namespace condition narrows it.
    return statement("PutMetrics", ["cloudwatch:PutMetricData"], "*",
                     {"StringEquals": {"cloudwatch:namespace": namespace}})


def app_policy(prefix: str, namespace: str, artifact_keys: tuple[str, str]) -> dict:
    """App-tier worker: take work, read inputs (and list them, so a missing key is a 404, not a 403),
    write and record results, answer, put metrics; at boot read exactly the two objects of its model artifact."""
    return {"Version": POLICY_VERSION, "Statement": [
        statement("ReadModelArtifact", ["s3:GetObject"], [objects("ModelBucket", key) for key in artifact_keys]),
        statement("WorkRequestQueue", ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                                       "sqs:GetQueueUrl", "sqs:ReceiveMessage"], [queue("RequestQueue")]),
        statement("AnswerResponseQueue", ["sqs:GetQueueUrl", "sqs:SendMessage"], [queue("ResponseQueue")]),
        statement("AnswerReplyQueues", ["sqs:SendMessage"], [reply_queues(prefix)]),
        statement("ReadInputs", ["s3:GetObject", "s3:GetObjectVersion"], [objects("InputBucket")]),
        statement("ListInputs", ["s3:ListBucket"], ["{{InputBucket.Arn}}"]),
        # Each result is recorded in the job table before its reply (its batch's counters move in the same
        # transaction, authorised as its UpdateItems), so no result depends on a reply queue.
        statement("RecordResults", ["dynamodb:GetItem", "dynamodb:UpdateItem"], ["{{JobsTable.Arn}}"]),
        statement("WriteResults", ["s3:PutObject"], [objects("OutputBucket")]),
        _metrics(namespace),
    ]}


def web_policy(prefix: str, namespace: str) -> dict:
    """Web tier + controller: accept uploads, queue requests, read answers, keep job state, scale the app tier
    through its launch template only."""
    launch_template = regional("ec2", "launch-template/{{AppLaunchTemplate}}")
    own = {"StringEquals": {f"aws:ResourceTag/{STACK_TAG}": prefix}}
    reply_actions = ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl",
                     "sqs:ListQueueTags", "sqs:ReceiveMessage", "sqs:TagQueue", "sqs:UntagQueue"]
    return {"Version": POLICY_VERSION, "Statement": [
        statement("StoreUploads", ["s3:PutObject"], [objects("InputBucket")]),
        statement("ReadResults", ["s3:GetObject"], [objects("OutputBucket")]),
        statement("CountObjects", ["s3:ListBucket"], ["{{InputBucket.Arn}}", "{{OutputBucket.Arn}}"]),
        statement("SendRequests", ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"],
                  [queue("RequestQueue")]),
        statement("ReceiveResults", reply_actions, [queue("ResponseQueue")]),
        # Each web process's own reply queue (made, beaten, removed by it; orphans by the controller).
        statement("ReplyQueues", [*reply_actions, "sqs:CreateQueue", "sqs:DeleteQueue"], [reply_queues(prefix)]),
        # ListQueues has no resource-level permissions; the reaper lists by name prefix.
        statement("FindReplyQueues", ["sqs:ListQueues"], "*"),
        statement("JobState", ["dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:DescribeTable",
                               "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"],
                  ["{{JobsTable.Arn}}", "{{JobsTable.Arn}}/index/*"]),
        # The controller's reaper reads dead-lettered requests (never deletes them) to mark their jobs failed.
        statement("WatchDeadLetters", ["sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes", "sqs:GetQueueUrl",
                                       "sqs:ReceiveMessage"], [queue("DeadLetterQueue")]),
        # Launches only through the stack's launch template, with its image and security group.
        statement("LaunchAppTier", ["ec2:RunInstances"], [
            regional("ec2", "instance/*"), regional("ec2", "volume/*"), regional("ec2", "network-interface/*"),
            regional("ec2", "subnet/*"), regional("ec2", "security-group/{{AppSecurityGroup.GroupId}}"),
            ARN + ":ec2:{{AWS::Region}}::image/{{ImageIdValue}}", launch_template],
            {"ArnEquals": {"ec2:LaunchTemplate": launch_template}}),
        statement("TagAtLaunch", ["ec2:CreateTags"], [regional("ec2", "instance/*"), regional("ec2", "volume/*")],
                  {"StringEquals": {"ec2:CreateAction": "RunInstances"}}),
        statement("ManageOwnInstances", ["ec2:StartInstances", "ec2:StopInstances", "ec2:TerminateInstances"],
                  [regional("ec2", "instance/*")], own),
        # EC2 Describe* calls have no resource-level permissions: AWS accepts only "*".
        statement("SeeFleet", ["ec2:DescribeInstanceStatus", "ec2:DescribeInstances"], "*"),
        statement("PassAppRole", ["iam:PassRole"], ["{{AppRole.Arn}}"],
                  {"StringEquals": {"iam:PassedToService": EC2_SERVICE}}),
        _metrics(namespace),
        # The controller (idle check) and the web dashboard read metrics back; GetMetricData has no
        # resource-level permissions or namespace condition key.
        statement("ReadMetrics", ["cloudwatch:GetMetricData"], "*"),
    ]}
