"""The strict local AWS (infra.local.strict): each emulated behaviour holds on our moto server and not on plain moto.

Every behaviour has a check that returns whether the server behaved as AWS documents; the check must be True on
the strict server and False on plain moto (``IMGREC_STRICT_AWS=off``), which is what shows that plain moto would
not have caught code that relies on its kindness. Values are tuned per test through the scoped control route.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from infra.local.strict import client
from infra.local.strict.cloudwatch_resolution import round_start, stored_at, valid_period
from tests.helpers import assert_aws_only_where_emulated, aws_client, error_code, wait_until

AMI = "ami-12c6146b"  # ships with moto
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})


aws = aws_client
code_of = error_code


def launch(ec2, scope: str, **extra) -> str:
    tags = [{"ResourceType": "instance", "Tags": [{"Key": "imgrec:stack", "Value": scope}]}]
    return ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, TagSpecifications=tags, **extra)["Instances"][0][
        "InstanceId"]


# ------------------------------------------------------------ checks: True when the server behaved as AWS does
def sqs_counts_lag(url: str, scope: str) -> bool:
    client.configure(url, scope, sqs_count_lag_s=2)
    sqs = aws(url, "sqs")
    q = sqs.create_queue(QueueName=f"{scope}-q")["QueueUrl"]

    def visible() -> int:
        return int(sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["All"])["Attributes"][
            "ApproximateNumberOfMessages"])

    assert visible() == 0
    sent = time.monotonic()
    sqs.send_message(QueueUrl=q, MessageBody="x")
    stale = visible() == 0
    wait_until(lambda: visible() == 1, timeout=10)
    return stale and time.monotonic() - sent >= 1.0  # the snapshot lived its interval (a mandated delay)


def ec2_new_instance_invisible(url: str, scope: str) -> bool:
    client.configure(url, scope, ec2_lag_s=2)
    ec2 = aws(url, "ec2")
    iid = launch(ec2, scope)
    by_id = code_of(lambda: ec2.describe_instances(InstanceIds=[iid]))
    listed = [i["InstanceId"] for r in ec2.describe_instances(Filters=[{"Name": "tag:imgrec:stack", "Values": [scope]}])[
        "Reservations"] for i in r["Instances"]]
    status = code_of(lambda: ec2.describe_instance_status(InstanceIds=[iid]))
    terminate = code_of(lambda: ec2.terminate_instances(InstanceIds=[iid]))
    wait_until(lambda: code_of(lambda: ec2.describe_instances(InstanceIds=[iid])) is None, timeout=10)
    state = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
    return (by_id == status == terminate == "InvalidInstanceID.NotFound" and listed == []
            and state == "running")  # the NotFound terminate did nothing, as AWS warns


def ec2_new_image_invisible(url: str, scope: str) -> bool:
    client.configure(url, scope, ec2_lag_s=0)
    ec2 = aws(url, "ec2")
    iid = launch(ec2, scope)
    client.configure(url, scope, ec2_lag_s=2)
    image = ec2.create_image(InstanceId=iid, Name=f"{scope}-image")["ImageId"]
    by_id = code_of(lambda: ec2.describe_images(ImageIds=[image]))
    owned = [i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]]
    wait_until(lambda: code_of(lambda: ec2.describe_images(ImageIds=[image])) is None, timeout=10)
    return by_id == "InvalidAMIID.NotFound" and image not in owned


def ec2_client_token_idempotent(url: str, scope: str) -> bool:
    ec2 = aws(url, "ec2")
    token = uuid.uuid4().hex
    first, again = launch(ec2, scope, ClientToken=token), launch(ec2, scope, ClientToken=token)
    other_args = code_of(lambda: ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, ClientToken=token,
                                                   InstanceType="t3.small"))
    return first == again and other_args == "IdempotentParameterMismatch"


def ec2_capacity_fault(url: str, scope: str) -> bool:
    client.inject_fault(url, scope, "ec2:RunInstances", "InsufficientInstanceCapacity", times=1)
    ec2 = aws(url, "ec2", NO_RETRIES)
    try:
        launch(ec2, scope)
    except ClientError as err:
        once = (err.response["Error"]["Code"], err.response["ResponseMetadata"]["HTTPStatusCode"])
    else:
        return False
    return once == ("InsufficientInstanceCapacity", 500) and launch(ec2, scope).startswith("i-")


def ec2_persistent_throttle(url: str, scope: str) -> bool:
    """A persistent throttle outlasts botocore's own retries (a single one it absorbs by itself)."""
    client.inject_fault(url, scope, "ec2:RunInstances", "RequestLimitExceeded")
    ec2 = aws(url, "ec2", Config(retries={"total_max_attempts": 3, "mode": "standard"}))
    code = code_of(lambda: launch(ec2, scope))
    vcpu = f"v{uuid.uuid4().hex[:10]}"  # a scope of its own: the throttle above stays until cleared
    client.inject_fault(url, vcpu, "ec2:RunInstances", "VcpuLimitExceeded", times=1)
    try:
        limited = code_of(lambda: launch(aws(url, "ec2", NO_RETRIES), vcpu))
    finally:
        client.clear(url, vcpu)
    return code == "RequestLimitExceeded" and limited == "VcpuLimitExceeded"


