"""The strict local AWS's IAM behaviours, on moto servers with IAM enforced: policy conditions judged against
AWS's request context (and a wrong one denied), RunInstances per resource with the CreateTags it implies, a
missing S3 key 403 without s3:ListBucket, and unsigned requests answered as AWS does. Each holds on our server and
not on plain moto (``IMGREC_STRICT_AWS=off``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from infra.local.moto_iam import set_enforcement
from infra.local.moto_server import MotoServer, free_port
from infra.local.strict import client
from tests.helpers import assert_aws_only_where_emulated, aws_client, error_code, wait_listed

AMI = "ami-12c6146b"
ACCOUNT = "123456789012"
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})
BOOT = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def arn(kind: str) -> str:
    return f"arn:aws:ec2:us-east-1:{ACCOUNT}:{kind}"


POLICIES = {
    "cw": [{"Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": "Good"}}}],
    "ec2": [{"Effect": "Allow", "Action": ["ec2:TerminateInstances", "ec2:StopInstances"], "Resource": arn("instance/*"),
             "Condition": {"StringEquals": {"aws:ResourceTag/imgrec:stack": "mine"}}},
            {"Effect": "Allow", "Action": "ec2:DescribeInstances", "Resource": "*"}],
    # PassRole to the wrong service: a launch with an instance profile must be refused
    "pass_wrong": [{"Effect": "Allow", "Action": "ec2:RunInstances", "Resource": "*"},
                   {"Effect": "Allow", "Action": "iam:PassRole", "Resource": f"arn:aws:iam::{ACCOUNT}:role/*",
                    "Condition": {"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}}}],
    "pass_right": [{"Effect": "Allow", "Action": "ec2:RunInstances", "Resource": "*"},
                   {"Effect": "Allow", "Action": "iam:PassRole", "Resource": f"arn:aws:iam::{ACCOUNT}:role/*",
                    "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}}],
    "s3_get": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::*/*"}],
    "s3_list": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::*/*"},
                {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::*"}],
}


@dataclass
class Account:
    url: str
    strict: bool
    scope: str
    keys: dict[str, dict] = field(default_factory=dict)
    templates: dict[str, str] = field(default_factory=dict)  # name -> id
    profile_arn: str = ""
    log: Path | None = None

    def of(self, service: str, who: str):
        return aws_client(self.url, service, NO_RETRIES, **self.keys[who])


def _user(iam, name: str, statements: list[dict]) -> dict:
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": statements}))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}


def _account(url: str, strict: bool, log: Path) -> Account:
    scope = f"i{uuid.uuid4().hex[:8]}"
    acct = Account(url, strict, scope, log=log)
    iam, ec2 = aws_client(url, "iam", NO_RETRIES, **BOOT), aws_client(url, "ec2", NO_RETRIES, **BOOT)
    role = iam.create_role(RoleName=f"{scope}-app", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                                "Action": "sts:AssumeRole"}]}))["Role"]
    acct.profile_arn = iam.create_instance_profile(InstanceProfileName=f"{scope}-app")["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName=f"{scope}-app", RoleName=role["RoleName"])
    for name in ("a", "b"):
        acct.templates[name] = ec2.create_launch_template(
            LaunchTemplateName=f"{scope}-lt-{name}", LaunchTemplateData={"ImageId": AMI, "InstanceType": "t3.micro"})[
            "LaunchTemplate"]["LaunchTemplateId"]
    policies = dict(POLICIES)
    # RunInstances only through template a (per resource, with ec2:LaunchTemplate), tags only at launch
    template_a = arn(f"launch-template/{acct.templates['a']}")
    policies["launch_a"] = [
        {"Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": [arn("instance/*"), arn("volume/*"), arn("network-interface/*"),
                      f"arn:aws:ec2:us-east-1::image/{AMI}", template_a],
         "Condition": {"ArnEquals": {"ec2:LaunchTemplate": template_a}}},
        {"Effect": "Allow", "Action": "ec2:CreateTags", "Resource": [arn("instance/*"), arn("volume/*")],
         "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}}}]
    policies["launch_a_no_tags"] = policies["launch_a"][:1]
    policies["admin"] = [{"Effect": "Allow", "Action": "*", "Resource": "*"}]
    for who, statements in policies.items():
        acct.keys[who] = _user(iam, f"{scope}-{who}", statements)
    return acct


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """One enforced strict server and one enforced plain moto, each with the users above."""
    logs = tmp_path_factory.mktemp("strict-iam")
    out = {}
    with MotoServer(port=free_port(), env={"IMGREC_STRICT_AWS": "on"},
                    log_file=open(logs / "strict.log", "ab")) as strict, \
            MotoServer(port=free_port(), env={"IMGREC_STRICT_AWS": "off"},
                       log_file=open(logs / "plain.log", "ab")) as plain:  # noqa: SIM115
        for name, server in (("strict", strict), ("plain", plain)):
            out[name] = _account(server.url, name == "strict", logs / f"{name}.log")
            set_enforcement(server.url, True)
        yield out


@pytest.fixture(params=["strict", "plain"])
def acct(request, servers) -> Account:
    return servers[request.param]


code_of = error_code


DENIED = ("AccessDenied", "UnauthorizedOperation", "AccessDeniedException")


# ------------------------------------------------------------ checks: True when the server behaved as AWS does
def namespace_condition(a: Account) -> bool:
    cw = a.of("cloudwatch", "cw")

    def put(ns):
        return code_of(lambda: cw.put_metric_data(Namespace=ns, MetricData=[{"MetricName": "m", "Value": 1.0}]))

    return put("Good") is None and put("Bad") in DENIED


def resource_tag_condition(a: Account) -> bool:
    admin = aws_client(a.url, "ec2", NO_RETRIES, **a.keys["admin"])

    def launch(stack):
        return admin.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "imgrec:stack", "Value": stack}]}])["Instances"][0]["InstanceId"]

    mine, theirs = launch("mine"), launch("theirs")
    ec2 = a.of("ec2", "ec2")
    wait_listed(admin, [mine, theirs])  # the strict EC2 visibility lag: an instance is NotFound before it
    return (code_of(lambda: ec2.terminate_instances(InstanceIds=[theirs])) in DENIED
            and code_of(lambda: ec2.terminate_instances(InstanceIds=[mine])) is None)


def passed_to_service_condition(a: Account) -> bool:
    def launch(who):
        return code_of(lambda: a.of("ec2", who).run_instances(
            ImageId=AMI, MinCount=1, MaxCount=1, IamInstanceProfile={"Arn": a.profile_arn}))

    return launch("pass_wrong") in DENIED and launch("pass_right") is None


def run_instances_per_resource(a: Account) -> bool:
    client.configure(a.url, a.scope, iam_run_instances="on") if a.strict else None
    try:
        tags = [{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": f"{a.scope}-x"}]}]

        def launch(who, template, **extra):
            return code_of(lambda: a.of("ec2", who).run_instances(
                MinCount=1, MaxCount=1, LaunchTemplate={"LaunchTemplateName": f"{a.scope}-lt-{template}"}, **extra))

        return (launch("launch_a", "a", TagSpecifications=tags) is None
                and launch("launch_a", "b") in DENIED  # another template: ec2:LaunchTemplate does not match
                and launch("launch_a_no_tags", "a", TagSpecifications=tags) in DENIED  # tags need CreateTags
                and launch("launch_a_no_tags", "a") is None)
    finally:
        if a.strict:
            client.clear(a.url, a.scope)


def missing_key_403_without_list(a: Account) -> bool:
    admin = aws_client(a.url, "s3", NO_RETRIES, **a.keys["admin"])
    bucket = f"{a.scope}-in"
    admin.create_bucket(Bucket=bucket)
    admin.put_object(Bucket=bucket, Key="there.jpg", Body=b"x")

    def get(who, key):
        try:
            a.of("s3", who).get_object(Bucket=bucket, Key=key)
            return 200
        except ClientError as err:
            return err.response["ResponseMetadata"]["HTTPStatusCode"]

    return (get("s3_get", "there.jpg"), get("s3_get", "gone.jpg"), get("s3_list", "gone.jpg")) == (200, 403, 404)


def unsigned_requests_get_aws_errors(a: Account) -> bool:
    statuses = []
    for headers in ({}, {"Authorization": "Bearer not-sigv4"}):
        req = urllib.request.Request(a.url + "/", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                statuses.append((resp.status, ""))
        except urllib.error.HTTPError as err:
            statuses.append((err.code, err.read().decode(errors="replace")))
    (s1, b1), (s2, b2) = statuses
    return s1 == 403 and "<Code>AccessDenied</Code>" in b1 and s2 == 400 and "AuthorizationHeaderMalformed" in b2


CHECKS = [namespace_condition, resource_tag_condition, passed_to_service_condition, run_instances_per_resource,
          missing_key_403_without_list, unsigned_requests_get_aws_errors]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_behaves_as_aws_only_where_emulated(acct, check):
    assert_aws_only_where_emulated(check, acct.strict, acct)


def test_unsigned_requests_log_no_traceback(servers):
    """An unsigned request logs one line on the strict server, not moto's 60-line traceback."""
    assert unsigned_requests_get_aws_errors(servers["strict"])
    text = servers["strict"].log.read_text(errors="replace")
    assert "Traceback" not in text and "missing signature on GET /" in text


