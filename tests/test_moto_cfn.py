"""Our launcher's CloudFormation corrections (infra/local/moto_cfn_*.py), each shown twice: on the suite's moto
server, which behaves as AWS documents, and on plain moto (moto's own server, none of our corrections), which
does not. A correction whose test passes on plain moto would be correcting nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from botocore.exceptions import ClientError

from infra.clients import make_client
from infra.config import Settings
from infra.local.moto_server import MotoServer, free_port, is_moto
from tests.helpers import wait_until


class PlainMoto(MotoServer):
    """moto's own server: ``python -m moto.server``, without our speed-ups or corrections."""

    def start(self) -> PlainMoto:
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_until(lambda: is_moto(self.url, timeout=0.5), 30, what="plain moto to answer")
        return self


@pytest.fixture(scope="module")
def plain_moto():
    with PlainMoto(port=free_port()) as server:
        yield server


@pytest.fixture(params=["ours", "plain"])
def moto(request, moto_server, plain_moto):
    """(which, a cloudformation-able Settings) for the suite's server and for plain moto."""
    url = moto_server.url if request.param == "ours" else plain_moto.url
    return request.param, Settings(endpoint_url=url, prefix=f"c{uuid.uuid4().hex[:8]}", max_attempts=1)


def client(settings, service: str):
    return make_client(service, settings)


def put_stack(settings, template: dict, name: str | None = None, parameters: dict | None = None,
              kind: str = "CREATE") -> str:
    """Create and execute a change set; returns the stack's final status (or the error plain moto answers)."""
    cfn, name = client(settings, "cloudformation"), name or settings.prefix
    try:
        made = cfn.create_change_set(StackName=name, ChangeSetName=f"cs{uuid.uuid4().hex[:8]}", ChangeSetType=kind,
                                     TemplateBody=json.dumps(template), Capabilities=["CAPABILITY_NAMED_IAM"],
                                     Parameters=[{"ParameterKey": k, "ParameterValue": v}
                                                 for k, v in (parameters or {}).items()])
        cfn.execute_change_set(ChangeSetName=made["Id"])
    except ClientError as err:
        return f"error {err.response['Error']['Code']}"
    return cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]


def queue(name: str, **props) -> dict:
    return {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": name, **props}}


def test_a_bucket_gets_its_versioning_and_public_access_block(moto):
    which, s = moto
    bucket = {"Type": "AWS::S3::Bucket", "Properties": {
        "BucketName": f"{s.prefix}-b", "VersioningConfiguration": {"Status": "Enabled"},
        "PublicAccessBlockConfiguration": {k: True for k in ("BlockPublicAcls", "BlockPublicPolicy",
                                                             "IgnorePublicAcls", "RestrictPublicBuckets")}}}
    assert put_stack(s, {"Resources": {"B": bucket}}) == "CREATE_COMPLETE"
    s3 = client(s, "s3")
    versioning = s3.get_bucket_versioning(Bucket=f"{s.prefix}-b").get("Status")
    try:
        block = all(s3.get_public_access_block(Bucket=f"{s.prefix}-b")["PublicAccessBlockConfiguration"].values())
    except ClientError:
        block = False
    assert (versioning, block) == (("Enabled", True) if which == "ours" else (None, False))


def test_a_stack_update_reaches_every_attribute_of_a_queue(moto):
    which, s = moto
    dlq = {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": f"{s.prefix}-dlq"}}

    def template(receives: int, retention: int) -> dict:
        return {"Resources": {"D": dlq, "Q": queue(f"{s.prefix}-q", MessageRetentionPeriod=retention, RedrivePolicy={
            "deadLetterTargetArn": {"Fn::GetAtt": ["D", "Arn"]}, "maxReceiveCount": receives})}}

    assert put_stack(s, template(3, 3600)) == "CREATE_COMPLETE"
    assert put_stack(s, template(2, 7200), kind="UPDATE") == "UPDATE_COMPLETE"
    sqs = client(s, "sqs")
    got = sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName=f"{s.prefix}-q")["QueueUrl"],
                                   AttributeNames=["All"])["Attributes"]
    seen = (json.loads(got["RedrivePolicy"])["maxReceiveCount"], got["MessageRetentionPeriod"])
    assert [str(v) for v in seen] == (["2", "7200"] if which == "ours" else ["3", "3600"])