def _cw_put(cw, scope: str, name: str, ts: datetime, resolution: int) -> None:
    cw.put_metric_data(Namespace="ImgRecTest", MetricData=[{
        "MetricName": name, "Dimensions": [{"Name": "Stack", "Value": scope}], "Value": 1.0, "Timestamp": ts,
        "StorageResolution": resolution}])


def _cw_sum(cw, scope: str, name: str, start: datetime, end: datetime, period: int) -> float:
    result = cw.get_metric_data(MetricDataQueries=[{"Id": "m", "MetricStat": {
        "Metric": {"Namespace": "ImgRecTest", "MetricName": name, "Dimensions": [{"Name": "Stack", "Value": scope}]},
        "Period": period, "Stat": "Sum"}}], StartTime=start, EndTime=end)["MetricDataResults"][0]
    return sum(result["Values"])


def cloudwatch_resolution(url: str, scope: str) -> bool:
    client.configure(url, scope, cw_ingest_delay_s=0)
    cw = aws(url, "cloudwatch")
    ts = (datetime.now(UTC) - timedelta(minutes=3)).replace(second=35, microsecond=0)
    _cw_put(cw, scope, "Standard", ts, 60)
    _cw_put(cw, scope, "High", ts, 1)
    window = (ts - timedelta(seconds=5), ts + timedelta(seconds=5))
    standard_10s = _cw_sum(cw, scope, "Standard", *window, 10)  # AWS: stored at :00, outside [:30, :40)
    high_10s = _cw_sum(cw, scope, "High", *window, 10)
    minute = (ts.replace(second=0), ts.replace(second=0) + timedelta(minutes=1))
    standard_60s = _cw_sum(cw, scope, "Standard", *minute, 60)
    rounded = _cw_sum(cw, scope, "High", ts.replace(second=40), ts + timedelta(minutes=1), 60)  # start -> :00
    bad_period = code_of(lambda: _cw_sum(cw, scope, "High", *window, 7))
    return (standard_10s == 0 and high_10s == 1 and standard_60s == 1 and rounded == 1
            and bad_period == "InvalidParameterValue")


def cloudwatch_ingest_delay(url: str, scope: str) -> bool:
    client.configure(url, scope, cw_ingest_delay_s=2)
    cw = aws(url, "cloudwatch")
    now = datetime.now(UTC)
    put = time.monotonic()
    _cw_put(cw, scope, "Fresh", now, 1)

    def readable() -> float:
        return _cw_sum(cw, scope, "Fresh", now - timedelta(minutes=1), now + timedelta(minutes=1), 60)

    at_once = readable()
    wait_until(readable, timeout=10)
    return at_once == 0 and time.monotonic() - put >= 1.5


