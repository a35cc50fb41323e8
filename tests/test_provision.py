"""Provisioning the stack's data part (its template's buckets, queues and job table) against a real moto server
over HTTP: attributes, idempotence, teardown."""

import json
import subprocess
import sys
import time

import pytest
from botocore.exceptions import ClientError

from infra.cfn.stack import provision, teardown
from infra.messages import reply_queue_name
from infra.tags import STACK_TAG
from tests.helpers import child_env, wait_listed


def _queue_attrs(clients, name):
    url = clients.sqs.get_queue_url(QueueName=name)["QueueUrl"]
    return url, clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]


def test_provision_creates_every_resource_with_its_settings(settings, clients):
    report = provision(settings, clients)
    assert report.changed
    assert [a for _, a in report.lines] == ["created"] * 6
    assert clients.cloudformation.describe_stacks(StackName=settings.prefix)["Stacks"][0]["StackStatus"] \
        == "CREATE_COMPLETE"
    table = clients.dynamodb.describe_table(TableName=settings.jobs_table)["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["batch"]
    tags = clients.dynamodb.list_tags_of_resource(ResourceArn=table["TableArn"])["Tags"]
    assert {"Key": STACK_TAG, "Value": settings.prefix} in tags

    s3 = clients.s3
    for bucket in (settings.in_bucket, settings.out_bucket):
        pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert pab == {"BlockPublicAcls": True, "IgnorePublicAcls": True,
                       "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
        rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]}
        assert tags[STACK_TAG] == settings.prefix
    assert s3.get_bucket_versioning(Bucket=settings.in_bucket)["Status"] == "Enabled"
    assert "Status" not in s3.get_bucket_versioning(Bucket=settings.out_bucket)

    _, dlq = _queue_attrs(clients, settings.dlq)
    _, req = _queue_attrs(clients, settings.req_queue)
    assert req["MaximumMessageSize"] == "1024"
    assert req["ReceiveMessageWaitTimeSeconds"] == str(settings.receive_wait_s)
    assert req["VisibilityTimeout"] == str(settings.visibility_timeout_s)
    redrive = json.loads(req["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq["QueueArn"]
    assert int(redrive["maxReceiveCount"]) == 3
    _, resp = _queue_attrs(clients, settings.resp_queue)
    assert resp["ReceiveMessageWaitTimeSeconds"] == str(settings.receive_wait_s)
    assert int(dlq["MessageRetentionPeriod"]) == 14 * 24 * 3600


def test_request_queue_rejects_messages_over_1kb(stack, clients):
    url = clients.sqs.get_queue_url(QueueName=stack.req_queue)["QueueUrl"]
    clients.sqs.send_message(QueueUrl=url, MessageBody="x" * 1024)
    with pytest.raises(ClientError):
        clients.sqs.send_message(QueueUrl=url, MessageBody="x" * 1025)


def test_provision_twice_changes_nothing(settings, clients):
    provision(settings, clients)
    again = provision(settings, clients)
    assert not again.changed
    assert again.lines == [(f"stack {settings.prefix}", "unchanged")]


def test_teardown_empties_and_removes_the_stacks_data_and_nothing_else(stack, clients):
    s3 = clients.s3
    for i in range(3):  # several versions of one key: all must go
        s3.put_object(Bucket=stack.in_bucket, Key="cat.jpg", Body=b"v%d" % i)
    s3.put_object(Bucket=stack.out_bucket, Key="cat", Body=b"tabby")
    s3.delete_object(Bucket=stack.in_bucket, Key="cat.jpg")  # leaves a delete marker
    foreign = f"{stack.prefix}-foreign"
    s3.create_bucket(Bucket=foreign)
    foreign_q = clients.sqs.create_queue(QueueName=f"{stack.prefix}-foreign-q")["QueueUrl"]
    ours = reply_queue_name(stack.prefix, "0123456789ab")  # a web process's, left behind
    clients.sqs.create_queue(QueueName=ours, tags={STACK_TAG: stack.prefix})
    untagged = clients.sqs.create_queue(QueueName=reply_queue_name(stack.prefix, "ba9876543210"))["QueueUrl"]

    report = dict(teardown(stack, clients).lines)
    assert report[f"queue {ours}"] == "deleted" and report[f"stack {stack.prefix}"] == "deleted"
    assert report[f"bucket {stack.in_bucket}"] == "deleted"
    assert report[f"queue {reply_queue_name(stack.prefix, 'ba9876543210')}"] == "kept (not ours)"
    names = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert stack.in_bucket not in names and stack.out_bucket not in names
    assert foreign in names
    urls = clients.sqs.list_queues(QueueNamePrefix=stack.prefix).get("QueueUrls", [])
    assert sorted(urls) == sorted([foreign_q, untagged])
    assert stack.jobs_table not in clients.dynamodb.list_tables()["TableNames"]
    assert not teardown(stack, clients).changed  # second teardown: all absent


def test_teardown_can_keep_the_data(stack, clients):
    clients.s3.put_object(Bucket=stack.in_bucket, Key="cat.jpg", Body=b"kept")
    report = dict(teardown(stack, clients, keep_data=True).lines)
    assert report[f"bucket {stack.in_bucket}"] == "kept with its data (--keep-data)"
    assert clients.s3.get_object(Bucket=stack.in_bucket, Key="cat.jpg")["Body"].read() == b"kept"
    assert stack.jobs_table not in clients.dynamodb.list_tables()["TableNames"]  # the rest of the stack went


def test_cli_provision_status_teardown(settings):
    env = child_env(settings)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "infra", *args], env=env, capture_output=True, text=True,
                              timeout=60)

    first = cli("provision")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created") == 6
    status = cli("status")
    assert status.returncode == 0, status.stderr
    assert f"{settings.req_queue}  0 visible / 0 in flight" in status.stdout.replace("   ", "  ")
    assert "0 objects" in status.stdout
    assert cli("teardown").returncode == 0
    assert "missing" in cli("status").stdout


