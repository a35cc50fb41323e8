"""The EC2 actuator and one controller tick, against the real moto server over HTTP (as strict as AWS: new
instances are not listed for a moment, CloudWatch keeps each datum at its resolution)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from controller.actuator import Ec2Actuator, recent_activity
from controller.brain import choose_removals
from controller.loop import Action, Controller
from infra.messages import ImageRequest
from infra.metrics import Metric
from infra.observe import Instance, InstanceState, app_instances, queue_url
from infra.tags import STACK_TAG
from infra.userdata import ENV_FILE, app_user_data
from tests.helpers import strict_aws, wait_listed, wait_until


def tags_of(ec2, instance_id: str) -> dict[str, str]:
    inst = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}


def live_names(ec2, settings) -> list[str]:
    return sorted(i.name for i in app_instances(ec2, settings))


def test_launch_tags_with_lowest_free_index(settings, clients):
    act = Ec2Actuator(clients.ec2, settings)
    ids = wait_listed(clients.ec2, act.launch(3))
    assert len(ids) == 3
    assert live_names(clients.ec2, settings) == [settings.app_instance_name(k) for k in (1, 2, 3)]
    tags = tags_of(clients.ec2, ids[0])
    assert tags["Name"] == settings.app_instance_name(1) and tags[STACK_TAG] == settings.prefix
    inst = clients.ec2.describe_instances(InstanceIds=[ids[0]])["Reservations"][0]["Instances"][0]
    assert inst["ImageId"] == settings.ami_id and inst["InstanceType"] == settings.instance_type
    # the freed index 2 is reused before 4
    act.remove([ids[1]])
    wait_listed(clients.ec2, act.launch(2))
    assert live_names(clients.ec2, settings) == [settings.app_instance_name(k) for k in (1, 2, 3, 4)]


def test_user_data_is_the_app_boot_script_with_its_units_and_env_file(settings, clients):
    """The AMI path boots like deploy's launch template (tests/test_deploy.py compares the two byte for
    byte): the worker unit that exists, the env file its units read, the worker's own settings."""
    (iid,) = wait_listed(clients.ec2, Ec2Actuator(clients.ec2, settings).launch(1))
    attr = clients.ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]["Value"]
    script = base64.b64decode(attr).decode()
    assert script == app_user_data(settings)
    assert script.startswith("#!/bin/bash") and f'IMGREC_PREFIX="{settings.prefix}"' in script
    assert f"cat > {ENV_FILE} <<'IMGREC_EOF'" in script and f"EnvironmentFile={ENV_FILE}" in script
    assert "systemctl enable --now \"$unit\"" in script and "for unit in imgrec-worker.service; do" in script
    assert "/etc/imgrec/app.env" not in script and "imgrec-app.service" not in script
    # the emulator's endpoint goes along: an instance launched against moto talks to that moto
    assert f'AWS_ENDPOINT_URL="{settings.endpoint_url}"' in script
    assert 'IMGREC_INSTANCE_ID=""' in script and 'IMGREC_LAUNCH_TEMPLATE=""' in script


def test_launch_template_path(settings, clients):
    name = f"{settings.prefix}-app-lt"
    clients.ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={
        "ImageId": settings.ami_id, "InstanceType": "t3.small"})
    act = Ec2Actuator(clients.ec2, settings.replace(launch_template=name))
    (iid,) = wait_listed(clients.ec2, act.launch(1))
    inst = clients.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert inst["InstanceType"] == "t3.small"  # came from the template, not settings.instance_type
    assert tags_of(clients.ec2, iid)["Name"] == settings.app_instance_name(1)


def test_remove_terminates_and_warm_pool_stops_then_restarts(settings, clients):
    cold = Ec2Actuator(clients.ec2, settings)
    a, b = wait_listed(clients.ec2, cold.launch(2))
    cold.remove([a])
    states = {i.id: i.state for i in app_instances(clients.ec2, settings, include_terminated=True)}
    assert states[a] == InstanceState.TERMINATED and states[b] == InstanceState.RUNNING

    warm = Ec2Actuator(clients.ec2, settings, warm_pool=True)
    warm.remove([b])
    assert {i.id: i.state for i in app_instances(clients.ec2, settings)}[b] == InstanceState.STOPPED
    ids = warm.launch(2)
    wait_listed(clients.ec2, ids[1:])
    assert ids[0] == b  # the stopped one is started first, then one new
    fleet = {i.id: i for i in app_instances(clients.ec2, settings)}
    assert fleet[b].state in (InstanceState.PENDING, InstanceState.RUNNING)
    assert sorted(i.name for i in fleet.values()) == [settings.app_instance_name(k) for k in (1, 2)]


def test_choose_removals_prefers_pending_then_idle_then_newest():
    def inst(i, state, t):
        return Instance(id=i, name=i, state=state, launch_time=t)

    fleet = [inst("old-busy", InstanceState.RUNNING, 1), inst("old-idle", InstanceState.RUNNING, 2),
             inst("new-busy", InstanceState.RUNNING, 5), inst("pend", InstanceState.PENDING, 4),
             inst("stopping", InstanceState.STOPPING, 0)]
    activity = {"old-busy": 12.0, "new-busy": 3.0, "old-idle": 0.0}
    assert choose_removals(fleet, 1, activity) == ["pend"]
    assert choose_removals(fleet, 2, activity) == ["pend", "old-idle"]
    assert choose_removals(fleet, 3, activity) == ["pend", "old-idle", "new-busy"]
    assert choose_removals(fleet, 9, activity) == ["pend", "old-idle", "new-busy", "old-busy"]
    assert choose_removals(fleet, 2, {}) == ["pend", "new-busy"]  # no signal: newest
    assert choose_removals(fleet, 0, activity) == []