def test_each_resource_operation_is_an_event(moto):
    which, s = moto
    put_stack(s, {"Resources": {"Q": queue(f"{s.prefix}-q")}})
    events = client(s, "cloudformation").describe_stack_events(StackName=s.prefix)["StackEvents"]
    of_q = [e["ResourceStatus"] for e in reversed(events) if e["LogicalResourceId"] == "Q"]
    assert of_q == (["CREATE_IN_PROGRESS", "CREATE_COMPLETE"] if which == "ours" else [])


def test_a_failed_create_rolls_back_and_says_why(moto):
    which, s = moto
    role = f"{s.prefix}-taken"
    client(s, "iam").create_role(RoleName=role, AssumeRolePolicyDocument="{}")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                                     "Action": "sts:AssumeRole"}]}
    template = {"Resources": {
        "Q": queue(f"{s.prefix}-q"),
        "R": {"Type": "AWS::IAM::Role", "DependsOn": "Q",
              "Properties": {"RoleName": role, "AssumeRolePolicyDocument": trust}}}}
    status = put_stack(s, template)
    queues = client(s, "sqs").list_queues(QueueNamePrefix=f"{s.prefix}-q").get("QueueUrls", [])
    if which == "plain":
        assert status != "ROLLBACK_COMPLETE" and queues  # half a stack left
        return
    assert status == "ROLLBACK_COMPLETE" and queues == []
    reasons = [(e["LogicalResourceId"], e["ResourceStatus"], e.get("ResourceStatusReason", "")) for e in
               client(s, "cloudformation").describe_stack_events(StackName=s.prefix)["StackEvents"]]
    assert any(r[:2] == ("R", "CREATE_FAILED") and "EntityAlreadyExists" in r[2] for r in reasons)
    assert ("Q", "DELETE_COMPLETE") in {r[:2] for r in reasons}


def test_retain_except_on_create_keeps_the_bucket_when_the_stack_goes(moto):
    which, s = moto
    bucket = {"Type": "AWS::S3::Bucket", "DeletionPolicy": "RetainExceptOnCreate",
              "Properties": {"BucketName": f"{s.prefix}-kept"}}
    put_stack(s, {"Resources": {"B": bucket}})
    client(s, "cloudformation").delete_stack(StackName=s.prefix)
    names = {b["Name"] for b in client(s, "s3").list_buckets()["Buckets"]}
    assert (f"{s.prefix}-kept" in names) is (which == "ours")


def test_a_stack_made_by_a_change_set_has_its_outputs(moto):
    which, s = moto
    put_stack(s, {"Resources": {"Q": queue(f"{s.prefix}-q")}, "Outputs": {"Url": {"Value": {"Ref": "Q"}}}})
    outputs = client(s, "cloudformation").describe_stacks(StackName=s.prefix)["Stacks"][0].get("Outputs", [])
    assert bool(outputs) is (which == "ours")


CONDITIONAL = {
    "Parameters": {"Name": {"Type": "String"}, "Extra": {"Type": "String", "Default": "no"}},
    "Conditions": {"WithExtra": {"Fn::Equals": [{"Ref": "Extra"}, "yes"]}},
    "Resources": {"Q": queue({"Fn::Sub": "${Name}"}),
                  "X": {"Type": "AWS::SQS::Queue", "Condition": "WithExtra"}}}


