"""IAM enforced locally: the roles of the stack's template, judged by a moto server with enforcement on.

This module owns its own moto server (enforcing), so the suite's shared permissive one is
unaffected. The credentials come the way a tier gets them: the credential server assumes the
role on moto, and boto3's container-credentials provider fetches them over loopback HTTP.
What moto cannot judge (conditions, EC2 resource scoping) is checked on the policy
documents themselves in tests/test_iam.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import botocore.credentials
import botocore.session
import pytest
import requests
from botocore.exceptions import ClientError

from infra.cfn.stack import stop_web_group
from infra.clients import Clients, botocore_config, local_admin_credentials, make_client
from infra.config import Settings
from infra.local.account import LocalAccount, open_account, profile_role
from infra.local.credentials import CredentialServer, without_credentials
from infra.local.moto_iam import iam_action, principal_matches
from infra.local.moto_server import MotoServer, free_port
from infra.local.stack import provision_stack
from infra.observe import InstanceState, queue_url, web_instances
from infra.tags import STACK_TAG
from tests.helpers import wait_listed

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Enforced:
    settings: Settings
    account: LocalAccount
    admin: Clients
    server: CredentialServer
    other_bucket: str
    instance_id: str  # an app-tier-like instance the admin launched


@pytest.fixture(scope="module")
def enforced(tmp_path_factory):
    with MotoServer(port=free_port()) as moto:
        settings = Settings.from_env({}, endpoint_url=moto.url, prefix="iamt", data_dir=str(
            tmp_path_factory.mktemp("iam") / "data"), receive_wait_s=0, max_attempts=1)
        account, _ = open_account(settings)
        admin = Clients(settings, credentials=account.admin)
        settings, _ = provision_stack(settings, admin)  # the roles and policies come from the stack's template
        other = "iamt-someone-elses-bucket"
        admin.s3.create_bucket(Bucket=other)
        admin.s3.put_object(Bucket=other, Key="secret.txt", Body=b"not yours")
        inst = admin.ec2.run_instances(ImageId=settings.ami_id, MinCount=1, MaxCount=1, TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "iamt-app-1"}]}])["Instances"][0]
        with CredentialServer(settings, make_client("sts", settings, credentials=account.ec2_service)) as server:
            yield Enforced(settings, account, admin, server, other, inst["InstanceId"])


def role_session(env: dict[str, str]) -> boto3.session.Session:
    """A boto3 session whose only credentials come from the container provider with ``env``."""
    core = botocore.session.get_session()
    core.register_component("credential_provider", botocore.credentials.CredentialResolver(
        [botocore.credentials.ContainerProvider(environ=env)]))
    return boto3.session.Session(botocore_session=core)


class RoleClients:
    def __init__(self, e: Enforced, role: str):
        self._session = role_session(e.server.env_for_role(role, f"test-{role}"))
        self._settings = e.settings
        self._made: dict[str, object] = {}

    def __getattr__(self, service: str):
        if service not in self._made:
            self._made[service] = self._session.client(
                service, endpoint_url=self._settings.endpoint_url, region_name=self._settings.region,
                config=botocore_config(self._settings))
        return self._made[service]


def denied(call) -> bool:
    try:
        call()
    except ClientError as err:
        code = err.response["Error"]["Code"]
        assert code in ("AccessDenied", "UnauthorizedOperation", "AccessDeniedException"), err
        return True
    return False


def _url(e: Enforced, queue: str) -> str:
    return queue_url(e.admin.sqs, queue)


# ---------------------------------------------------------------- what each role may do

def test_the_app_role_does_its_work_and_batch_calls_count_as_their_iam_actions(enforced):
    e, s = enforced, enforced.settings
    app = RoleClients(e, e.account.app_role)
    version = e.admin.s3.put_object(Bucket=s.in_bucket, Key="a.jpg", Body=b"img")["VersionId"]
    e.admin.sqs.send_message(QueueUrl=_url(e, s.req_queue), MessageBody="work")

    req, resp = queue_url(app.sqs, s.req_queue), queue_url(app.sqs, s.resp_queue)
    got = app.sqs.receive_message(QueueUrl=req, MaxNumberOfMessages=10, VisibilityTimeout=30)["Messages"]
    handle = got[0]["ReceiptHandle"]
    assert app.s3.get_object(Bucket=s.in_bucket, Key="a.jpg", VersionId=version)["Body"].read() == b"img"
    app.s3.put_object(Bucket=s.out_bucket, Key="a", Body=b"label")
    app.sqs.change_message_visibility_batch(QueueUrl=req, Entries=[
        {"Id": "0", "ReceiptHandle": handle, "VisibilityTimeout": 30}])  # authorised as ChangeMessageVisibility
    sent = app.sqs.send_message_batch(QueueUrl=resp, Entries=[{"Id": "0", "MessageBody": "a:label"}])
    assert sent.get("Failed", []) == []  # authorised as sqs:SendMessage
    done = app.sqs.delete_message_batch(QueueUrl=req, Entries=[{"Id": "0", "ReceiptHandle": handle}])
    assert done.get("Failed", []) == []  # authorised as sqs:DeleteMessage
    app.cloudwatch.put_metric_data(Namespace=s.metrics_namespace, MetricData=[{"MetricName": "x", "Value": 1}])
    assert app.sts.get_caller_identity()["Arn"].endswith(f":assumed-role/{e.account.app_role}/test-{e.account.app_role}")
    # A missing input is a 404 the worker answers at once (the role may list its input bucket; without that S3,
    # and the strict local AWS, answer 403), and the worker records its result in the job table.
    with pytest.raises(ClientError) as missing:
        app.s3.get_object(Bucket=s.in_bucket, Key="never-uploaded.jpg")
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    from infra.jobstore import JobStore
    from infra.messages import ImageResult

    assert JobStore(app.dynamodb, s.jobs_table).complete(ImageResult("app-rec-1", "a.jpg", label="tabby",
                                                                     batch_id="b-app-role")) is True


def test_the_web_role_does_its_work(enforced):
    e, s = enforced, enforced.settings
    web = RoleClients(e, e.account.web_role)
    web.s3.put_object(Bucket=s.in_bucket, Key="w.jpg", Body=b"img")
    web.s3.head_bucket(Bucket=s.in_bucket)  # the health check: authorised as s3:ListBucket
    assert web.s3.list_objects_v2(Bucket=s.out_bucket)["KeyCount"] >= 0
    web.sqs.send_message(QueueUrl=queue_url(web.sqs, s.req_queue), MessageBody="request")
    resp = queue_url(web.sqs, s.resp_queue)
    e.admin.sqs.send_message(QueueUrl=resp, MessageBody="answer")
    msgs = web.sqs.receive_message(QueueUrl=resp, MaxNumberOfMessages=10)["Messages"]
    web.sqs.delete_message_batch(QueueUrl=resp, Entries=[{"Id": "0", "ReceiptHandle": msgs[0]["ReceiptHandle"]}])
    web.sqs.get_queue_attributes(QueueUrl=queue_url(web.sqs, s.dlq), AttributeNames=["All"])  # dashboard depth
    web.ec2.describe_instances()
    # Launched as the controller launches: through the stack's launch template (the only way the web role may),
    # tagged with the stack, so the web role may end it (ec2:LaunchTemplate, ec2:CreateAction and
    # aws:ResourceTag/imgrec:stack, judged by the strict local AWS as on AWS).
    launched = web.ec2.run_instances(MinCount=1, MaxCount=1, LaunchTemplate={
        "LaunchTemplateName": s.launch_template, "Version": "$Latest"}, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": STACK_TAG, "Value": s.prefix}]}])["Instances"][0]["InstanceId"]
    wait_listed(e.admin.ec2, [launched])  # a new instance is NotFound for a moment, as on AWS
    web.ec2.terminate_instances(InstanceIds=[launched])  # checked against the instance's ARN and tags
    web.cloudwatch.put_metric_data(Namespace=s.metrics_namespace, MetricData=[{"MetricName": "x", "Value": 1}])
    web.cloudwatch.get_metric_data(MetricDataQueries=[{"Id": "m", "MetricStat": {"Metric": {
        "Namespace": s.metrics_namespace, "MetricName": "x"}, "Period": 60, "Stat": "Sum"}}],
        StartTime=time.time() - 600, EndTime=time.time())


# ---------------------------------------------------------------- what each role may not do

APP_DENIALS = {
    "terminate instances": lambda e, c: c.ec2.terminate_instances(InstanceIds=[e.instance_id]),
    "run instances": lambda e, c: c.ec2.run_instances(ImageId=e.settings.ami_id, MinCount=1, MaxCount=1),
    "read another bucket": lambda e, c: c.s3.get_object(Bucket=e.other_bucket, Key="secret.txt"),
    "read the output bucket": lambda e, c: c.s3.get_object(Bucket=e.settings.out_bucket, Key="a"),
    "write the input bucket": lambda e, c: c.s3.put_object(Bucket=e.settings.in_bucket, Key="x", Body=b""),
    "send to the request queue": lambda e, c: c.sqs.send_message(QueueUrl=_url(e, e.settings.req_queue),
                                                                 MessageBody="forged"),
    "send a batch to the request queue": lambda e, c: c.sqs.send_message_batch(
        QueueUrl=_url(e, e.settings.req_queue), Entries=[{"Id": "0", "MessageBody": "forged"}]),
    "read the DLQ": lambda e, c: c.sqs.receive_message(QueueUrl=_url(e, e.settings.dlq)),
    "create a role": lambda e, c: c.iam.create_role(RoleName="escalate", AssumeRolePolicyDocument="{}"),
}
WEB_DENIALS = {
    "delete a bucket": lambda e, c: c.s3.delete_bucket(Bucket=e.settings.out_bucket),
    "delete the input bucket": lambda e, c: c.s3.delete_bucket(Bucket=e.settings.in_bucket),
    "delete from the DLQ": lambda e, c: c.sqs.delete_message(QueueUrl=_url(e, e.settings.dlq),
                                                              ReceiptHandle="x"),
    "delete from the DLQ in a batch": lambda e, c: c.sqs.delete_message_batch(
        QueueUrl=_url(e, e.settings.dlq), Entries=[{"Id": "0", "ReceiptHandle": "x"}]),
    "receive requests": lambda e, c: c.sqs.receive_message(QueueUrl=_url(e, e.settings.req_queue)),
    "read inputs": lambda e, c: c.s3.get_object(Bucket=e.settings.in_bucket, Key="w.jpg"),
    "read another bucket": lambda e, c: c.s3.get_object(Bucket=e.other_bucket, Key="secret.txt"),
    "delete a queue": lambda e, c: c.sqs.delete_queue(QueueUrl=_url(e, e.settings.req_queue)),
    "create a user": lambda e, c: c.iam.create_user(UserName="escalate"),
}


@pytest.mark.parametrize("what", APP_DENIALS)
def test_the_app_role_is_denied(enforced, what):
    assert denied(lambda: APP_DENIALS[what](enforced, RoleClients(enforced, enforced.account.app_role)))


@pytest.mark.parametrize("what", WEB_DENIALS)
def test_the_web_role_is_denied(enforced, what):
    assert denied(lambda: WEB_DENIALS[what](enforced, RoleClients(enforced, enforced.account.web_role)))


def test_denied_calls_changed_nothing(enforced):
    s, admin = enforced.settings, enforced.admin
    names = {b["Name"] for b in admin.s3.list_buckets()["Buckets"]}
    assert {s.in_bucket, s.out_bucket, enforced.other_bucket} <= names
    state = admin.ec2.describe_instances(InstanceIds=[enforced.instance_id])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] == "running"


def test_unknown_keys_and_bad_signatures_are_refused(enforced):
    s = enforced.settings
    with pytest.raises(ClientError) as unknown:
        make_client("s3", s, credentials={"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
                    ).list_buckets()
    assert unknown.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    forged = dict(enforced.account.admin, aws_secret_access_key="wrong")
    with pytest.raises(ClientError) as bad:
        make_client("sqs", s, credentials=forged).list_queues()
    assert bad.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_only_the_ec2_stand_in_may_assume_the_roles(enforced):
    s, acct = enforced.settings, enforced.account
    role_arn = f"arn:aws:iam::{acct.account}:role/{acct.app_role}"
    # The administrator may do anything its policy allows, but the roles trust only the EC2 service.
    assert denied(lambda: enforced.admin.sts.assume_role(RoleArn=role_arn, RoleSessionName="xx"))
    service = make_client("sts", s, credentials=acct.ec2_service)
    assert service.assume_role(RoleArn=role_arn, RoleSessionName="xx")["Credentials"]["AccessKeyId"]
    assert denied(lambda: make_client("s3", s, credentials=acct.ec2_service).list_buckets())


# ---------------------------------------------------------------- the credential server

def test_credential_server_serves_each_role_only_to_its_token(enforced):
    server, acct = enforced.server, enforced.account
    app_env = server.env_for_role(acct.app_role, "tok")
    web_env = server.env_for_role(acct.web_role, "tok")
    uri, token = app_env["AWS_CONTAINER_CREDENTIALS_FULL_URI"], app_env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    assert uri.startswith("http://127.0.0.1:")
    ok = requests.get(uri, headers={"Authorization": token}, timeout=5)
    assert ok.status_code == 200 and set(ok.json()) >= {"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}
    web_uri = web_env["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
    assert requests.get(web_uri, headers={"Authorization": token}, timeout=5).status_code == 403
    assert requests.get(uri, timeout=5).status_code == 403
    assert requests.get(uri.replace("/tok", "/other"), headers={"Authorization": token}, timeout=5).status_code == 403


def test_role_credentials_refresh_before_they_expire(enforced):
    e, s = enforced, enforced.settings
    now = [time.time()]
    with CredentialServer(s, make_client("sts", s, credentials=e.account.ec2_service), duration_s=900,
                          refresh_margin_s=300, clock=lambda: now[0]) as server:
        creds = botocore.credentials.ContainerProvider(environ=server.env_for_role(e.account.app_role)).load()
        first = creds.get_frozen_credentials().access_key
        # 900 s credentials: botocore (15-minute advisory window) asks the server on every use; the server
        # keeps handing out its copy while more than the margin is left.
        assert creds.get_frozen_credentials().access_key == first
        assert server.assumed == 1
        now[0] += 700  # by the server's clock, less than the margin is left: it assumes the role again
        second = creds.get_frozen_credentials()
        assert second.access_key != first and server.assumed == 2
        sqs = make_client("sqs", s, credentials={"aws_access_key_id": second.access_key,
                                                  "aws_secret_access_key": second.secret_key,
                                                  "aws_session_token": second.token})
        assert sqs.get_queue_url(QueueName=s.resp_queue)["QueueUrl"]


def test_a_credential_server_in_another_process_uses_the_keys_the_stack_wrote(enforced):
    s = enforced.settings
    assert (Path(s.data_dir) / "aws" / "ec2-service").stat().st_mode & 0o077 == 0
    with CredentialServer.for_stack(s) as server:
        creds = botocore.credentials.ContainerProvider(
            environ=server.env_for_role(enforced.account.app_role, "runner")).load().get_frozen_credentials()
    sqs = make_client("sqs", s, credentials={"aws_access_key_id": creds.access_key,
                                              "aws_secret_access_key": creds.secret_key,
                                              "aws_session_token": creds.token})
    assert sqs.get_queue_url(QueueName=s.req_queue)["QueueUrl"]
    with pytest.raises(RuntimeError, match="local stack running"):
        CredentialServer.for_stack(s.replace(data_dir=s.data_dir + "-elsewhere"))


def test_a_tier_process_gets_its_role_from_the_environment_and_nothing_else(enforced):
    e = enforced
    env = {**without_credentials(os.environ), **e.settings.to_env(),
           **e.server.env_for_role(e.account.app_role, "child"),
           # keys of someone else in the environment must not win over the role (boto3's chain would)
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    code = ("from infra.clients import Clients; from infra.config import Settings; c = Clients(Settings.from_env()); "
            "print(c.sts.get_caller_identity()['Arn']); c.sqs.get_queue_url(QueueName=c.settings.resp_queue)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith(f":assumed-role/{e.account.app_role}/child")


# ---------------------------------------------------------------- tools outside the stack; the web instance

def test_the_admin_credentials_file_works_for_infra_status_without_flags(enforced, tmp_path):
    e, s = enforced, enforced.settings
    running = [i for i in web_instances(e.admin.ec2, s) if i.state == InstanceState.RUNNING]
    assert len(running) == 1  # exactly one web instance record, from the stack's web group
    first = running[0].id
    desc = e.admin.ec2.describe_instances(InstanceIds=[first])["Reservations"][0]["Instances"][0]
    assert desc["IamInstanceProfile"]["Arn"].endswith(f"instance-profile/{e.account.web_role}")
    assert profile_role(e.admin.iam, desc["IamInstanceProfile"]["Arn"]) == e.account.web_role

    cred_file = Path(s.data_dir) / "aws" / "credentials"
    assert cred_file.stat().st_mode & 0o077 == 0  # owner only
    assert local_admin_credentials(s) == e.account.admin
    env = {**without_credentials(os.environ), "AWS_ENDPOINT_URL": s.endpoint_url, "IMGREC_PREFIX": s.prefix,
           "IMGREC_DATA_DIR": s.data_dir}
    out = subprocess.run([sys.executable, "-m", "infra", "status"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"{s.in_bucket}" in out.stdout and "missing" not in out.stdout
    assert f"{s.web_instance_name}" in out.stdout and "1 running" in out.stdout

    # The same command without the file (another data dir) is refused: the file is what let it in.
    bare = subprocess.run([sys.executable, "-m", "infra", "status"], cwd=ROOT, capture_output=True, text=True,
                          env={**env, "IMGREC_DATA_DIR": str(tmp_path)}, timeout=60)
    assert bare.returncode != 0 or "missing" in bare.stdout

    assert stop_web_group(e.admin, s, wait_s=30, poll_s=0.2) == [first]
    assert web_instances(e.admin.ec2, s) == []


def test_local_iam_off_restores_moto_permissive_defaults(tmp_path):
    with MotoServer(port=free_port()) as moto:
        settings = Settings.from_env({"IMGREC_LOCAL_IAM": "off"}, endpoint_url=moto.url, prefix="iamoff",
                                     data_dir=str(tmp_path / "data"), max_attempts=1)
        account, report = open_account(settings)
        assert ("moto IAM enforcement", "off (IMGREC_LOCAL_IAM=off)") in report.lines
        anyone = Clients(settings, credentials={"aws_access_key_id": "testing", "aws_secret_access_key": "testing"})
        settings, _ = provision_stack(settings, anyone)
        with CredentialServer(settings, make_client("sts", settings, credentials=account.ec2_service)) as server:
            app = RoleClients(Enforced(settings, account, anyone, server, "", ""), account.app_role)
            # outside the app role's policy, allowed because nothing is enforced
            app.sqs.send_message(QueueUrl=queue_url(anyone.sqs, settings.req_queue), MessageBody="x")
            app.s3.delete_bucket(Bucket=settings.out_bucket)


# ---------------------------------------------------------------- the emulator corrections, as plain functions

@pytest.mark.parametrize("moto_action, iam", [
    ("sqs:SendMessageBatch", "sqs:SendMessage"),
    ("sqs:DeleteMessageBatch", "sqs:DeleteMessage"),
    ("sqs:ChangeMessageVisibilityBatch", "sqs:ChangeMessageVisibility"),
    ("sqs:SendMessage", "sqs:SendMessage"),
    ("monitoring:PutMetricData", "cloudwatch:PutMetricData"),
    ("s3:HeadBucket", "s3:ListBucket"),
    ("s3:GetObjectVersion", "s3:GetObjectVersion"),
    ("ec2:RunInstances", "ec2:RunInstances"),
    ("dynamodb:TransactWriteItems", "dynamodb:UpdateItem"),
])
def test_moto_actions_map_to_the_iam_actions_aws_authorises(moto_action, iam):
    assert iam_action(moto_action) == iam


USER = "arn:aws:iam::123456789012:user/"


@pytest.mark.parametrize("principal, caller, admitted", [
    ({"Service": "ec2.amazonaws.com"}, USER + "imgrec@ec2.amazonaws.com", True),
    ({"Service": "ec2.amazonaws.com"}, USER + "imgrec-local-admin", False),
    ({"Service": "ec2.amazonaws.com"}, USER + "x@lambda.amazonaws.com", False),
    ({"Service": ["lambda.amazonaws.com", "ec2.amazonaws.com"]}, USER + "s@ec2.amazonaws.com", True),
    ({"AWS": USER + "bob"}, USER + "bob", True),
    ({"AWS": [USER + "bob"]}, USER + "eve", False),
    ({"AWS": "arn:aws:iam::123456789012:root"}, USER + "eve", True),
    ({"AWS": "arn:aws:iam::999999999999:root"}, USER + "eve", False),
    ("*", USER + "eve", True),
])
def test_trust_policy_principals(principal, caller, admitted):
    assert principal_matches(principal, caller) is admitted
