"""`python -m infra deploy | destroy`: the whole system on AWS, from an empty account and back.

deploy = buckets and queues (provision) + IAM roles and instance profiles + security
groups + the app-tier launch template + the web/controller instance + a CloudWatch
dashboard. Every resource carries ``imgrec:stack=<prefix>``; destroy removes only
resources with that tag (the dashboard, which cannot be tagged, by its name), so two
stacks, or hand-made resources, in one account are safe. Running deploy twice changes
nothing the second time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import sys
import time

from botocore.exceptions import ClientError

from infra.clients import make_client
from infra.config import Settings
from infra.deploy.dashboard import dashboard_name, delete_dashboard, ensure_dashboard
from infra.deploy.iam import (
    Arns,
    DeployError,
    account_id,
    app_policy,
    app_role_name,
    delete_role,
    ensure_role,
    web_policy,
    web_role_name,
)
from infra.deploy.network import app_sg_name, default_vpc_id, delete_sg, ensure_sg, web_rules, web_sg_name
from infra.deploy.pricing import estimate_max_hourly
from infra.deploy.userdata import Role, boot_script, instance_settings
from infra.observe import ROLE_TAG, STACK_TAG
from infra.provision import Report, provision, teardown

log = logging.getLogger(__name__)

SPEC_TAG = "imgrec:spec"  # hash of what an instance or template version was made from
BAKED_ROLE = Role.BAKED_AMI
LIVE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]
IAM_PROPAGATION_S = 90.0  # a fresh instance profile is not usable by EC2 for a few seconds


def launch_template_name(settings: Settings) -> str:
    return settings.launch_template or f"{settings.prefix}-app-lt"


def spec_hash(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _tag_list(settings: Settings, role: str, **extra: str) -> list[dict]:
    tags = {STACK_TAG: settings.prefix, ROLE_TAG: role, **extra}
    return [{"Key": k, "Value": v} for k, v in tags.items()]


# ---------------------------------------------------------------- plan (pure)

def plan_text(settings: Settings) -> str:
    """What deploy will create and what max scale costs, shown before asking to go on."""
    est = estimate_max_hourly(settings.web_instance_type, settings.instance_type, settings.max_instances,
                              settings.root_volume_gb)
    where = settings.endpoint_url or f"AWS region {settings.region}"
    ssh = f"SSH from {settings.ssh_cidr}" if settings.ssh_cidr else "no SSH"
    source = f"{settings.repo_url}@{settings.repo_ref}" if settings.repo_url else "baked AMI only (no IMGREC_REPO_URL)"
    rows = [
        ("target", where),
        ("buckets", f"{settings.in_bucket} (versioned), {settings.out_bucket}"),
        ("queues", f"{settings.req_queue}, {settings.resp_queue}, {settings.dlq}"),
        ("iam roles + profiles", f"{app_role_name(settings)}, {web_role_name(settings)}"),
        ("security groups", f"{web_sg_name(settings)} (port {settings.web_port} from {settings.allowed_cidr}; {ssh}), "
                            f"{app_sg_name(settings)} (no inbound)"),
        ("launch template", f"{launch_template_name(settings)}: {settings.instance_type}, AMI {settings.ami_id}"),
        ("web instance", f"{settings.web_instance_name}: {settings.web_instance_type} (web tier + controller)"),
        ("app tier", f"{settings.min_instances}..{settings.max_instances} x {settings.instance_type} "
                     f"(launched by the controller)"),
        ("disks", f"{settings.root_volume_gb} GiB gp3 per instance"),
        ("project source", source),
        ("dashboard", dashboard_name(settings)),
        ("tag", f"{STACK_TAG}={settings.prefix} on everything"),
        ("cost at max scale", str(est)),
    ]
    width = max(len(k) for k, _ in rows)
    return "Deploy plan\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def launch_template_data(settings: Settings, *, ami_id: str, root_device: str, profile_arn: str, sg_id: str,
                         user_data: str) -> dict:
    return {
        "ImageId": ami_id,
        "InstanceType": settings.instance_type,
        "IamInstanceProfile": {"Arn": profile_arn},
        "SecurityGroupIds": [sg_id],
        "UserData": base64.b64encode(user_data.encode()).decode(),
        "BlockDeviceMappings": [_root_volume(settings, root_device)],
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        "TagSpecifications": [{"ResourceType": kind, "Tags": _tag_list(settings, Role.APP)}
                              for kind in ("instance", "volume")],
    }


def _root_volume(settings: Settings, root_device: str) -> dict:
    return {"DeviceName": root_device,
            "Ebs": {"VolumeSize": settings.root_volume_gb, "VolumeType": "gp3", "DeleteOnTermination": True}}


# ---------------------------------------------------------------- actuation

def resolve_image(ec2, settings: Settings) -> tuple[str, str, bool]:
    """(ami id, root device name, baked?) for ``settings.ami_id``."""
    try:
        images = ec2.describe_images(ImageIds=[settings.ami_id])["Images"]
    except ClientError as err:
        raise DeployError(f"AMI {settings.ami_id} not found in {settings.region}: set IMGREC_AMI_ID to a base "
                          "image (Amazon Linux 2023) or one made by `python -m infra bake`") from err
    if not images:
        raise DeployError(f"AMI {settings.ami_id} not found in {settings.region}")
    image = images[0]
    tags = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
    return image["ImageId"], image.get("RootDeviceName") or "/dev/xvda", tags.get(ROLE_TAG) == BAKED_ROLE


def ensure_launch_template(ec2, settings: Settings, data: dict, report: Report) -> str:
    name = launch_template_name(settings)
    description = f"imgrec spec {spec_hash(data)}"
    try:
        found = ec2.describe_launch_templates(LaunchTemplateNames=[name])["LaunchTemplates"]
    except ClientError as err:
        if "NotFound" not in err.response["Error"]["Code"]:
            log.error("describe_launch_templates %s failed", name)
            raise
        found = []
    if not found:
        try:
            lt = ec2.create_launch_template(
                LaunchTemplateName=name, VersionDescription=description, LaunchTemplateData=data,
                TagSpecifications=[{"ResourceType": "launch-template", "Tags": _tag_list(settings, Role.APP)}],
            )["LaunchTemplate"]
        except ClientError:
            log.error("create_launch_template %s failed", name)
            raise
        report.add(f"launch template {name} ({lt['LaunchTemplateId']})", "created")
        return lt["LaunchTemplateId"]
    lt = found[0]
    lt_id = lt["LaunchTemplateId"]
    if {t["Key"]: t["Value"] for t in lt.get("Tags", [])}.get(STACK_TAG) != settings.prefix:
        raise DeployError(f"launch template {name} ({lt_id}) exists but is not ours; set IMGREC_LAUNCH_TEMPLATE")
    current = ec2.describe_launch_template_versions(LaunchTemplateId=lt_id, Versions=["$Default"])
    if current["LaunchTemplateVersions"][0].get("VersionDescription") == description:
        report.add(f"launch template {name} ({lt_id})", "unchanged")
        return lt_id
    version = ec2.create_launch_template_version(LaunchTemplateId=lt_id, VersionDescription=description,
                                                 LaunchTemplateData=data)["LaunchTemplateVersion"]["VersionNumber"]
    ec2.modify_launch_template(LaunchTemplateId=lt_id, DefaultVersion=str(version))
    report.add(f"launch template {name} ({lt_id})", f"updated to version {version}")
    return lt_id


def stack_instances(ec2, settings: Settings, *, role: str | None = None, extra_filters: list | None = None) -> list:
    filters = [{"Name": f"tag:{STACK_TAG}", "Values": [settings.prefix]},
               {"Name": "instance-state-name", "Values": LIVE_STATES}]
    if role:
        filters.append({"Name": f"tag:{ROLE_TAG}", "Values": [role]})
    out = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters + (extra_filters or [])):
        for reservation in page["Reservations"]:
            out.extend(reservation["Instances"])
    return out


def ensure_web_instance(ec2, settings: Settings, run_args: dict, report: Report) -> dict:
    """One web instance; an existing one is kept (a changed spec is reported, not replaced)."""
    spec = spec_hash(run_args)
    existing = stack_instances(ec2, settings, role=Role.WEB)
    if existing:
        inst = existing[0]
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        note = "unchanged" if tags.get(SPEC_TAG) == spec else "kept; settings changed since launch: destroy and deploy"
        report.add(f"web instance {settings.web_instance_name} ({inst['InstanceId']})", note)
        return inst
    tags = _tag_list(settings, Role.WEB, Name=settings.web_instance_name, **{SPEC_TAG: spec})
    args = {**run_args, "MinCount": 1, "MaxCount": 1,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags},
                                  {"ResourceType": "volume", "Tags": _tag_list(settings, Role.WEB)}]}
    deadline = time.monotonic() + IAM_PROPAGATION_S
    while True:
        try:
            inst = ec2.run_instances(**args)["Instances"][0]
            break
        except ClientError as err:
            fresh_profile = "iamInstanceProfile" in str(err) or "instance profile" in str(err).lower()
            if not fresh_profile or time.monotonic() > deadline:
                log.error("run_instances for web instance %s failed", settings.web_instance_name)
                raise
            log.info("instance profile not visible to EC2 yet; retrying")
            time.sleep(5)
    report.add(f"web instance {settings.web_instance_name} ({inst['InstanceId']})", "created")
    return inst


def deploy(settings: Settings, clients) -> tuple[Report, str]:
    """Create or converge everything; returns the report and the web tier's URL."""
    ec2, iam = clients.ec2, clients.iam
    ami_id, root_device, baked = resolve_image(ec2, settings)
    if not baked and not settings.repo_url:
        raise DeployError(f"AMI {ami_id} is not a baked imgrec image, so instances must install the project: "
                          "set IMGREC_REPO_URL (and IMGREC_REPO_REF), or run `python -m infra bake` first")
    report = provision(settings, clients)
    arns = Arns(settings.region, account_id(make_client("sts", settings)))
    vpc_id = default_vpc_id(ec2)
    app_sg = ensure_sg(ec2, settings, app_sg_name(settings), Role.APP, vpc_id, [], report)
    web_sg = ensure_sg(ec2, settings, web_sg_name(settings), Role.WEB, vpc_id, web_rules(settings), report)
    app_profile = ensure_role(iam, settings, app_role_name(settings), app_policy(settings, arns), Role.APP, report)
    inst = instance_settings(settings, launch_template=launch_template_name(settings), ami_id=ami_id)
    lt_data = launch_template_data(settings, ami_id=ami_id, root_device=root_device, profile_arn=app_profile,
                                   sg_id=app_sg, user_data=boot_script(Role.APP, inst))
    lt_id = ensure_launch_template(ec2, settings, lt_data, report)
    web_profile = ensure_role(iam, settings, web_role_name(settings),
                              web_policy(settings, arns, launch_template_id=lt_id, app_sg_id=app_sg, ami_id=ami_id),
                              Role.WEB, report)
    ensure_dashboard(clients.cloudwatch, settings, report)
    run_args = {"ImageId": ami_id, "InstanceType": settings.web_instance_type,
                "IamInstanceProfile": {"Arn": web_profile}, "SecurityGroupIds": [web_sg],
                "UserData": boot_script(Role.WEB, inst),
                "BlockDeviceMappings": [_root_volume(settings, root_device)],
                "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"}}
    if settings.key_name:
        run_args["KeyName"] = settings.key_name
    web = ensure_web_instance(ec2, settings, run_args, report)
    return report, web_url(ec2, settings, web["InstanceId"])