CHECKS = [sqs_counts_lag, ec2_new_instance_invisible, ec2_new_image_invisible, ec2_client_token_idempotent,
          ec2_capacity_fault, ec2_persistent_throttle, cloudwatch_resolution, cloudwatch_ingest_delay]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_behaves_as_aws_only_where_emulated(strict_or_plain, check):
    url, strict, scope = strict_or_plain
    assert_aws_only_where_emulated(check, strict, url, scope)


# ------------------------------------------------------------ the control route and its scopes
def test_scopes_keep_one_tests_values_from_another(moto_server):
    url, mine, theirs = moto_server.url, f"s{uuid.uuid4().hex[:8]}", f"s{uuid.uuid4().hex[:8]}"
    with client.scoped(url, mine, sqs_count_lag_s=60, ec2_lag_s=30):
        state = client.state(url)
        assert state["enabled"] is True
        assert state["scopes"][mine] == {"sqs_count_lag_s": 60.0, "ec2_lag_s": 30.0}
        assert theirs not in state["scopes"]
        ec2 = aws(url, "ec2")
        iid = launch(ec2, theirs)  # another scope's instance: default lag (1 s), not 30 s
        wait_until(lambda: code_of(lambda: ec2.describe_instances(InstanceIds=[iid])) is None, timeout=10)
        client.inject_fault(url, mine, "ec2:RunInstances", "VcpuLimitExceeded")
        assert launch(aws(url, "ec2", NO_RETRIES), theirs).startswith("i-")
    after = client.state(url)
    assert mine not in after["scopes"] and not [f for f in after["faults"] if f["scope"] == mine]


@pytest.mark.parametrize(("values", "why"), [
    ({"sqs_count_lag_s": -1}, "between 0 and 3600"),
    ({"ec2_idempotency": "maybe"}, "on or off"),
    ({"no_such_setting": 1}, "no_such_setting"),
])
def test_the_control_route_refuses_bad_values(moto_server, values, why):
    with pytest.raises(ValueError, match=why):
        client.configure(moto_server.url, "s-bad", **values)


def test_plain_moto_reports_the_emulation_off(plain_moto_server, moto_server):
    assert client.enabled(plain_moto_server.url) is False
    assert client.enabled(moto_server.url) is True


# ------------------------------------------------------------ the pure rules
@pytest.mark.parametrize(("start", "period", "expected"), [
    ("12:32:34", 60, "12:32:00"), ("12:32:34", 300, "12:32:00"), ("01:05:23", 10, "01:05:20"),
    ("15:02:17", 5, "15:02:15"), ("15:02:17", 20, "15:02:00"), ("15:02:17", 30, "15:02:00"),
    ("15:02:17", 1, "15:02:17"),
])
def test_start_time_rounds_as_cloudwatch_documents(start, period, expected):
    day = datetime(2026, 12, 1, tzinfo=UTC)
    at = datetime.combine(day.date(), datetime.strptime(start, "%H:%M:%S").time(), UTC)
    assert round_start(at + timedelta(microseconds=5), period, at + timedelta(hours=1)).strftime("%H:%M:%S") == expected


def test_old_start_times_round_to_five_minutes_and_hours():
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert round_start(now - timedelta(days=20) + timedelta(minutes=32, seconds=34), 60, now).minute == 30
    assert round_start(now - timedelta(days=70) + timedelta(minutes=32), 60, now).minute == 0


@pytest.mark.parametrize(("period", "ok"), [(1, True), (5, True), (10, True), (20, True), (30, True), (60, True),
                                            (120, True), (7, False), (45, False), (90, False), (0, False)])
def test_valid_periods(period, ok):
    assert valid_period(period) is ok


def test_storage_resolution_keeps_minute_or_second():
    ts = datetime(2026, 12, 1, 12, 32, 34, 500, tzinfo=UTC)
    assert stored_at(ts, 60) == datetime(2026, 12, 1, 12, 32, tzinfo=UTC)
    assert stored_at(ts, 1) == datetime(2026, 12, 1, 12, 32, 34, tzinfo=UTC)
