"""The deploy/destroy/bake commands as a user runs them: plan, cost, confirmation, bake."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys

import pytest

from infra.cfn import changes
from infra.clients import make_client
from infra.config import Settings
from infra.deploy.bake import bake
from infra.deploy.deploy import confirm, deploy, destroy
from infra.deploy.ec2 import resolve_image
from infra.deploy.errors import NotConfirmed
from infra.deploy.pricing import USD_PER_HOUR, alb_usd_per_hour, ebs_usd_per_hour, estimate_max_hourly
from infra.deploy.settings import DEFAULT_AMI_PARAMETER, DeploySettings
from infra.tags import ROLE_TAG, STACK_TAG
from infra.userdata import Source, bake_script
from tests.deploy_helpers import write_artifact
from tests.helpers import child_env, strict_aws, wait_listed
from tests.procs import ROOT


@pytest.fixture
def settings(settings, tmp_path):
    """The suite's settings with a models dir of the test's own: these tests write fake artifacts, which
    must never land on the session's real one (every worker test loads it)."""
    return settings.replace(model_dir=str(tmp_path / "models"))

REPO = "https://example.org/imgrec.git"


def _infra(settings, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infra", *args], cwd=ROOT, env=child_env(settings, **extra),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


def _bucket_exists(clients, name: str) -> bool:
    return name in {b["Name"] for b in clients.s3.list_buckets()["Buckets"]}


def test_estimate_adds_web_app_fleet_and_disks():
    est = estimate_max_hourly("t3.small", "t3.micro", 19, 16)
    assert est.usd_per_hour == pytest.approx(USD_PER_HOUR["t3.small"] + 19 * USD_PER_HOUR["t3.micro"]
                                             + 20 * ebs_usd_per_hour(16), abs=1e-4)
    unknown = estimate_max_hourly("t3.small", "x9.huge", 3, 16)
    assert unknown.unknown == ("x9.huge",) and "not in the price table" in str(unknown)
    balanced = estimate_max_hourly("t3.small", "t3.micro", 19, 16, web_instances=3, load_balancer=True)
    assert balanced.usd_per_hour == pytest.approx(3 * USD_PER_HOUR["t3.small"] + 19 * USD_PER_HOUR["t3.micro"]
                                                  + 22 * ebs_usd_per_hour(16) + alb_usd_per_hour(), abs=1e-4)
    assert alb_usd_per_hour() > 0.02


def dry_run(settings, dsettings, clients) -> str:
    """The plan deploy would ask about; declined, so nothing is changed."""
    seen = []
    assert deploy(settings, dsettings, clients, approve=lambda text, plan: seen.append(text) and False) is None
    return seen[0]


def test_plan_names_image_types_max_instances_cost_and_the_change_set(settings, clients):
    s = settings.replace(instance_type="g4dn.xlarge", max_instances=4)
    d = DeploySettings(repo_url=REPO)
    image = resolve_image(clients.ec2, make_client("ssm", s), s, d)
    latest = make_client("ssm", s).get_parameter(Name=DEFAULT_AMI_PARAMETER)["Parameter"]["Value"]
    assert image.ami_id == latest and not image.baked and not image.chosen
    text = dry_run(s, d, clients)
    est = estimate_max_hourly(d.web_instance_type, "g4dn.xlarge", 4, d.root_volume_gb)
    for part in ("1..4 x g4dn.xlarge", d.web_instance_type, f"${est.usd_per_hour:.2f}/hour", "no SSH",
                 f"{STACK_TAG}={s.prefix}", REPO, f"{latest} (latest Amazon Linux 2023, SSM {DEFAULT_AMI_PARAMETER})",
                 "torch runtime", f"change set to create stack {s.prefix}", "Add     AppLaunchTemplate",
                 "Add     WebGroup (AWS::AutoScaling::AutoScalingGroup)"):
        assert part in text, part
    assert "LoadBalancer" not in text and re.search(rf"\n  image +{latest} ", text)
    assert changes.describe(clients.cloudformation, s.prefix) is None  # declined: the change set and stack went
    # N web instances: the balancer, its health check and idle timeout, and its price in the estimate
    write_artifact(s)
    cpu = s.replace(instance_type="t3.micro", request_timeout_s=300.0)
    text = dry_run(cpu, d.replace(web_instances=3), clients)
    est = estimate_max_hourly(d.web_instance_type, "t3.micro", 4, d.root_volume_gb, web_instances=3,
                              load_balancer=True)
    for part in (f"${est.usd_per_hour:.2f}/hour", "3 x t3.small", "idle timeout 330 s", "health check /healthz",
                 "one controller acts", "onnx runtime", "Add     LoadBalancer (AWS::ElasticLoadBalancingV2::LoadBalancer)"):
        assert part in text, part


def test_confirm_needs_yes_or_a_typed_y():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert confirm("go?", yes=True, stdin=io.StringIO())
    with pytest.raises(NotConfirmed, match="not a terminal"):
        confirm("go?", yes=False, stdin=io.StringIO())
    confirm("go?", yes=False, stdin=Tty(), ask=lambda _: "y")
    with pytest.raises(NotConfirmed, match="nothing was changed"):
        confirm("go?", yes=False, stdin=Tty(), ask=lambda _: "")


def test_cli_refuses_without_yes_and_dry_run_changes_nothing(settings, clients):
    s = settings
    write_artifact(s)
    latest = make_client("ssm", s).get_parameter(Name=DEFAULT_AMI_PARAMETER)["Parameter"]["Value"]
    refused = _infra(s, "deploy", IMGREC_REPO_URL=REPO)
    assert refused.returncode == 3, refused.stderr
    assert "refusing" in refused.stderr and "--yes" in refused.stderr
    assert "cost at max scale" in refused.stdout
    dry = _infra(s, "deploy", "--dry-run", IMGREC_REPO_URL=REPO, IMGREC_WEB_INSTANCES="2")
    assert dry.returncode == 0 and "dry run: nothing was changed" in dry.stdout, dry.stderr
    assert f"{s.min_instances}..{s.max_instances} x {s.instance_type}" in dry.stdout
    assert latest in dry.stdout and "Application Load Balancer" in dry.stdout and "Add     LoadBalancer" in dry.stdout
    assert _infra(s, "destroy").returncode == 3
    assert not _bucket_exists(clients, s.in_bucket)
    assert changes.describe(clients.cloudformation, s.prefix) is None


def test_a_bad_deploy_setting_stops_deploy_commands_only(settings):
    bad = {"IMGREC_ALLOWED_CIDR": "203.0.113.0/33"}
    dry = _infra(settings, "deploy", "--dry-run", **bad)
    assert dry.returncode == 2 and "IMGREC_ALLOWED_CIDR='203.0.113.0/33'" in dry.stderr
    assert _infra(settings, "destroy", "--yes", **bad).returncode == 2
    # every other process parses its settings without looking at it: the worker, web tier and controller
    assert Settings.from_env({**settings.to_env(), **bad}) == settings
    status = _infra(settings, "status", **bad)
    assert status.returncode == 0, status.stderr
    worker = subprocess.run([sys.executable, "-c", "from infra.process import settings_and_logging as s; "
                             "print(s().prefix)"], cwd=ROOT, env=child_env(settings, **bad),
                            capture_output=True, text=True, timeout=60)
    assert worker.returncode == 0 and worker.stdout.strip() == settings.prefix, worker.stderr


def test_cli_deploy_then_destroy(settings, clients):
    s = settings
    write_artifact(s)
    try:
        up = _infra(s, "deploy", "--yes", IMGREC_REPO_URL=REPO)
        assert up.returncode == 0, up.stderr
        assert "web tier:  http://" in up.stdout and "python -m workload --url http://" in up.stdout
        model = re.search(r"model: (\S+)", up.stdout).group(1)
        assert _bucket_exists(clients, s.in_bucket) and _bucket_exists(clients, model)
        again = _infra(s, "deploy", IMGREC_REPO_URL=REPO)  # nothing to change: no question to answer
        assert again.returncode == 0 and "no changes (the change set is empty)" in again.stdout, again.stderr
    finally:
        down = _infra(s, "destroy", "--yes")
    assert down.returncode == 0, down.stderr
    assert not _bucket_exists(clients, s.in_bucket) and not _bucket_exists(clients, model)
    bad = _infra(s, "deploy", "--yes")
    assert bad.returncode == 1 and "IMGREC_REPO_URL" in bad.stderr


def lt_image(clients, settings) -> str:
    found = clients.ec2.describe_launch_template_versions(LaunchTemplateName=f"{settings.prefix}-app-lt",
                                                          Versions=["$Latest"])
    return found["LaunchTemplateVersions"][0]["LaunchTemplateData"]["ImageId"]


def test_bake_builds_a_tagged_image_that_deploy_uses_without_a_repo(settings, clients):
    s = settings
    d = DeploySettings(repo_url=REPO, repo_ref="v2")
    write_artifact(s)
    ec2 = clients.ec2
    builders = []

    def guest_powers_off(instance_id: str) -> None:
        # What bake.sh's final `shutdown -h now` does on a real builder, minutes later (EC2 lists it by then).
        builders.append(instance_id)
        wait_listed(ec2, [instance_id])
        ec2.stop_instances(InstanceIds=[instance_id])

    image_id, report = bake(s, d, clients, on_launched=guest_powers_off)
    try:
        image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
        tags = {t["Key"]: t["Value"] for t in image["Tags"]}
        assert tags == {STACK_TAG: s.prefix, ROLE_TAG: "baked-ami", "imgrec:ref": "v2"}
        # the builder sat in a temporary group of its own, gone now: bake makes nothing the stack owns
        assert "created (temporary)" in str(report) and not clients.ec2.describe_security_groups(Filters=[
            {"Name": f"tag:{STACK_TAG}", "Values": [s.prefix]}])["SecurityGroups"]
        builder = ec2.describe_instances(InstanceIds=builders)["Reservations"][0]["Instances"][0]
        assert builder["State"]["Name"] == "terminated"
        attr = ec2.describe_instance_attribute(InstanceId=builders[0], Attribute="userData")
        script = base64.b64decode(attr["UserData"]["Value"]).decode()
        assert script == bake_script(s, Source(REPO, "v2"))
        for line in ("install_project\n", '> "$APP/.baked"', "shutdown -h now", f"REPO_URL='{REPO}'",
                     "REQUIREMENTS='requirements/web.txt requirements/worker.txt'\n"):
            assert line in script, line
        subprocess.run(["bash", "-n"], input=script.encode(), check=True)

        # A baked image needs no repo URL: user data only writes settings and starts services.
        baked = s.replace(ami_id=image_id)
        done = deploy(baked, d.replace(repo_url=""), clients)
        assert done.plan.create and lt_image(clients, s) == image_id
    finally:
        report = destroy(s, clients)
    assert f"image {image_id}" in str(report)
    assert ec2.describe_images(Owners=["self"], Filters=[
        {"Name": f"tag:{STACK_TAG}", "Values": [s.prefix]}])["Images"] == []


def test_bake_waits_out_a_builder_and_an_image_ec2_does_not_list_yet(settings, clients):
    """EC2 is eventually consistent: a new instance or image is NotFound for a while (the strict local AWS,
    IMGREC_STRICT_EC2_LAG, here 3 s for this test's resources). botocore's own waiters fail on that; bake's
    wait until it is listed, through the builder's stop, the image's creation and the builder's end."""
    ec2 = clients.ec2

    def guest_powers_off(instance_id: str) -> None:
        # the guest takes longer than the lag to install: by its shutdown EC2 lists the builder
        wait_listed(ec2, [instance_id], timeout=30)
        ec2.stop_instances(InstanceIds=[instance_id])

    with strict_aws(settings, ec2_lag_s=3.0):
        image_id, report = bake(settings, DeploySettings(repo_url=REPO), clients, on_launched=guest_powers_off)
    try:
        assert f"image {image_id}" in str(report) and "terminated" in str(report)
        assert ec2.describe_images(ImageIds=[image_id])["Images"][0]["State"] == "available"
    finally:
        destroy(settings, clients)


def test_botocores_own_waiter_fails_on_an_image_not_listed_yet(settings, clients):
    """Why bake's waiters retry NotFound: botocore's image_available fails at once on a fresh image."""
    from botocore.exceptions import WaiterError

    ec2 = clients.ec2
    (iid,) = [i["InstanceId"] for i in ec2.run_instances(ImageId=settings.ami_id, MinCount=1, MaxCount=1, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": STACK_TAG, "Value": settings.prefix}]}])["Instances"]]
    wait_listed(ec2, [iid])
    with strict_aws(settings, ec2_lag_s=5.0):
        image_id = ec2.create_image(InstanceId=iid, Name=f"{settings.prefix}-probe")["ImageId"]
        with pytest.raises(WaiterError, match="InvalidAMIID.NotFound"):
            ec2.get_waiter("image_available").wait(ImageIds=[image_id], WaiterConfig={"Delay": 0.2, "MaxAttempts": 5})
    ec2.terminate_instances(InstanceIds=[iid])
