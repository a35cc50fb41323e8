"""Helpers the deploy tests share (a helpers module, not a test module): a model artifact on disk
in the layout `python -m app_tier.build_model` writes, and a snapshot of everything deploy touches."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from infra.config import ARTIFACT_MANIFEST_FILE, ARTIFACT_MODEL_FILE, Settings
from infra.local.strict.settings import StrictSettings
from infra.observe import LIVE_STATES

LIVE = [str(s) for s in LIVE_STATES]


def write_artifact(settings: Settings, body: bytes = b"onnx-bytes-for-tests", *, manifest_sha: str | None = None,
                   model: str | None = None) -> str:
    """A model.onnx + manifest.json under ``<models dir>/<model>/``; returns the file's sha256.
    ``manifest_sha`` makes the manifest lie (a corrupt or mismatched artifact)."""
    directory = Path(settings.models_dir) / settings.model
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ARTIFACT_MODEL_FILE).write_bytes(body)
    sha = hashlib.sha256(body).hexdigest()
    manifest = {"format": 1, "model": model or settings.model, "sha256": manifest_sha or sha, "size": len(body),
                "categories": ["tench", "goldfish"], "opset": 17}
    (directory / ARTIFACT_MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return sha


def snapshot(clients, elbv2) -> dict[str, list]:
    """Every resource kind deploy touches, account-wide, so before/after compare exactly."""
    ec2, iam = clients.ec2, clients.iam
    stacks = clients.cloudformation.describe_stacks()["Stacks"]
    return {
        "stacks": sorted(st["StackName"] for st in stacks if st["StackStatus"] != "DELETE_COMPLETE"),
        "web groups": sorted(g["AutoScalingGroupName"] for g in
                             clients.autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]),
        "tables": sorted(clients.dynamodb.list_tables()["TableNames"]),
        "buckets": sorted(b["Name"] for b in clients.s3.list_buckets()["Buckets"]),
        "queues": sorted(clients.sqs.list_queues().get("QueueUrls", [])),
        "roles": sorted(r["RoleName"] for r in iam.list_roles()["Roles"]),
        "profiles": sorted(p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]),
        "groups": sorted(g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]),
        "templates": sorted(t["LaunchTemplateId"] for t in ec2.describe_launch_templates()["LaunchTemplates"]),
        "dashboards": sorted(d["DashboardName"] for d in clients.cloudwatch.list_dashboards()["DashboardEntries"]),
        "instances": sorted(i["InstanceId"] for r in ec2.describe_instances(
            Filters=[{"Name": "instance-state-name", "Values": LIVE}])["Reservations"] for i in r["Instances"]),
        "images": sorted(i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]),
        "load balancers": sorted(lb["LoadBalancerArn"] for lb in elbv2.describe_load_balancers()["LoadBalancers"]),
        "target groups": sorted(tg["TargetGroupArn"] for tg in elbv2.describe_target_groups()["TargetGroups"]),
    }


def settled_snapshot(clients, elbv2) -> dict[str, list]:
    """The snapshot a test compares its end against: taken once the suite's EC2 lag has passed since the
    call, so an instance an earlier test launched a moment ago (invisible for that long, infra.local.strict)
    is already listed and does not show up between before and after as if this test had left it."""
    settled = time.monotonic() + StrictSettings.from_env().ec2_lag_s
    while time.monotonic() < settled:
        time.sleep(0.1)
    return snapshot(clients, elbv2)


def tags(items) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or []}


def heredoc(script: str, path: str) -> str:
    """The body a boot script writes to ``path`` (a `cat > path <<'IMGREC_EOF'` block)."""
    return script.split(f"cat > {path} <<'IMGREC_EOF'\n", 1)[1].split("\nIMGREC_EOF", 1)[0]


def written_files(script: str) -> dict[str, str]:
    """{path: body} of every heredoc file a boot script writes (the env file and the units)."""
    out = {}
    for chunk in script.split("cat > ")[1:]:
        path, rest = chunk.split(" <<'IMGREC_EOF'\n", 1)
        out[path] = rest.split("\nIMGREC_EOF", 1)[0]
    return out


def env_from_script(script: str, path: str) -> dict[str, str]:
    out = {}
    for line in heredoc(script, path).splitlines():
        key, value = line.split("=", 1)
        assert value.startswith('"') and value.endswith('"'), line
        out[key] = value[1:-1]
    return out
