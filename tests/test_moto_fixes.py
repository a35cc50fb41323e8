"""Our launcher's EC2 corrections (infra/local/moto_fixes.py), against the suite's moto server."""

from __future__ import annotations

import json

from botocore.exceptions import ClientError

from tests.helpers import wait_until


def _profile(clients, settings, name: str) -> str:
    clients.iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17",
                                                                                "Statement": []}))
    arn = clients.iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Arn"]
    clients.iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return arn


def _described(clients, instance_id: str) -> dict | None:
    try:
        return clients.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    except ClientError as err:  # a new instance is NotFound for a moment, as on AWS (infra/local/strict)
        if err.response["Error"]["Code"] == "InvalidInstanceID.NotFound":
            return None
        raise


def _described_profile(clients, instance_id: str) -> str | None:
    found = wait_until(lambda: _described(clients, instance_id), timeout=15)
    return found.get("IamInstanceProfile", {}).get("Arn")


def test_an_instance_launched_from_a_template_gets_the_templates_instance_profile(clients, settings):
    arn = _profile(clients, settings, f"{settings.prefix}-lt-role")
    name = f"{settings.prefix}-lt"
    clients.ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={
        "ImageId": settings.ami_id, "InstanceType": "t3.micro", "IamInstanceProfile": {"Arn": arn}})
    launched = clients.ec2.run_instances(MinCount=2, MaxCount=2, LaunchTemplate={"LaunchTemplateName": name})
    ids = [i["InstanceId"] for i in launched["Instances"]]
    assert [_described_profile(clients, i) for i in ids] == [arn, arn]


def test_the_requests_own_profile_wins_over_the_templates(clients, settings):
    template_arn = _profile(clients, settings, f"{settings.prefix}-lt-a")
    own_arn = _profile(clients, settings, f"{settings.prefix}-lt-b")
    name = f"{settings.prefix}-lt2"
    clients.ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={
        "ImageId": settings.ami_id, "IamInstanceProfile": {"Arn": template_arn}})
    launched = clients.ec2.run_instances(MinCount=1, MaxCount=1, LaunchTemplate={"LaunchTemplateName": name},
                                         IamInstanceProfile={"Arn": own_arn})
    assert _described_profile(clients, launched["Instances"][0]["InstanceId"]) == own_arn


def test_a_template_without_a_profile_launches_without_one(clients, settings):
    name = f"{settings.prefix}-lt3"
    clients.ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={"ImageId": settings.ami_id})
    launched = clients.ec2.run_instances(MinCount=1, MaxCount=1, LaunchTemplate={"LaunchTemplateName": name})
    assert _described_profile(clients, launched["Instances"][0]["InstanceId"]) is None


def test_concurrent_dynamodb_counter_updates_are_not_lost(clients, stack):
    """AWS applies each UpdateItem atomically; moto's threaded server lost concurrent ADDs before the fix."""
    from concurrent.futures import ThreadPoolExecutor

    def add_one(_):
        clients.dynamodb.update_item(TableName=stack.jobs_table, Key={"id": {"S": "counter"}},
                                     UpdateExpression="ADD n :one", ExpressionAttributeValues={":one": {"N": "1"}})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add_one, range(300)))
    item = clients.dynamodb.get_item(TableName=stack.jobs_table, Key={"id": {"S": "counter"}}, ConsistentRead=True)
    assert item["Item"]["n"] == {"N": "300"}


def test_a_cancelled_transaction_leaves_every_item_as_it_was(clients, stack):
    """All or nothing (what the job store's batch counters rely on), with the item-level rollback of
    infra/local/moto_speedups.py: the first update applied, the second's condition failed, both undone."""
    db, table = clients.dynamodb, stack.jobs_table
    db.put_item(TableName=table, Item={"id": {"S": "a"}, "n": {"N": "1"}})
    db.put_item(TableName=table, Item={"id": {"S": "b"}, "n": {"N": "1"}})
    try:
        db.transact_write_items(TransactItems=[
            {"Update": {"TableName": table, "Key": {"id": {"S": "a"}}, "UpdateExpression": "SET n = :two",
                        "ExpressionAttributeValues": {":two": {"N": "2"}}}},
            {"Put": {"TableName": table, "Item": {"id": {"S": "new"}, "n": {"N": "9"}}}},
            {"Update": {"TableName": table, "Key": {"id": {"S": "b"}}, "UpdateExpression": "SET n = :two",
                        "ConditionExpression": "n = :zero",
                        "ExpressionAttributeValues": {":two": {"N": "2"}, ":zero": {"N": "0"}}}}])
    except ClientError as err:
        assert err.response["Error"]["Code"] == "TransactionCanceledException"
    else:
        raise AssertionError("the transaction should have been cancelled")
    got = {k: db.get_item(TableName=table, Key={"id": {"S": k}}, ConsistentRead=True).get("Item")
           for k in ("a", "b", "new")}
    assert got == {"a": {"id": {"S": "a"}, "n": {"N": "1"}}, "b": {"id": {"S": "b"}, "n": {"N": "1"}}, "new": None}
