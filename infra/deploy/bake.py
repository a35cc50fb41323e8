"""`python -m infra bake`: an AMI with the project and its requirement sets installed, so
instances boot straight into their services instead of installing for minutes.

The builder instance runs ``templates/bake.sh`` as user data, which powers the machine
off when done (shutdown behaviour ``stop``); bake then snapshots it into an image tagged
``imgrec:role=baked-ami`` and terminates the builder, on failure too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from botocore.exceptions import ClientError

from infra.clients import make_client
from infra.config import Settings
from infra.deploy.compute import (
    BAKED_ROLE,
    IMDS_V2,
    builder_stopped_waiter,
    resolve_image,
    root_volume,
    tag_list,
    terminate_and_wait,
    wait,
)
from infra.deploy.errors import DeployError
from infra.deploy.network import app_sg_name, default_vpc_id, ensure_sg
from infra.deploy.settings import DeploySettings
from infra.report import Report
from infra.userdata import Role, Source, bake_script

log = logging.getLogger(__name__)

BUILDER_ROLE = "bake-builder"
BUILD_TIMEOUT_S = 45 * 60.0
IMAGE_TIMEOUT_S = 30 * 60.0


def builder_name(settings: Settings) -> str:
    return f"{settings.prefix}-ami-builder"


def image_name(settings: Settings, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"{settings.prefix}-app-{stamp}"


def bake(settings: Settings, dsettings: DeploySettings, clients, *, build_timeout_s: float = BUILD_TIMEOUT_S,
         poll_s: float | None = None, on_launched: Callable[[str], None] | None = None) -> tuple[str, Report]:
    """Build an AMI from the base image; returns its id and a report."""
    if not dsettings.repo_url:
        raise DeployError("bake installs the project from git: set IMGREC_REPO_URL (and IMGREC_REPO_REF)")
    ec2 = clients.ec2
    poll_s = poll_s if poll_s is not None else (0.2 if settings.is_local else 15.0)
    base = resolve_image(ec2, make_client("ssm", settings), settings, dsettings)
    report = Report()
    sg = ensure_sg(ec2, settings, app_sg_name(settings), Role.APP, default_vpc_id(ec2), [], report)
    source = Source(dsettings.repo_url, dsettings.repo_ref)
    try:
        builder = ec2.run_instances(
            ImageId=base.ami_id, InstanceType=settings.instance_type, MinCount=1, MaxCount=1,
            SecurityGroupIds=[sg], UserData=bake_script(settings, source), InstanceInitiatedShutdownBehavior="stop",
            BlockDeviceMappings=[root_volume(dsettings, base.root_device)], MetadataOptions=IMDS_V2,
            TagSpecifications=[{"ResourceType": "instance",
                                "Tags": tag_list(settings, BUILDER_ROLE, Name=builder_name(settings))},
                               {"ResourceType": "volume", "Tags": tag_list(settings, BUILDER_ROLE)}],
        )["Instances"][0]["InstanceId"]
    except ClientError:
        log.error("run_instances for AMI builder from %s failed", base.ami_id)
        raise
    report.add(f"builder instance {builder}", "launched")
    try:
        if on_launched:
            on_launched(builder)
        log.info("builder %s installing; waiting for it to power off", builder)
        wait(builder_stopped_waiter(ec2), f"builder {builder} to power off (see its console output for "
             "/var/log/imgrec-bake.log)", build_timeout_s, poll_s, InstanceIds=[builder])
        tags = tag_list(settings, BAKED_ROLE, **{"imgrec:ref": dsettings.repo_ref})
        image_id = ec2.create_image(
            InstanceId=builder, Name=image_name(settings),
            Description=f"imgrec app image ({dsettings.repo_url}@{dsettings.repo_ref})",
            TagSpecifications=[{"ResourceType": "image", "Tags": tags}],
        )["ImageId"]
        wait(ec2.get_waiter("image_available"), f"image {image_id} to become available", IMAGE_TIMEOUT_S, poll_s,
             ImageIds=[image_id])
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