@pytest.mark.parametrize(("block", "ctx", "holds"), [
    ({"StringEquals": {"cloudwatch:namespace": "A"}}, {"cloudwatch:namespace": ["A"]}, True),
    ({"StringEquals": {"cloudwatch:namespace": "A"}}, {"cloudwatch:namespace": ["B"]}, False),
    ({"StringEquals": {"cloudwatch:namespace": "A"}}, {}, False),  # absent key: no match
    ({"StringNotEquals": {"cloudwatch:namespace": "A"}}, {}, True),  # negated, absent: true
    ({"StringEqualsIfExists": {"cloudwatch:namespace": "A"}}, {}, True),
    ({"StringLike": {"aws:ResourceTag/stack": "im*"}}, {"aws:resourcetag/stack": ["imgrec"]}, True),
    ({"ArnEquals": {"ec2:LaunchTemplate": "arn:aws:ec2:*:*:launch-template/lt-1"}},
     {"ec2:LaunchTemplate": ["arn:aws:ec2:us-east-1:1:launch-template/lt-1"]}, True),
    ({"Null": {"aws:ResourceTag/stack": "true"}}, {}, True),
    ({"Null": {"aws:ResourceTag/stack": "false"}}, {}, False),
    ({"StringEquals": {"sts:ExternalId": "x"}}, {}, True),  # a key not modelled: left as moto had it
    ({"NoSuchOperator": {"cloudwatch:namespace": "A"}}, {"cloudwatch:namespace": ["A"]}, False),
])
def test_condition_blocks(block, ctx, holds):
    from infra.local.strict.iam_conditions import condition_holds

    keys = frozenset({"ec2:launchtemplate"})
    assert condition_holds(block, ctx, keys) is holds
