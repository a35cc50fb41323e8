"""Least privilege, read straight from the generated policy documents."""

from __future__ import annotations

import json

import pytest

from infra.config import Settings
from infra.deploy.iam import UNSCOPED_ACTIONS, Arns, app_policy, partition_for, web_policy
from infra.tags import STACK_TAG

ARNS = Arns("eu-west-1", "111122223333")
SETTINGS = Settings(prefix="lp", region="eu-west-1", metrics_namespace="NsX")


def _statements(policy: dict) -> list[dict]:
    assert policy["Version"] == "2012-10-17"
    return policy["Statement"]


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _grants(policy: dict) -> dict[str, set[str]]:
    """action -> resources it is allowed on."""
    out: dict[str, set[str]] = {}
    for st in _statements(policy):
        assert st["Effect"] == "Allow"
        for action in _as_list(st["Action"]):
            out.setdefault(action, set()).update(_as_list(st["Resource"]))
    return out


def _web() -> dict:
    return web_policy(SETTINGS, ARNS, launch_template_id="lt-0abc", app_sg_id="sg-0app", ami_id="ami-0base")


@pytest.mark.parametrize("policy", [app_policy(SETTINGS, ARNS), _web()], ids=["app", "web"])
def test_no_wildcard_actions_and_star_resource_only_where_aws_requires(policy):
    json.loads(json.dumps(policy))  # a plain JSON document
    for st in _statements(policy):
        for action in _as_list(st["Action"]):
            assert "*" not in action, st
            assert ":" in action
        if "*" in _as_list(st["Resource"]):
            assert set(_as_list(st["Action"])) <= UNSCOPED_ACTIONS, st
            if "cloudwatch:PutMetricData" in _as_list(st["Action"]):
                assert st["Condition"] == {"StringEquals": {"cloudwatch:namespace": "NsX"}}


def test_app_policy_is_exactly_the_worker_needs():
    grants = _grants(app_policy(SETTINGS, ARNS))
    req = "arn:aws:sqs:eu-west-1:111122223333:lp-req-queue"
    resp = "arn:aws:sqs:eu-west-1:111122223333:lp-resp-queue"
    replies = "arn:aws:sqs:eu-west-1:111122223333:lp-reply-*"  # answers to the web processes' own queues
    assert grants == {
        "sqs:ReceiveMessage": {req}, "sqs:DeleteMessage": {req}, "sqs:ChangeMessageVisibility": {req},
        "sqs:GetQueueAttributes": {req}, "sqs:GetQueueUrl": {req, resp}, "sqs:SendMessage": {resp, replies},
        "s3:GetObject": {"arn:aws:s3:::lp-in-bucket/*"}, "s3:GetObjectVersion": {"arn:aws:s3:::lp-in-bucket/*"},
        "s3:PutObject": {"arn:aws:s3:::lp-out-bucket/*"}, "cloudwatch:PutMetricData": {"*"},
        # a missing input is a 404 (answered at once, naming the key), not a 403 retried to the DLQ
        "s3:ListBucket": {"arn:aws:s3:::lp-in-bucket"},
        # results recorded in the job table, where any web process finds them (no index, no other table)
        "dynamodb:GetItem": {"arn:aws:dynamodb:eu-west-1:111122223333:table/lp-jobs"},
        "dynamodb:UpdateItem": {"arn:aws:dynamodb:eu-west-1:111122223333:table/lp-jobs"},
    }


def test_web_policy_scopes_ec2_by_template_tag_and_role():
    policy = _web()
    grants = _grants(policy)
    assert not any(a.startswith("s3:Delete") or a.startswith("iam:Create") for a in grants)
    assert grants["s3:PutObject"] == {"arn:aws:s3:::lp-in-bucket/*"}
    assert grants["sqs:SendMessage"] == {"arn:aws:sqs:eu-west-1:111122223333:lp-req-queue"}
    replies = "arn:aws:sqs:eu-west-1:111122223333:lp-reply-*"
    # the controller's reaper reads dead-lettered requests to mark their jobs failed; it never deletes them
    dlq = "arn:aws:sqs:eu-west-1:111122223333:lp-req-dlq"
    assert grants["sqs:ReceiveMessage"] == {"arn:aws:sqs:eu-west-1:111122223333:lp-resp-queue", replies, dlq}
    assert dlq not in grants["sqs:DeleteMessage"]
    assert grants["sqs:CreateQueue"] == grants["sqs:DeleteQueue"] == grants["sqs:TagQueue"] - {
        "arn:aws:sqs:eu-west-1:111122223333:lp-resp-queue"} == {replies}  # only under the stack's prefix
    table = "arn:aws:dynamodb:eu-west-1:111122223333:table/lp-jobs"
    assert grants["dynamodb:UpdateItem"] == {table, table + "/index/*"}
    assert not any(a.startswith("dynamodb:") and a.endswith(("Table", "Tables")) and a != "dynamodb:DescribeTable"
                   for a in grants)  # no creating or deleting tables
    assert grants["iam:PassRole"] == {"arn:aws:iam::111122223333:role/lp-app-role"}
    assert grants["cloudwatch:GetMetricData"] == {"*"}  # controller idle check, web dashboard
    by_sid = {st["Sid"]: st for st in _statements(policy)}
    run = by_sid["LaunchAppTier"]
    template = "arn:aws:ec2:eu-west-1:111122223333:launch-template/lt-0abc"
    assert run["Condition"] == {"ArnEquals": {"ec2:LaunchTemplate": template}}
    assert {"arn:aws:ec2:eu-west-1:111122223333:security-group/sg-0app",
            "arn:aws:ec2:eu-west-1::image/ami-0base", template} <= set(run["Resource"])
    manage = by_sid["ManageOwnInstances"]
    assert set(manage["Action"]) == {"ec2:StartInstances", "ec2:StopInstances", "ec2:TerminateInstances"}
    assert manage["Condition"] == {"StringEquals": {f"aws:ResourceTag/{STACK_TAG}": "lp"}}
    assert by_sid["TagAtLaunch"]["Condition"] == {"StringEquals": {"ec2:CreateAction": "RunInstances"}}
    assert by_sid["PassAppRole"]["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}


def test_partition_follows_region():
    assert partition_for("us-east-1") == "aws"
    assert partition_for("cn-north-1") == "aws-cn"
    assert Arns("us-gov-west-1", "1").bucket("b") == "arn:aws-us-gov:s3:::b"


def test_app_role_reads_exactly_the_model_artifact_it_boots_with():
    uri = "s3://lp-model-bucket/models/efficientnet_lite0/" + "ab" * 32 + "/"
    without = _grants(app_policy(SETTINGS, ARNS))
    grants = _grants(app_policy(SETTINGS.replace(model_uri=uri), ARNS))
    prefix = "arn:aws:s3:::lp-model-bucket/models/efficientnet_lite0/" + "ab" * 32
    assert grants.pop("s3:GetObject") == {"arn:aws:s3:::lp-in-bucket/*", f"{prefix}/model.onnx",
                                          f"{prefix}/manifest.json"}
    without.pop("s3:GetObject")
    assert grants == without  # nothing else new: no list, no wildcard, no write
    by_sid = {st["Sid"]: st for st in _statements(app_policy(SETTINGS.replace(model_uri=uri), ARNS))}
    assert by_sid["ReadModelArtifact"]["Action"] == ["s3:GetObject"]
    assert not any("model-bucket" in json.dumps(st) for st in _statements(_web()))
