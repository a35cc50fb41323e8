"""Least privilege, read from the policies as the stack resolves them: the template is deployed once on the
suite's moto server and each role's document read back from IAM (region, account, names, ids filled in)."""

from __future__ import annotations

import json

import pytest

from infra.cfn import names
from infra.cfn.policies import UNSCOPED_ACTIONS
from infra.cfn.template import render
from infra.clients import Clients, make_client
from infra.config import Settings
from infra.local.stack import provision_stack
from infra.tags import STACK_TAG, Role

SHA = "ab" * 32


@pytest.fixture(scope="module")
def deployed(moto_server, model_dir):
    """One stack for the module: (settings, {role: its resolved policy}, account, outputs)."""
    settings = Settings.from_env({}, endpoint_url=moto_server.url, prefix="lp", region="us-east-1",
                                 metrics_namespace="NsX", model_dir=model_dir, max_attempts=3)
    clients = Clients(settings)
    settings, outputs = provision_stack(settings, clients, ModelArtifactSha256=SHA)
    docs = {}
    for role in (Role.APP, Role.WEB):
        doc = clients.iam.get_role_policy(RoleName=names.role_name(settings.prefix, role),
                                          PolicyName=names.policy_name(settings.prefix, role))["PolicyDocument"]
        docs[role] = json.loads(doc) if isinstance(doc, str) else doc
    account = make_client("sts", settings).get_caller_identity()["Account"]
    return settings, docs, account, outputs


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _grants(policy: dict) -> dict[str, set[str]]:
    """action -> resources it is allowed on."""
    out: dict[str, set[str]] = {}
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow"
        for action in _as_list(st["Action"]):
            out.setdefault(action, set()).update(_as_list(st["Resource"]))
    return out


@pytest.mark.parametrize("role", [Role.APP, Role.WEB])
def test_no_wildcard_actions_and_star_resource_only_where_aws_requires(deployed, role):
    _, docs, _, _ = deployed
    assert docs[role]["Version"] == "2012-10-17"
    for st in docs[role]["Statement"]:
        for action in _as_list(st["Action"]):
            assert "*" not in action and ":" in action, st
        if "*" in _as_list(st["Resource"]):
            assert set(_as_list(st["Action"])) <= UNSCOPED_ACTIONS, st
            if "cloudwatch:PutMetricData" in _as_list(st["Action"]):
                assert st["Condition"] == {"StringEquals": {"cloudwatch:namespace": "NsX"}}


def test_app_policy_is_exactly_what_the_worker_needs(deployed):
    settings, docs, account, outputs = deployed
    sqs = f"arn:aws:sqs:us-east-1:{account}"
    req, resp, replies = f"{sqs}:lp-req-queue", f"{sqs}:lp-resp-queue", f"{sqs}:lp-reply-*"
    artifact = f"arn:aws:s3:::{outputs['ModelBucketName']}/models/{settings.model}/{SHA}"
    assert _grants(docs[Role.APP]) == {
        "sqs:ReceiveMessage": {req}, "sqs:DeleteMessage": {req}, "sqs:ChangeMessageVisibility": {req},
        "sqs:GetQueueAttributes": {req}, "sqs:GetQueueUrl": {req, resp}, "sqs:SendMessage": {resp, replies},
        "s3:GetObject": {"arn:aws:s3:::lp-in-bucket/*", f"{artifact}/model.onnx", f"{artifact}/manifest.json"},
        "s3:GetObjectVersion": {"arn:aws:s3:::lp-in-bucket/*"},
        # a missing input is a 404 (answered at once, naming the key), not a 403 retried to the DLQ
        "s3:ListBucket": {"arn:aws:s3:::lp-in-bucket"},
        "s3:PutObject": {"arn:aws:s3:::lp-out-bucket/*"}, "cloudwatch:PutMetricData": {"*"},
        # results recorded in the job table, where any web process finds them (no index, no other table)
        "dynamodb:GetItem": {f"arn:aws:dynamodb:us-east-1:{account}:table/lp-jobs"},
        "dynamodb:UpdateItem": {f"arn:aws:dynamodb:us-east-1:{account}:table/lp-jobs"},
    }


def test_web_policy_scopes_ec2_by_template_tag_and_role(deployed):
    _, docs, account, outputs = deployed
    policy = docs[Role.WEB]
    grants = _grants(policy)
    region = f"us-east-1:{account}"
    assert not any(a.startswith("s3:Delete") or a.startswith("iam:Create") for a in grants)
    assert grants["s3:PutObject"] == {"arn:aws:s3:::lp-in-bucket/*"}
    assert grants["sqs:SendMessage"] == {f"arn:aws:sqs:{region}:lp-req-queue"}
    replies = f"arn:aws:sqs:{region}:lp-reply-*"
    # the controller's reaper reads dead-lettered requests to mark their jobs failed; it never deletes them
    dlq = f"arn:aws:sqs:{region}:lp-req-dlq"
    assert grants["sqs:ReceiveMessage"] == {f"arn:aws:sqs:{region}:lp-resp-queue", replies, dlq}
    assert dlq not in grants["sqs:DeleteMessage"]
    assert grants["sqs:CreateQueue"] == grants["sqs:DeleteQueue"] == {replies}  # only under the stack's prefix
    table = f"arn:aws:dynamodb:{region}:table/lp-jobs"
    assert grants["dynamodb:UpdateItem"] == {table, table + "/index/*"}
    assert not any(a.startswith("dynamodb:") and a.endswith(("Table", "Tables")) and a != "dynamodb:DescribeTable"
                   for a in grants)  # no creating or deleting tables
    assert grants["iam:PassRole"] == {f"arn:aws:iam::{account}:role/lp-app-role"}
    assert grants["cloudwatch:GetMetricData"] == {"*"}  # controller idle check, web dashboard
    by_sid = {st["Sid"]: st for st in policy["Statement"]}
    run = by_sid["LaunchAppTier"]
    template = f"arn:aws:ec2:{region}:launch-template/{outputs['AppLaunchTemplateId']}"
    assert run["Condition"] == {"ArnEquals": {"ec2:LaunchTemplate": template}}
    assert any(r.startswith(f"arn:aws:ec2:{region}:security-group/sg-") for r in run["Resource"])
    assert any(r.startswith("arn:aws:ec2:us-east-1::image/ami-") for r in run["Resource"]) and template in run[
        "Resource"]
    manage = by_sid["ManageOwnInstances"]
    assert set(manage["Action"]) == {"ec2:StartInstances", "ec2:StopInstances", "ec2:TerminateInstances"}
    assert manage["Condition"] == {"StringEquals": {f"aws:ResourceTag/{STACK_TAG}": "lp"}}
    assert by_sid["TagAtLaunch"]["Condition"] == {"StringEquals": {"ec2:CreateAction": "RunInstances"}}
    assert by_sid["PassAppRole"]["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    assert not any(outputs["ModelBucketName"] in json.dumps(st) for st in policy["Statement"])


def test_every_arn_follows_the_partition_the_stack_is_in():
    """The template writes no partition, region or account: aws-cn and aws-us-gov work as they come."""
    text = json.dumps(render(Settings(prefix="lp"))["Resources"])
    assert "arn:aws:" not in text and "arn:${AWS::Partition}:" in text