def web_url(ec2, settings: Settings, instance_id: str) -> str:
    inst = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    host = inst.get("PublicIpAddress") or inst.get("PublicDnsName") or inst.get("PrivateIpAddress") or "<pending>"
    return f"http://{host}:{settings.web_port}"


# ---------------------------------------------------------------- destroy

def terminate_and_wait(ec2, ids: list[str], timeout_s: float, poll_s: float) -> None:
    if not ids:
        return
    try:
        ec2.terminate_instances(InstanceIds=ids)
    except ClientError:
        log.error("terminate_instances %s failed", ids)
        raise
    deadline = time.monotonic() + timeout_s
    while True:
        states = {i["InstanceId"]: i["State"]["Name"]
                  for r in ec2.describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]}
        waiting = sorted(i for i, s in states.items() if s != "terminated")
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise DeployError(f"instances still not terminated after {timeout_s:.0f} s: {', '.join(waiting)}")
        log.info("waiting for %s to terminate", ", ".join(waiting))
        time.sleep(poll_s)


def _report_terminated(report: Report, kind: str, ids: list[str]) -> None:
    for instance_id in ids:
        report.add(f"{kind} {instance_id}", "terminated")
    if not ids:
        report.add(f"{kind}s", "absent")


def _our_template(ec2, settings: Settings) -> dict | None:
    try:
        found = ec2.describe_launch_templates(LaunchTemplateNames=[launch_template_name(settings)])["LaunchTemplates"]
    except ClientError as err:
        if "NotFound" in err.response["Error"]["Code"]:
            return None
        raise
    if not found or {t["Key"]: t["Value"] for t in found[0].get("Tags", [])}.get(STACK_TAG) != settings.prefix:
        return None
    return found[0]