def test_cli_reports_unreachable_endpoint(settings):
    env = child_env(settings, AWS_ENDPOINT_URL="http://127.0.0.1:9", IMGREC_MAX_ATTEMPTS="1")
    out = subprocess.run([sys.executable, "-m", "infra", "status"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "error talking to http://127.0.0.1:9" in out.stderr
    assert "Traceback" not in out.stderr


def test_fleet_reader_sees_every_change_and_skips_unchanged_reads(stack, clients):
    from infra.observe import FleetReader, InstanceState, app_instances

    reader = FleetReader(clients.ec2, stack)
    assert reader.read() == []
    ids = [clients.ec2.run_instances(
        ImageId=stack.ami_id, MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": "Name", "Value": stack.app_instance_name(n)}]}])["Instances"][0]["InstanceId"]
        for n in (1, 2)]
    wait_listed(clients.ec2, ids)  # EC2 lists new instances after a lag, on AWS and locally
    assert {i.id for i in reader.read()} == set(ids)
    clients.ec2.terminate_instances(InstanceIds=[ids[0]])
    assert [i.id for i in reader.read()] == [ids[1]]
    clients.ec2.stop_instances(InstanceIds=[ids[1]])
    assert [i.state for i in reader.read()] == [i.state for i in app_instances(clients.ec2, stack)]
    assert reader.read()[0].state in (InstanceState.STOPPING, InstanceState.STOPPED)


def test_a_payload_less_answer_is_an_error_the_loops_retry():
    """A connection cut mid-body can parse as an empty success; readers must not crash on it."""
    from botocore.exceptions import BotoCoreError

    from infra.observe import queue_depth

    class CutConnection:  # stands in for botocore's parsed empty 200, not for our code
        def get_queue_attributes(self, **_):
            return {}

    with pytest.raises(BotoCoreError, match="Attributes missing"):
        queue_depth(CutConnection(), "http://queue")


def test_provision_right_after_teardown_waits_out_queue_deleted_recently(settings, clients, capsys):
    """AWS keeps a deleted queue's name for 60 s (the strict local AWS does too, 4 s here): provisioning again
    at once waits, saying so, instead of failing with QueueDeletedRecently."""
    from tests.helpers import strict_aws

    with strict_aws(settings, sqs_tombstone_s=4):
        provision(settings, clients)
        teardown(settings, clients)
        started = time.monotonic()
        report = dict(provision(settings, clients).lines)
        waited = time.monotonic() - started
    assert "created" in report.values()
    assert _queue_attrs(clients, settings.req_queue)[1]["QueueArn"].endswith(settings.req_queue)
    assert waited >= 2.5  # the names came back only after the tombstone (a mandated delay)
    out = capsys.readouterr().out
    assert "a queue of that name was deleted less than 60 s ago" in out
