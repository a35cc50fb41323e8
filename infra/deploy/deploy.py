"""`python -m infra deploy | destroy`: the whole system on AWS as one CloudFormation stack (``infra/cfn/``).

deploy: check what the stack needs (an image, where instances install from, the model artifact, bucket names
that are free) -> a change set, which is the plan the user confirms (each resource added, modified, replaced
or removed, with the cost at max scale) -> execute and wait (a failure rolls back, and the failing resources
and CloudFormation's reasons are shown) -> upload the model artifact to the stack's bucket -> the outputs.
A second deploy with nothing changed reports an empty change set.

destroy, in order: stop the web instances (and so the controller), terminate the app instances the controller
launched for this stack, delete the web processes' reply queues, empty the stack's buckets (the input and
output ones only without ``--keep-data``), delete the stack and wait, then the emptied data buckets it keeps;
baked images unless ``--keep-images``. A deployment the boto3 deployer made before the stack existed (same
names, no stack) is found: deploy says so, destroy removes it (``infra/deploy/legacy.py``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import ClientError

from infra.cfn import artifact, changes, names
from infra.cfn.stack import poll_interval, put, stack_name, stop_web_group, teardown, web_group_instances
from infra.cfn.template import TemplateError, idle_timeout_s
from infra.clients import make_client
from infra.config import Settings
from infra.deploy import legacy
from infra.deploy.ec2 import Image, delete_baked_images, resolve_image
from infra.deploy.errors import DeployError, NotConfirmed
from infra.deploy.pricing import estimate_max_hourly
from infra.deploy.settings import DeploySettings
from infra.observe import LIVE_STATES
from infra.report import Report
from infra.tags import STACK_TAG
from infra.userdata import ONNX_RUNTIME, worker_runtime

log = logging.getLogger(__name__)

OTHER_ACCOUNT = "403"  # HeadBucket on a bucket another account owns


@dataclass(frozen=True)
class Deployment:
    plan: changes.Plan
    outputs: dict[str, str]
    report: Report  # the artifact upload
    url: str


def check_buckets(s3, settings: Settings) -> None:
    """Bucket names are global: one another account owns, or one here outside any stack, stops deploy now.
    Another account's bucket answers HeadBucket with 403 on AWS (200 on moto); it is never in our own list."""
    mine = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in (settings.in_bucket, settings.out_bucket):
        if bucket in mine:
            raise DeployError(f"bucket {bucket} already exists in this account, outside stack {settings.prefix}: "
                              "delete it, or set IMGREC_PREFIX (or IMGREC_IN_BUCKET / IMGREC_OUT_BUCKET) to other names")
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError as err:
            code = err.response["Error"]["Code"]
            if code in ("404", "NoSuchBucket", "NotFound"):
                continue
            if code != OTHER_ACCOUNT:
                raise
        raise DeployError(f"bucket {bucket} belongs to another AWS account (bucket names are global): set "
                          "IMGREC_PREFIX to a name of your own (your user or course id) and deploy again")