def destroy(settings: Settings, clients, *, keep_images: bool = False, wait_s: float = 900.0,
            poll_s: float | None = None) -> Report:
    """Remove what deploy (and bake) made, in dependency order; buckets and queues last."""
    ec2, iam = clients.ec2, clients.iam
    poll_s = poll_s if poll_s is not None else (0.2 if settings.is_local else 5.0)
    report = Report()
    # The controller launches app instances: stop it (the web instance) first.
    web = [i["InstanceId"] for i in stack_instances(ec2, settings, role=Role.WEB)]
    terminate_and_wait(ec2, web, wait_s, poll_s)
    _report_terminated(report, "web instance", web)
    lt = _our_template(ec2, settings)
    ids = {i["InstanceId"] for i in stack_instances(ec2, settings)}
    if lt:  # launched from our template but tagged differently: still ours
        ids |= {i["InstanceId"] for page in ec2.get_paginator("describe_instances").paginate(Filters=[
            {"Name": "tag:aws:ec2launchtemplate:id", "Values": [lt["LaunchTemplateId"]]},
            {"Name": "instance-state-name", "Values": LIVE_STATES}]) for r in page["Reservations"]
            for i in r["Instances"]}
    terminate_and_wait(ec2, sorted(ids), wait_s, poll_s)
    _report_terminated(report, "app/builder instance", sorted(ids))
    if lt:
        ec2.delete_launch_template(LaunchTemplateId=lt["LaunchTemplateId"])
        report.add(f"launch template {launch_template_name(settings)} ({lt['LaunchTemplateId']})", "deleted")
    else:
        report.add(f"launch template {launch_template_name(settings)}", "absent")
    if not keep_images:
        delete_baked_images(ec2, settings, report)
    for name in (web_role_name(settings), app_role_name(settings)):
        delete_role(iam, settings, name, report)
    for name in (web_sg_name(settings), app_sg_name(settings)):
        delete_sg(ec2, settings, name, report)
    delete_dashboard(clients.cloudwatch, settings, report)
    report.lines.extend(teardown(settings, clients).lines)
    return report


