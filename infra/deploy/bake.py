"""`python -m infra bake`: an AMI with the project and its requirement sets installed, so instances boot
straight into their services instead of installing for minutes.

The builder instance runs ``templates/bake.sh`` as user data, which powers the machine off when done
(shutdown behaviour ``stop``); bake then snapshots it into an image tagged ``imgrec:role=baked-ami`` and
terminates the builder, on failure too. The builder sits in a temporary security group of its own (no
inbound traffic), made and deleted here: bake creates nothing the stack's template owns.

EC2 is eventually consistent: "If you describe a resource right after creating it, you might get an error
that says it does not exist" (https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html).
botocore's waiters fail on such an error, so each wait here first waits (bounded) for the new instance or
image to be visible, and its state waiters retry ``NotFound`` as well.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from botocore.exceptions import WaiterError
from botocore.waiter import WaiterModel, create_waiter_with_client

from infra.cfn.changes import VISIBLE_S, default_network, wait_for
from infra.clients import make_client
from infra.config import Settings
from infra.deploy.ec2 import delete_group, resolve_image
from infra.deploy.errors import DeployError
from infra.deploy.settings import DeploySettings
from infra.report import Report
from infra.tags import NAME_TAG, REF_TAG, Role, stack_tags
from infra.userdata import Source, bake_script

log = logging.getLogger(__name__)

BUILD_TIMEOUT_S = 45 * 60.0
IMAGE_TIMEOUT_S = 30 * 60.0
INSTANCE_NOT_FOUND = "InvalidInstanceID.NotFound"
IMAGE_NOT_FOUND = "InvalidAMIID.NotFound"
IMDS_V2 = {"HttpTokens": "required", "HttpEndpoint": "enabled"}


def _states(path: str, success: str, failures: tuple[str, ...], not_found: str) -> list[dict]:
    return [{"matcher": "pathAll", "argument": path, "expected": success, "state": "success"},
            *({"matcher": "pathAny", "argument": path, "expected": f, "state": "failure"} for f in failures),
            {"matcher": "error", "expected": not_found, "state": "retry"}]


STATE = "Reservations[].Instances[].State.Name"
# botocore's instance_stopped fails on "pending", which a builder is at first: BuilderStopped waits through
# pending/running/stopping and fails only if the builder is gone. Each retries a NotFound (not visible yet).
_WAITERS = WaiterModel({"version": 2, "waiters": {
    "BuilderStopped": {"operation": "DescribeInstances", "delay": 15, "maxAttempts": 180,
                       "acceptors": _states(STATE, "stopped", ("terminated", "shutting-down"), INSTANCE_NOT_FOUND)},
    "BuilderTerminated": {"operation": "DescribeInstances", "delay": 15, "maxAttempts": 40,
                          "acceptors": _states(STATE, "terminated", (), INSTANCE_NOT_FOUND)},
    "ImageAvailable": {"operation": "DescribeImages", "delay": 15, "maxAttempts": 120,
                       "acceptors": _states("Images[].State", "available", ("failed",), IMAGE_NOT_FOUND)},
}})


def wait(ec2, waiter: str, what: str, timeout_s: float, poll_s: float, **kwargs) -> None:
    """A waiter (botocore's or ours), first waiting up to ``VISIBLE_S`` for the resource to be visible;
    its failure or timeout becomes a DeployError that says what was awaited."""
    visible = "instance_exists" if "InstanceIds" in kwargs else "image_exists"
    try:
        wait_for(ec2.get_waiter(visible), VISIBLE_S, poll_s, **kwargs)
        wait_for(create_waiter_with_client(waiter, _WAITERS, ec2), timeout_s, poll_s, **kwargs)
    except WaiterError as err:
        raise DeployError(f"gave up waiting for {what}: {err}") from err


def builder_name(settings: Settings) -> str:
    return f"{settings.prefix}-ami-builder"


def image_name(settings: Settings, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"{settings.prefix}-app-{stamp}"


def _builder_group(ec2, settings: Settings, report: Report) -> str:
    vpc, _ = default_network(ec2)
    name = f"{settings.prefix}-bake-{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}"
    group = ec2.create_security_group(
        GroupName=name, Description=f"imgrec bake builder of stack {settings.prefix} (temporary)", VpcId=vpc,
        TagSpecifications=[{"ResourceType": "security-group",
                            "Tags": stack_tags(settings.prefix, Role.BUILDER, **{NAME_TAG: name})}])["GroupId"]
    report.add(f"security group {name} ({group})", "created (temporary)")
    return group


def bake(settings: Settings, dsettings: DeploySettings, clients, *, build_timeout_s: float = BUILD_TIMEOUT_S,
         poll_s: float | None = None, on_launched: Callable[[str], None] | None = None) -> tuple[str, Report]:
    """Build an AMI from the base image; returns its id and a report."""
    if not dsettings.repo_url:
        raise DeployError("bake installs the project from git: set IMGREC_REPO_URL (and IMGREC_REPO_REF)")
    ec2 = clients.ec2
    poll_s = poll_s if poll_s is not None else (0.2 if settings.is_local else 15.0)
    base = resolve_image(ec2, make_client("ssm", settings), settings, dsettings)
    report = Report()
    group = _builder_group(ec2, settings, report)
    builder = None
    try:
        builder = ec2.run_instances(
            ImageId=base.ami_id, InstanceType=settings.instance_type, MinCount=1, MaxCount=1, SecurityGroupIds=[group],
            UserData=bake_script(settings, Source(dsettings.repo_url, dsettings.repo_ref)),
            InstanceInitiatedShutdownBehavior="stop", MetadataOptions=IMDS_V2,
            BlockDeviceMappings=[{"DeviceName": base.root_device, "Ebs": {
                "VolumeSize": dsettings.root_volume_gb, "VolumeType": "gp3", "DeleteOnTermination": True}}],
            TagSpecifications=[{"ResourceType": "instance", "Tags": stack_tags(
                                    settings.prefix, Role.BUILDER, **{NAME_TAG: builder_name(settings)})},
                               {"ResourceType": "volume", "Tags": stack_tags(settings.prefix, Role.BUILDER)}],
        )["Instances"][0]["InstanceId"]
        report.add(f"builder instance {builder}", "launched")
        if on_launched:
            on_launched(builder)
        log.info("builder %s installing; waiting for it to power off", builder)
        wait(ec2, "BuilderStopped", f"builder {builder} to power off (see its console output for "
             "/var/log/imgrec-bake.log)", build_timeout_s, poll_s, InstanceIds=[builder])
        tags = stack_tags(settings.prefix, Role.BAKED_AMI, **{REF_TAG: dsettings.repo_ref})
        image_id = ec2.create_image(
            InstanceId=builder, Name=image_name(settings),
            Description=f"imgrec app image ({dsettings.repo_url}@{dsettings.repo_ref})",
            TagSpecifications=[{"ResourceType": "image", "Tags": tags}])["ImageId"]
        wait(ec2, "ImageAvailable", f"image {image_id} to become available", IMAGE_TIMEOUT_S, poll_s,
             ImageIds=[image_id])
        # Snapshots are tagged after the fact (moto lacks snapshot tag specs on create_image).
        image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
        snaps = [m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", []) if m.get("Ebs", {}).get("SnapshotId")]
        if snaps:
            ec2.create_tags(Resources=snaps, Tags=tags)
        report.add(f"image {image_id}", "created")
    finally:
        if builder:  # TerminateInstances answers NotFound for a builder EC2 does not list yet: wait for it
            with contextlib.suppress(WaiterError):
                wait_for(ec2.get_waiter("instance_exists"), VISIBLE_S, poll_s, InstanceIds=[builder])
            ec2.terminate_instances(InstanceIds=[builder])
            wait(ec2, "BuilderTerminated", f"builder {builder} to terminate", IMAGE_TIMEOUT_S, poll_s,
                 InstanceIds=[builder])
            report.add(f"builder instance {builder}", "terminated")
        delete_group(ec2, group, group, report, poll_s=poll_s)
    return image_id, report
