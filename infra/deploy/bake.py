"""`python -m infra bake`: an AMI with the project, its venv and the model weights installed,
so app instances boot straight into the worker instead of installing for minutes.

The builder instance runs ``templates/bake.sh`` as user data, which powers the machine
off when done (shutdown behaviour ``stop``); bake then snapshots it into an image tagged
``imgrec:role=baked-ami`` and terminates the builder, on failure too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from botocore.exceptions import ClientError

from infra.config import Settings
from infra.deploy.deploy import BAKED_ROLE, _root_volume, _tag_list, resolve_image, terminate_and_wait
from infra.deploy.iam import DeployError
from infra.deploy.network import app_sg_name, default_vpc_id, ensure_sg
from infra.deploy.userdata import Role, bake_script
from infra.provision import Report

log = logging.getLogger(__name__)

BUILDER_ROLE = "bake-builder"
BUILD_TIMEOUT_S = 45 * 60.0
IMAGE_TIMEOUT_S = 30 * 60.0


def builder_name(settings: Settings) -> str:
    return f"{settings.prefix}-ami-builder"


def image_name(settings: Settings, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"{settings.prefix}-app-{stamp}"


def _wait_state(ec2, instance_id: str, want: str, timeout_s: float, poll_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        state = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]
        if state == want:
            return
        if state in ("terminated", "shutting-down"):
            raise DeployError(f"builder {instance_id} is {state}; see its console output for /var/log/imgrec-bake.log")
        if time.monotonic() > deadline:
            raise DeployError(f"builder {instance_id} still {state} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def _wait_image(ec2, image_id: str, timeout_s: float, poll_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        images = ec2.describe_images(ImageIds=[image_id])["Images"]
        state = images[0]["State"] if images else "missing"
        if state == "available":
            return
        if state in ("failed", "deregistered", "missing") or time.monotonic() > deadline:
            raise DeployError(f"image {image_id} is {state}")
        time.sleep(poll_s)


def bake(settings: Settings, clients, *, build_timeout_s: float = BUILD_TIMEOUT_S, poll_s: float | None = None,
         on_launched: Callable[[str], None] | None = None) -> tuple[str, Report]:
    """Build an AMI from ``settings.ami_id`` (a base image); returns its id and a report."""
    if not settings.repo_url:
        raise DeployError("bake installs the project from git: set IMGREC_REPO_URL (and IMGREC_REPO_REF)")
    ec2 = clients.ec2
    poll_s = poll_s if poll_s is not None else (0.2 if settings.is_local else 15.0)
    base_id, root_device, _ = resolve_image(ec2, settings)
    report = Report()
    sg = ensure_sg(ec2, settings, app_sg_name(settings), Role.APP, default_vpc_id(ec2), [], report)
    try:
        builder = ec2.run_instances(
            ImageId=base_id, InstanceType=settings.instance_type, MinCount=1, MaxCount=1,
            SecurityGroupIds=[sg], UserData=bake_script(settings), InstanceInitiatedShutdownBehavior="stop",
            BlockDeviceMappings=[_root_volume(settings, root_device)],
            MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
            TagSpecifications=[{"ResourceType": "instance",
                                "Tags": _tag_list(settings, BUILDER_ROLE, Name=builder_name(settings))},
                               {"ResourceType": "volume", "Tags": _tag_list(settings, BUILDER_ROLE)}],
        )["Instances"][0]["InstanceId"]
    except ClientError:
        log.error("run_instances for AMI builder from %s failed", base_id)
        raise
    report.add(f"builder instance {builder}", "launched")
    try:
        if on_launched:
            on_launched(builder)
        log.info("builder %s installing; waiting for it to power off", builder)
        _wait_state(ec2, builder, "stopped", build_timeout_s, poll_s)
        tags = _tag_list(settings, BAKED_ROLE, **{"imgrec:ref": settings.repo_ref})
        image_id = ec2.create_image(
            InstanceId=builder, Name=image_name(settings),
            Description=f"imgrec app image ({settings.repo_url}@{settings.repo_ref})",
            TagSpecifications=[{"ResourceType": "image", "Tags": tags}],
        )["ImageId"]
        _wait_image(ec2, image_id, IMAGE_TIMEOUT_S, poll_s)
        # Snapshots are tagged after the fact (moto lacks snapshot tag specs on create_image).
        image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
        snaps = [m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", []) if m.get("Ebs", {}).get("SnapshotId")]
        if snaps:
            ec2.create_tags(Resources=snaps, Tags=tags)
        report.add(f"image {image_id}", "created")
    finally:
        terminate_and_wait(ec2, [builder], IMAGE_TIMEOUT_S, poll_s)
        report.add(f"builder instance {builder}", "terminated")
    return image_id, report