def delete_baked_images(ec2, settings: Settings, report: Report) -> None:
    images = ec2.describe_images(Owners=["self"], Filters=[{"Name": f"tag:{STACK_TAG}", "Values": [settings.prefix]},
                                                           {"Name": f"tag:{ROLE_TAG}", "Values": [BAKED_ROLE]}])
    for image in images["Images"]:
        ec2.deregister_image(ImageId=image["ImageId"])
        snaps = [m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", []) if m.get("Ebs", {}).get("SnapshotId")]
        for snap in snaps:
            ec2.delete_snapshot(SnapshotId=snap)
        report.add(f"image {image['ImageId']}", f"deregistered, {len(snaps)} snapshot(s) deleted")




# ---------------------------------------------------------------- confirmation

class NotConfirmed(DeployError):
    """The user did not say yes (or could not be asked)."""


def confirm(question: str, *, yes: bool, stdin=None, ask=input) -> None:
    """Go on only with --yes or a typed 'y'; without a terminal to ask on, refuse."""
    if yes:
        return
    stdin = sys.stdin if stdin is None else stdin
    if stdin is None or not stdin.isatty():
        raise NotConfirmed(f"refusing to go on without confirmation: stdin is not a terminal. "
                           f"Read the plan above and re-run with --yes ({question})")
    if ask(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
        raise NotConfirmed("not confirmed; nothing was changed")
