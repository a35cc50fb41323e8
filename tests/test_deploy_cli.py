"""The deploy/destroy/bake commands as a user runs them: plan, cost, confirmation, bake."""

from __future__ import annotations

import base64
import io
import subprocess
import sys

import pytest

from infra.deploy.bake import bake
from infra.deploy.deploy import NotConfirmed, confirm, deploy, destroy, plan_text
from infra.deploy.pricing import USD_PER_HOUR, ebs_usd_per_hour, estimate_max_hourly
from infra.deploy.userdata import bake_script
from infra.observe import ROLE_TAG, STACK_TAG
from tests.conftest import child_env
from tests.procs import ROOT

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


def test_plan_names_types_max_instances_and_cost(settings):
    s = settings.replace(instance_type="g4dn.xlarge", max_instances=4, repo_url=REPO)
    text = plan_text(s)
    est = estimate_max_hourly(s.web_instance_type, "g4dn.xlarge", 4, s.root_volume_gb)
    for part in ("1..4 x g4dn.xlarge", s.web_instance_type, f"${est.usd_per_hour:.2f}/hour", "no SSH",
                 f"{STACK_TAG}={s.prefix}", REPO):
        assert part in text, part


def test_confirm_needs_yes_or_a_typed_y():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    confirm("go?", yes=True, stdin=io.StringIO())
    with pytest.raises(NotConfirmed, match="not a terminal"):
        confirm("go?", yes=False, stdin=io.StringIO())
    confirm("go?", yes=False, stdin=Tty(), ask=lambda _: "y")
    with pytest.raises(NotConfirmed, match="nothing was changed"):
        confirm("go?", yes=False, stdin=Tty(), ask=lambda _: "")


def test_cli_refuses_without_yes_and_dry_run_changes_nothing(settings, clients):
    s = settings.replace(repo_url=REPO)
    refused = _infra(s, "deploy")
    assert refused.returncode == 3, refused.stderr
    assert "refusing" in refused.stderr and "--yes" in refused.stderr
    assert "cost at max scale" in refused.stdout
    dry = _infra(s, "deploy", "--dry-run")
    assert dry.returncode == 0 and "dry run: nothing was changed" in dry.stdout
    assert f"{s.min_instances}..{s.max_instances} x {s.instance_type}" in dry.stdout
    assert _infra(s, "destroy").returncode == 3
    assert not _bucket_exists(clients, s.in_bucket)


def test_cli_deploy_then_destroy(settings, clients):
    s = settings.replace(repo_url=REPO)
    try:
        up = _infra(s, "deploy", "--yes")
        assert up.returncode == 0, up.stderr
        assert "web tier:  http://" in up.stdout and "python -m workload --url http://" in up.stdout
        assert _bucket_exists(clients, s.in_bucket)
    finally:
        down = _infra(s, "destroy", "--yes")
    assert down.returncode == 0, down.stderr
    assert not _bucket_exists(clients, s.in_bucket)
    bad = _infra(s, "deploy", "--yes", IMGREC_REPO_URL="")
    assert bad.returncode == 1 and "IMGREC_REPO_URL" in bad.stderr


def test_bake_builds_a_tagged_image_that_deploy_uses_without_a_repo(settings, clients):
    s = settings.replace(repo_url=REPO, repo_ref="v2")
    ec2 = clients.ec2
    builders = []

    def guest_powers_off(instance_id: str) -> None:
        # What bake.sh's final `shutdown -h now` does on a real builder.
        builders.append(instance_id)
        ec2.stop_instances(InstanceIds=[instance_id])

    image_id, report = bake(s, clients, on_launched=guest_powers_off)
    try:
        image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
        tags = {t["Key"]: t["Value"] for t in image["Tags"]}
        assert tags == {STACK_TAG: s.prefix, ROLE_TAG: "baked-ami", "imgrec:ref": "v2"}
        builder = ec2.describe_instances(InstanceIds=builders)["Reservations"][0]["Instances"][0]
        assert builder["State"]["Name"] == "terminated"
        attr = ec2.describe_instance_attribute(InstanceId=builders[0], Attribute="userData")
        script = base64.b64decode(attr["UserData"]["Value"]).decode()
        assert script == bake_script(s)
        for line in ("install_project\n", '> "$APP/.baked"', "shutdown -h now", f"REPO_URL='{REPO}'"):
            assert line in script, line
        subprocess.run(["bash", "-n"], input=script.encode(), check=True)

        # A baked image needs no repo URL: user data only writes settings and starts services.
        baked = s.replace(ami_id=image_id, repo_url="")
        report, _ = deploy(baked, clients)
        assert "created" in str(report)
    finally:
        report = destroy(s, clients)
    assert f"image {image_id}" in str(report)
    assert ec2.describe_images(Owners=["self"], Filters=[
        {"Name": f"tag:{STACK_TAG}", "Values": [s.prefix]}])["Images"] == []