def test_idle_signal_from_cloudwatch_picks_the_idle_instance(settings, clients):
    act = Ec2Actuator(clients.ec2, settings, cloudwatch=clients.cloudwatch)
    (idle,) = wait_listed(clients.ec2, act.launch(1))
    idle_at = clients.ec2.describe_instances(InstanceIds=[idle])["Reservations"][0]["Instances"][0]["LaunchTime"]
    # EC2 launch times have 1 s resolution: launch `busy` in a later second, so it is the strictly newest.
    wait_until(lambda: datetime.now(UTC).replace(microsecond=0) > idle_at, 5, interval=0.05,
               what="the next whole second")
    (busy,) = wait_listed(clients.ec2, act.launch(1))
    clients.cloudwatch.put_metric_data(Namespace=settings.metrics_namespace, MetricData=[{
        "MetricName": str(Metric.IMAGES_PROCESSED), "Value": 10.0, "Unit": "Count", "Timestamp": datetime.now(UTC),
        "StorageResolution": 1,  # as workers publish it: a 20 s read of standard data finds nothing on AWS
        "Dimensions": [{"Name": "Stack", "Value": settings.prefix}, {"Name": "InstanceId", "Value": busy}]}])
    # CloudWatch serves a datum a moment after the put (IMGREC_STRICT_CW_INGEST_DELAY)
    wait_until(lambda: recent_activity(clients.cloudwatch, settings, [busy]).get(busy, 0) > 0, 10,
               what="the datum readable")
    activity = recent_activity(clients.cloudwatch, settings, [busy, idle])
    assert activity.get(busy, 0) > 0 and activity.get(idle, 0) == 0
    assert choose_removals(app_instances(clients.ec2, settings), 1, {}) == [busy]  # newest-first alone
    removed = act.scale_in(1)
    assert removed == [idle]
    assert [i.id for i in app_instances(clients.ec2, settings)] == [busy]


def test_controller_ticks_scale_out_and_back(stack, clients):
    settings = stack.replace(scaling="course", min_instances=1, max_instances=3, scale_in_window_s=0.5)
    now = [1000.0]
    ctl = Controller(settings, clients, clock=lambda: now[0])
    with strict_aws(settings, sqs_count_lag_s=0):  # this test reads counts right after changing them
        ticks_scale_out_and_back(ctl, settings, clients, now)


def ticks_scale_out_and_back(ctl, settings, clients, now):
    first = ctl.step()
    assert first.action == Action.LAUNCH and first.desired == 1
    url = queue_url(clients.sqs, settings.req_queue)
    for i in range(12):
        clients.sqs.send_message(QueueUrl=url, MessageBody=ImageRequest.new(f"k{i}.jpg", None, f"k{i}.jpg").to_json())
    tick = ctl.step()
    assert tick.backlog == 12 and tick.desired == 3 and tick.action == Action.LAUNCH and len(tick.changed) == 2
    assert ctl.step().action == Action.NONE  # no double launch, though EC2 may not list them yet
    wait_listed(clients.ec2, [*first.changed, *tick.changed])
    assert len(app_instances(clients.ec2, settings)) == 3
    clients.sqs.purge_queue(QueueUrl=url)
    tick = ctl.step()
    assert tick.backlog == 0 and tick.desired == 3  # inside the window: hold
    now[0] += 0.6  # past the window
    tick = ctl.step()
    assert tick.desired == 1 and tick.action == Action.REMOVE and len(tick.changed) == 2
    assert len(app_instances(clients.ec2, settings)) == 1
    metrics = clients.cloudwatch.list_metrics(Namespace=settings.metrics_namespace,
                                              Dimensions=[{"Name": "Stack", "Value": settings.prefix}])["Metrics"]
    assert {m["MetricName"] for m in metrics} >= {"Backlog", "BacklogPerInstance", "DesiredInstances",
                                                  "RunningInstances"}


def test_a_launch_that_dies_before_any_fleet_read_is_replaced_at_the_next_tick(stack, clients):
    """A boot that fails within a tick: the instance is terminated before the controller ever lists it live.
    It must not count as pending for the 30 s grace an unlisted launch gets."""
    settings = stack.replace(min_instances=1, max_instances=3)
    now = [1000.0]
    ctl = Controller(settings, clients, clock=lambda: now[0])
    first = ctl.step()
    assert first.action == Action.LAUNCH and len(first.changed) == 1
    wait_listed(clients.ec2, first.changed)
    clients.ec2.terminate_instances(InstanceIds=list(first.changed))  # what the runner does to a failed boot
    now[0] += 1.0
    tick = ctl.step()
    assert tick.action == Action.LAUNCH and tick.pending == 0 and set(tick.changed).isdisjoint(first.changed), tick
    wait_listed(clients.ec2, tick.changed)
    assert len(app_instances(clients.ec2, settings)) == 1


def test_controller_survives_a_missing_queue(settings, clients):
    ctl = Controller(settings, clients)  # nothing provisioned
    assert ctl.step() is None
    assert app_instances(clients.ec2, settings) == []
