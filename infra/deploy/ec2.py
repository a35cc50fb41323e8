"""EC2 pieces deploy, destroy and bake share: the image instances boot from (the latest Amazon Linux 2023 from
AWS's public SSM parameter, ``IMGREC_AMI_ID``, or one `python -m infra bake` made), the images bake made, and
deleting a security group once terminated instances have let go of it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from botocore.exceptions import ClientError

from infra.config import DEFAULT_AMI_ID, Settings
from infra.deploy.errors import DeployError
from infra.deploy.settings import DeploySettings
from infra.report import Report
from infra.tags import ROLE_TAG, STACK_TAG, Role, tag_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Image:
    ami_id: str
    root_device: str
    baked: bool
    source: str  # how it was chosen, for the plan
    chosen: bool  # IMGREC_AMI_ID (the stack's ImageId parameter) rather than the SSM parameter


def resolve_image(ec2, ssm, settings: Settings, dsettings: DeploySettings) -> Image:
    """``IMGREC_AMI_ID`` when set, else what the SSM parameter names; checked to exist in the region."""
    chosen = settings.ami_id != DEFAULT_AMI_ID  # DEFAULT_AMI_ID exists only in moto
    if chosen:
        ami_id, source = settings.ami_id, "IMGREC_AMI_ID"
    else:
        try:
            ami_id = ssm.get_parameter(Name=dsettings.ami_parameter)["Parameter"]["Value"]
        except ClientError as err:
            log.error("ssm get_parameter %s failed", dsettings.ami_parameter)
            raise DeployError(f"cannot resolve the default AMI from SSM parameter {dsettings.ami_parameter} in "
                              f"{settings.region} ({err.response['Error']['Code']}): set IMGREC_AMI_ID") from err
        source = f"latest Amazon Linux 2023, SSM {dsettings.ami_parameter}"
    try:
        images = ec2.describe_images(ImageIds=[ami_id])["Images"]
    except ClientError as err:
        raise DeployError(f"AMI {ami_id} ({source}) not found in {settings.region}: set IMGREC_AMI_ID to a base "
                          "image (Amazon Linux 2023) or one made by `python -m infra bake`") from err
    if not images:
        raise DeployError(f"AMI {ami_id} ({source}) not found in {settings.region}")
    image = images[0]
    return Image(image["ImageId"], image.get("RootDeviceName") or "/dev/xvda",
                 tag_dict(image.get("Tags")).get(ROLE_TAG) == Role.BAKED_AMI, source, chosen)


def delete_baked_images(ec2, settings: Settings, report: Report) -> None:
    images = ec2.describe_images(Owners=["self"], Filters=[{"Name": f"tag:{STACK_TAG}", "Values": [settings.prefix]},
                                                           {"Name": f"tag:{ROLE_TAG}", "Values": [Role.BAKED_AMI]}])
    for image in images["Images"]:
        ec2.deregister_image(ImageId=image["ImageId"])
        snaps = [m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", []) if m.get("Ebs", {}).get("SnapshotId")]
        for snap in snaps:
            ec2.delete_snapshot(SnapshotId=snap)
        report.add(f"image {image['ImageId']}", f"deregistered, {len(snaps)} snapshot(s) deleted")


def delete_group(ec2, group_id: str, name: str, report: Report, *, timeout_s: float = 300.0, poll_s: float = 5.0):
    """Retried while the interfaces of just-terminated instances still hold the group (no waiter shows that)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ec2.delete_security_group(GroupId=group_id)
            report.add(f"security group {name}", "deleted")
            return
        except ClientError as err:
            if err.response["Error"]["Code"] != "DependencyViolation" or time.monotonic() > deadline:
                log.error("delete_security_group %s (%s) failed", name, group_id)
                raise
            time.sleep(max(poll_s, 1.0))