def _changes(s, parameters: dict, kind: str = "UPDATE") -> tuple[str | None, list | str]:
    """(the change set's id, its changes as (action, logical id, replacement), or why there are none)."""
    cfn = client(s, "cloudformation")
    try:
        made = cfn.create_change_set(StackName=s.prefix, ChangeSetName=f"cs{uuid.uuid4().hex[:8]}", ChangeSetType=kind,
                                     TemplateBody=json.dumps(CONDITIONAL),
                                     Parameters=[{"ParameterKey": k, "ParameterValue": v}
                                                 for k, v in parameters.items()])
        found = cfn.describe_change_set(ChangeSetName=made["Id"])
    except ClientError as err:
        return None, f"error {err.response['Error']['Code']}"
    except Exception:  # noqa: BLE001 - plain moto answers some change sets with a 500 page
        return None, "error 500"
    if found["Status"] == "FAILED":
        return made["Id"], found["StatusReason"]
    return made["Id"], sorted((c["ResourceChange"]["Action"], c["ResourceChange"]["LogicalResourceId"],
                               c["ResourceChange"].get("Replacement")) for c in found["Changes"])


def test_change_sets_follow_conditions_and_parameters_and_flag_replacements(moto):
    which, s = moto
    name = f"{s.prefix}-q"
    made, created = _changes(s, {"Name": name, "Extra": "no"}, "CREATE")
    assert created == ([("Add", "Q", None)] if which == "ours" else [("Add", "Q", None), ("Add", "X", None)])
    client(s, "cloudformation").execute_change_set(ChangeSetName=made)
    # the queue's name is a parameter: a new one replaces the queue (QueueName is create-only)
    _, renamed = _changes(s, {"Name": f"{s.prefix}-r", "Extra": "no"})
    assert (renamed == [("Modify", "Q", "True")]) is (which == "ours"), renamed
    # the same again: AWS makes the change set and says it has nothing; plain moto refuses the call
    _, same = _changes(s, {"Name": name, "Extra": "no"})
    assert ("didn't contain changes" in same) if which == "ours" else same == "error ValidationError", same


def test_an_update_adds_and_removes_what_its_conditions_say(moto):
    which, s = moto
    name = f"{s.prefix}-q"
    put_stack(s, CONDITIONAL, parameters={"Name": name})
    sqs = client(s, "sqs")
    put_stack(s, CONDITIONAL, parameters={"Name": name, "Extra": "yes"}, kind="UPDATE")
    extra = [u for u in sqs.list_queues(QueueNamePrefix=f"{s.prefix}-X").get("QueueUrls", [])]
    put_stack(s, CONDITIONAL, parameters={"Name": name, "Extra": "no"}, kind="UPDATE")
    left = [u for u in sqs.list_queues(QueueNamePrefix=f"{s.prefix}-X").get("QueueUrls", [])]
    assert (len(extra), len(left)) == ((1, 0) if which == "ours" else (0, 0))


def test_a_load_balancer_gets_its_attributes_and_its_target_group_goes_with_the_stack(moto):
    which, s = moto
    ec2 = client(s, "ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = sorted({x["AvailabilityZone"]: x["SubnetId"] for x in ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]}.values())[:2]
    put_stack(s, {"Resources": {
        "LB": {"Type": "AWS::ElasticLoadBalancingV2::LoadBalancer", "Properties": {
            "Subnets": subnets, "LoadBalancerAttributes": [{"Key": "idle_timeout.timeout_seconds", "Value": "330"}]}},
        "TG": {"Type": "AWS::ElasticLoadBalancingV2::TargetGroup",
               "Properties": {"Port": 80, "Protocol": "HTTP", "VpcId": vpc}}},
        "Outputs": {"Lb": {"Value": {"Ref": "LB"}}, "Tg": {"Value": {"Ref": "TG"}}}})
    resources = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in client(
        s, "cloudformation").describe_stack_resources(StackName=s.prefix)["StackResources"]}
    elb = client(s, "elbv2")
    attrs = {a["Key"]: a["Value"] for a in elb.describe_load_balancer_attributes(
        LoadBalancerArn=resources["LB"])["Attributes"]}
    client(s, "cloudformation").delete_stack(StackName=s.prefix)
    groups = [g["TargetGroupArn"] for g in elb.describe_target_groups()["TargetGroups"]]
    if which == "ours":
        assert attrs["idle_timeout.timeout_seconds"] == "330" and resources["TG"] not in groups
    else:
        assert attrs.get("idle_timeout.timeout_seconds") != "330" and resources["TG"] in groups