def prepare(settings: Settings, dsettings: DeploySettings,
            clients) -> tuple[dict[str, object], Image, artifact.LocalArtifact | None]:
    """(the stack's parameters that are not settings, image, the model artifact to upload), after every check
    that can fail before anything is changed but the template's own (``put`` renders it before it changes
    anything)."""
    image = resolve_image(clients.ec2, make_client("ssm", settings), settings, dsettings)
    if not image.baked and not dsettings.repo_url:
        raise DeployError(f"AMI {image.ami_id} is not a baked imgrec image, so instances must install the project: "
                          "set IMGREC_REPO_URL (and IMGREC_REPO_REF), or run `python -m infra bake` first")
    model = None
    if worker_runtime(settings) == ONNX_RUNTIME:
        try:
            model = artifact.local_artifact(settings)
        except artifact.ArtifactMissing as err:
            raise DeployError(str(err)) from None
    if changes.describe(clients.cloudformation, stack_name(settings)) is None:
        found = legacy.find(settings, clients)
        if found:
            raise DeployError(f"stack {settings.prefix} does not exist, but a deployment made without one does "
                              f"({', '.join(found[:4])}{', ...' if len(found) > 4 else ''}): remove it with "
                              "`python -m infra destroy`, then deploy")
        check_buckets(clients.s3, settings)
    try:
        vpc, subnets = changes.default_network(clients.ec2)
    except LookupError as err:
        raise DeployError(str(err)) from None
    values = dict(
        ImageId=image.ami_id if image.chosen else "", BaseImageId=dsettings.ami_parameter,
        RootDeviceName=image.root_device, RootVolumeGb=dsettings.root_volume_gb,
        ModelArtifactSha256=model.sha256 if model else "",
        RepoUrl=dsettings.repo_url, RepoRef=dsettings.repo_ref, WebInstanceType=dsettings.web_instance_type,
        WebInstances=dsettings.web_instances, AllowedCidr=dsettings.allowed_cidr, SshCidr=dsettings.ssh_cidr,
        KeyName=dsettings.key_name, VpcId=vpc, SubnetIds=subnets)
    return values, image, model


