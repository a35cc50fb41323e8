"""EC2 pieces deploy and bake share: tags, root volumes, the base image, instances of the stack,
and waiting for them with boto3 waiters (each checked to work against moto too)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from botocore.exceptions import ClientError, WaiterError
from botocore.waiter import WaiterModel, create_waiter_with_client

from infra.config import DEFAULT_AMI_ID, Settings
from infra.deploy.errors import DeployError
from infra.deploy.settings import DeploySettings
from infra.report import Report
from infra.tags import ROLE_TAG, STACK_TAG, Role, tag_dict

log = logging.getLogger(__name__)
T = TypeVar("T")

SPEC_TAG = "imgrec:spec"  # hash of what an instance or template version was made from
BAKED_ROLE = Role.BAKED_AMI
LIVE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]
IMDS_V2 = {"HttpTokens": "required", "HttpEndpoint": "enabled"}
# botocore's own instance_stopped fails on "pending", which a builder is at first: this one waits
# through pending/running/stopping and fails only if the builder is gone.
_BUILDER_STOPPED = WaiterModel({"version": 2, "waiters": {"BuilderStopped": {
    "operation": "DescribeInstances", "delay": 15, "maxAttempts": 180,
    "acceptors": [
        {"matcher": "pathAll", "argument": "Reservations[].Instances[].State.Name", "expected": "stopped",
         "state": "success"},
        {"matcher": "pathAny", "argument": "Reservations[].Instances[].State.Name", "expected": "terminated",
         "state": "failure"},
        {"matcher": "pathAny", "argument": "Reservations[].Instances[].State.Name", "expected": "shutting-down",
         "state": "failure"},
    ]}}})


def tag_list(settings: Settings, role: str, **extra: str) -> list[dict]:
    tags = {STACK_TAG: settings.prefix, ROLE_TAG: role, **extra}
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def tags_of(resource: dict) -> dict[str, str]:
    return tag_dict(resource.get("Tags"))


def root_volume(dsettings: DeploySettings, root_device: str) -> dict:
    return {"DeviceName": root_device,
            "Ebs": {"VolumeSize": dsettings.root_volume_gb, "VolumeType": "gp3", "DeleteOnTermination": True}}


# ---------------------------------------------------------------- waiting

def waiter_config(timeout_s: float, poll_s: float) -> dict:
    return {"Delay": poll_s, "MaxAttempts": max(1, math.ceil(timeout_s / poll_s))}


def wait(waiter, what: str, timeout_s: float, poll_s: float, **kwargs) -> None:
    """Run a boto3 waiter; its failure or timeout becomes a DeployError saying what was awaited."""
    try:
        waiter.wait(WaiterConfig=waiter_config(timeout_s, poll_s), **kwargs)
    except WaiterError as err:
        raise DeployError(f"gave up waiting for {what}: {err}") from err


def retry_while(action: Callable[[], T], transient: Callable[[ClientError], bool], what: str, *,
                timeout_s: float, delay_s: float) -> T:
    """Retry ``action`` while it fails with an error ``transient`` accepts (AWS catching up with
    itself: a fresh instance profile, a group whose interfaces are still detaching) and time is left.
    Not a poll for a state (those are waiters): no API shows when these errors will stop."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return action()
        except ClientError as err:
            if not transient(err) or time.monotonic() + delay_s > deadline:
                log.error("%s failed: %s", what, err.response["Error"].get("Code"))
                raise
            log.info("%s: %s; retrying in %.0f s", what, err.response["Error"].get("Code"), delay_s)
            time.sleep(delay_s)


def builder_stopped_waiter(ec2):
    return create_waiter_with_client("BuilderStopped", _BUILDER_STOPPED, ec2)


def terminate_and_wait(ec2, ids: list[str], timeout_s: float, poll_s: float) -> None:
    if not ids:
        return
    try:
        ec2.terminate_instances(InstanceIds=ids)
    except ClientError:
        log.error("terminate_instances %s failed", ids)
        raise
    log.info("waiting for %s to terminate", ", ".join(ids))
    wait(ec2.get_waiter("instance_terminated"), f"instances {', '.join(ids)} to terminate", timeout_s, poll_s,
         InstanceIds=ids)


def stack_instances(ec2, settings: Settings, *, role: str | None = None, extra_filters: list | None = None,
                    tagged: bool = True) -> list:
    """Live instances tagged with this stack (and ``role``); ``tagged=False``: only ``extra_filters`` select."""
    filters = [{"Name": "instance-state-name", "Values": LIVE_STATES}]
    if tagged:
        filters.append({"Name": f"tag:{STACK_TAG}", "Values": [settings.prefix]})
    if role:
        filters.append({"Name": f"tag:{ROLE_TAG}", "Values": [role]})
    out = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters + (extra_filters or [])):
        for reservation in page["Reservations"]:
            out.extend(reservation["Instances"])
    return out


# ---------------------------------------------------------------- images

@dataclass(frozen=True)
class Image:
    ami_id: str
    root_device: str
    baked: bool
    source: str  # how it was chosen, for the plan


def base_ami_id(ssm, settings: Settings, dsettings: DeploySettings) -> tuple[str, str]:
    """(AMI id, where it came from): ``IMGREC_AMI_ID`` when set, else AWS's public SSM parameter
    for the latest Amazon Linux 2023 (``DEFAULT_AMI_ID`` exists only in moto)."""
    if settings.ami_id != DEFAULT_AMI_ID:
        return settings.ami_id, "IMGREC_AMI_ID"
    try:
        value = ssm.get_parameter(Name=dsettings.ami_parameter)["Parameter"]["Value"]
    except ClientError as err:
        log.error("ssm get_parameter %s failed", dsettings.ami_parameter)
        raise DeployError(f"cannot resolve the default AMI from SSM parameter {dsettings.ami_parameter} in "
                          f"{settings.region} ({err.response['Error']['Code']}): set IMGREC_AMI_ID") from err
    return value, f"latest Amazon Linux 2023, SSM {dsettings.ami_parameter}"


def resolve_image(ec2, ssm, settings: Settings, dsettings: DeploySettings) -> Image:
    """The base (or baked) image deploy and bake launch from, checked to exist in the region."""
    ami_id, source = base_ami_id(ssm, settings, dsettings)
    try:
        images = ec2.describe_images(ImageIds=[ami_id])["Images"]
    except ClientError as err:
        raise DeployError(f"AMI {ami_id} ({source}) not found in {settings.region}: set IMGREC_AMI_ID to a base "
                          "image (Amazon Linux 2023) or one made by `python -m infra bake`") from err
    if not images:
        raise DeployError(f"AMI {ami_id} ({source}) not found in {settings.region}")
    image = images[0]
    return Image(image["ImageId"], image.get("RootDeviceName") or "/dev/xvda",
                 tags_of(image).get(ROLE_TAG) == BAKED_ROLE, source)


def delete_baked_images(ec2, settings: Settings, report: Report) -> None:
    images = ec2.describe_images(Owners=["self"], Filters=[{"Name": f"tag:{STACK_TAG}", "Values": [settings.prefix]},
                                                           {"Name": f"tag:{ROLE_TAG}", "Values": [BAKED_ROLE]}])
    for image in images["Images"]:
        ec2.deregister_image(ImageId=image["ImageId"])
        snaps = [m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", []) if m.get("Ebs", {}).get("SnapshotId")]
        for snap in snaps:
            ec2.delete_snapshot(SnapshotId=snap)
        report.add(f"image {image['ImageId']}", f"deregistered, {len(snaps)} snapshot(s) deleted")