def plan_text(settings: Settings, dsettings: DeploySettings, image: Image, plan: changes.Plan) -> str:
    """The change set, and what the stack runs and costs at max scale."""
    n = dsettings.web_instances
    est = estimate_max_hourly(dsettings.web_instance_type, settings.instance_type, settings.max_instances,
                              dsettings.root_volume_gb, web_instances=n, load_balancer=dsettings.load_balanced)
    where = settings.endpoint_url or f"AWS region {settings.region}"
    web_from = (f"an Application Load Balancer (idle timeout {idle_timeout_s(settings)} s, health check /healthz) "
                f"open to {dsettings.allowed_cidr}" if dsettings.load_balanced else f"{dsettings.allowed_cidr}")
    rows = [
        ("target", f"stack {stack_name(settings)} in {where}"),
        ("image", f"{image.ami_id} ({image.source}{'; baked by infra bake' if image.baked else ''})"),
        ("project source", f"{dsettings.repo_url}@{dsettings.repo_ref}" if dsettings.repo_url
         else "baked AMI only (no IMGREC_REPO_URL)"),
        ("web instances", f"{n} x {dsettings.web_instance_type} named {settings.web_instance_name} (web tier + "
                          f"controller; one controller acts), port {settings.web_port} from {web_from}; "
                          f"{'SSH from ' + dsettings.ssh_cidr if dsettings.ssh_cidr else 'no SSH'}"),
        ("app tier", f"{settings.min_instances}..{settings.max_instances} x {settings.instance_type}, "
                     f"{worker_runtime(settings)} runtime (launched by the controller from "
                     f"{names.launch_template_name(settings)})"),
        ("buckets", f"{settings.in_bucket} (versioned), {settings.out_bucket}, and the model bucket"),
        ("tag", f"{STACK_TAG}={settings.prefix} on everything"),
        ("cost at max scale", str(est)),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(["Deploy plan", *(f"  {k:<{width}}  {v}" for k, v in rows), "", plan.text()])


def web_url(clients, settings: Settings, outputs: dict[str, str]) -> str:
    """The load balancer's URL, or the one web instance's address (``<pending>`` until EC2 gives it one)."""
    if "WebUrl" in outputs:
        return outputs["WebUrl"]
    ids = web_group_instances(clients, settings) or []
    host = "<pending>"
    if ids:  # EC2 lists a new instance a little after Auto Scaling has it
        clients.ec2.get_waiter("instance_exists").wait(InstanceIds=ids[:1], WaiterConfig={
            "Delay": 1 if settings.is_local else 5, "MaxAttempts": 60})
        inst = clients.ec2.describe_instances(InstanceIds=ids[:1])["Reservations"][0]["Instances"][0]
        host = inst.get("PublicIpAddress") or inst.get("PublicDnsName") or host
    return f"http://{host}:{settings.web_port}"


def deploy(settings: Settings, dsettings: DeploySettings, clients,
           *, approve: Callable[[str, changes.Plan], bool] = lambda text, plan: True, wait_s: float = 1800.0,
           poll_s: float | None = None) -> Deployment | None:
    """Create or update the stack; ``approve`` sees the plan (its text, and the change set) and says whether to
    go on (None: it did not; an empty change set has nothing to approve)."""
    values, image, model = prepare(settings, dsettings, clients)
    try:
        plan, outputs = put(settings, clients, confirm=lambda p: approve(plan_text(settings, dsettings, image, p), p),
                            wait_s=wait_s, poll_s=poll_s, **values)
    except TemplateError as err:  # raised before put changes anything
        raise DeployError(str(err)) from None
    if outputs is None:
        return None
    report = Report()
    if model:  # after the stack exists; app instances wait for it at boot
        artifact.upload(clients.s3, outputs["ModelBucketName"], model, report)
    return Deployment(plan, outputs, report, web_url(clients, settings, outputs))


# ---------------------------------------------------------------- destroy

def stack_instances(ec2, settings: Settings, launch_template_id: str | None) -> list[str]:
    """Live instances tagged with the stack, or launched from its launch template whatever their tags."""
    filters = [[{"Name": f"tag:{STACK_TAG}", "Values": [settings.prefix]}]]
    if launch_template_id:
        filters.append([{"Name": "tag:aws:ec2launchtemplate:id", "Values": [launch_template_id]}])
    ids: set[str] = set()
    for extra in filters:
        for page in ec2.get_paginator("describe_instances").paginate(
                Filters=[{"Name": "instance-state-name", "Values": [str(s) for s in LIVE_STATES]}, *extra]):
            ids |= {i["InstanceId"] for r in page["Reservations"] for i in r["Instances"]}
    return sorted(ids)


def terminate(ec2, ids: list[str], wait_s: float, poll_s: float) -> None:
    if ids:
        try:
            ec2.terminate_instances(InstanceIds=ids)
        except ClientError:
            log.error("terminate_instances %s failed", ids)
            raise
        changes.wait_terminated(ec2, ids, wait_s, poll_s)


def destroy(settings: Settings, clients, *, keep_data: bool = False, keep_images: bool = False,
            wait_s: float = 1800.0, poll_s: float | None = None) -> Report:
    poll_s = poll_interval(settings, poll_s)
    stack = changes.describe(clients.cloudformation, stack_name(settings))
    if stack is None:
        report = legacy.remove(settings, clients, keep_data=keep_data, wait_s=wait_s, poll_s=poll_s)
    else:
        report = Report()
        for iid in stop_web_group(clients, settings, wait_s=wait_s, poll_s=poll_s):
            report.add(f"web instance {iid}", "terminated")
        template = changes.outputs(stack).get("AppLaunchTemplateId")
        app = stack_instances(clients.ec2, settings, template)
        terminate(clients.ec2, app, wait_s, poll_s)
        report.extend(teardown(settings, clients, keep_data=keep_data, wait_s=wait_s, poll_s=poll_s))
        # Again once the stack is gone: EC2 lists an instance a little after its launch, so one the controller
        # started in its last seconds may have been missed above (it carries the stack's tags).
        late = stack_instances(clients.ec2, settings, template)
        terminate(clients.ec2, late, wait_s, poll_s)
        for iid in (*app, *late):
            report.add(f"app instance {iid}", "terminated")
    if not keep_images:
        delete_baked_images(clients.ec2, settings, report)
    return report


def confirm(question: str, *, yes: bool, stdin=None, ask=input) -> bool:
    """Go on only with --yes or a typed 'y'; without a terminal to ask on, refuse."""
    if yes:
        return True
    stdin = sys.stdin if stdin is None else stdin
    if stdin is None or not stdin.isatty():
        raise NotConfirmed(f"refusing to go on without confirmation: stdin is not a terminal. "
                           f"Read the plan above and re-run with --yes ({question})")
    if ask(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
        raise NotConfirmed("not confirmed; nothing was changed")
    return True
