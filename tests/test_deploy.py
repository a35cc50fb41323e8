"""Deploy and destroy against the moto server: every resource, policy, user-data script and tag."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

from infra.clients import make_client
from infra.config import Settings
from infra.deploy.dashboard import CONTROLLER_METRICS, WORKER_METRICS, dashboard_name
from infra.deploy.deploy import deploy, destroy, launch_template_name
from infra.deploy.iam import Arns, DeployError, account_id, app_policy, web_policy
from infra.deploy.userdata import ENV_FILE, INSTANCE_DATA_DIR
from infra.observe import ROLE_TAG, STACK_TAG

REPO = "https://example.org/imgrec.git"


@pytest.fixture
def dsettings(settings) -> Settings:
    return settings.replace(repo_url=REPO, repo_ref="v1.2", allowed_cidr="203.0.113.0/24")


def _tags(items) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or []}


def snapshot(clients) -> dict[str, list]:
    """Every resource kind deploy touches, account-wide, so before/after compare exactly."""
    ec2, iam = clients.ec2, clients.iam
    live = ["pending", "running", "stopping", "stopped", "shutting-down"]
    return {
        "buckets": sorted(b["Name"] for b in clients.s3.list_buckets()["Buckets"]),
        "queues": sorted(clients.sqs.list_queues().get("QueueUrls", [])),
        "roles": sorted(r["RoleName"] for r in iam.list_roles()["Roles"]),
        "profiles": sorted(p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]),
        "groups": sorted(g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]),
        "templates": sorted(t["LaunchTemplateId"] for t in ec2.describe_launch_templates()["LaunchTemplates"]),
        "dashboards": sorted(d["DashboardName"] for d in clients.cloudwatch.list_dashboards()["DashboardEntries"]),
        "instances": sorted(i["InstanceId"] for r in ec2.describe_instances(
            Filters=[{"Name": "instance-state-name", "Values": live}])["Reservations"] for i in r["Instances"]),
        "images": sorted(i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]),
    }


def _user_data_lt(clients, settings) -> tuple[dict, str]:
    lt = clients.ec2.describe_launch_templates(LaunchTemplateNames=[launch_template_name(settings)])
    lt_id = lt["LaunchTemplates"][0]["LaunchTemplateId"]
    data = clients.ec2.describe_launch_template_versions(LaunchTemplateId=lt_id, Versions=["$Default"])
    data = data["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    return data, base64.b64decode(data["UserData"]).decode()


def _env_from_script(script: str) -> dict[str, str]:
    body = script.split(f"cat > {ENV_FILE} <<'IMGREC_EOF'\n", 1)[1].split("\nIMGREC_EOF", 1)[0]
    out = {}
    for line in body.splitlines():
        key, value = line.split("=", 1)
        assert value.startswith('"') and value.endswith('"'), line
        out[key] = value[1:-1]
    return out


def _assert_script_syntax(script: str) -> None:
    subprocess.run(["bash", "-n"], input=script.encode(), check=True)


def test_deploy_makes_every_resource_and_destroy_restores_the_account(dsettings, clients):
    s = dsettings
    before = snapshot(clients)
    report, url = deploy(s, clients)
    assert report.changed and url.startswith("http://") and url.endswith(f":{s.web_port}")
    after_first = snapshot(clients)
    ec2, iam = clients.ec2, clients.iam
    arns = Arns(s.region, account_id(make_client("sts", s)))

    # buckets and queues (from provision), tagged
    assert {s.in_bucket, s.out_bucket} <= set(after_first["buckets"])
    for name in s.queue_names:
        url_q = clients.sqs.get_queue_url(QueueName=name)["QueueUrl"]
        assert clients.sqs.list_queue_tags(QueueUrl=url_q)["Tags"][STACK_TAG] == s.prefix

    # security groups: web port from the allowed CIDR only, no SSH; app tier no inbound
    groups = {g["GroupName"]: g for g in ec2.describe_security_groups(
        Filters=[{"Name": f"tag:{STACK_TAG}", "Values": [s.prefix]}])["SecurityGroups"]}
    assert set(groups) == {f"{s.prefix}-web-sg", f"{s.prefix}-app-sg"}
    web_perms = groups[f"{s.prefix}-web-sg"]["IpPermissions"]
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in web_perms] \
        == [("tcp", s.web_port, s.web_port, ["203.0.113.0/24"])]
    assert groups[f"{s.prefix}-app-sg"]["IpPermissions"] == []

    # IAM: roles trusted by EC2 only, inline policies exactly the generated ones, profiles hold the roles
    lt_data, app_script = _user_data_lt(clients, s)
    lt_id = ec2.describe_launch_templates(LaunchTemplateNames=[launch_template_name(s)])["LaunchTemplates"][0][
        "LaunchTemplateId"]
    app_sg, web_sg = groups[f"{s.prefix}-app-sg"]["GroupId"], groups[f"{s.prefix}-web-sg"]["GroupId"]
    expected = {"app": app_policy(s, arns),
                "web": web_policy(s, arns, launch_template_id=lt_id, app_sg_id=app_sg, ami_id=s.ami_id)}
    for role in ("app", "web"):
        name = f"{s.prefix}-{role}-role"
        r = iam.get_role(RoleName=name)["Role"]
        trust = r["AssumeRolePolicyDocument"]
        trust = json.loads(trust) if isinstance(trust, str) else trust
        assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
        assert _tags(iam.list_role_tags(RoleName=name)["Tags"]) == {STACK_TAG: s.prefix, ROLE_TAG: role}
        assert iam.list_role_policies(RoleName=name)["PolicyNames"] == [f"{name}-policy"]
        doc = iam.get_role_policy(RoleName=name, PolicyName=f"{name}-policy")["PolicyDocument"]
        doc = json.loads(doc) if isinstance(doc, str) else doc
        assert doc == expected[role]
        actions = [a for st in doc["Statement"] for a in st["Action"]]
        assert actions and not any("*" in a for a in actions)
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        assert [x["RoleName"] for x in profile["Roles"]] == [name]
    app_profile_arn = iam.get_instance_profile(InstanceProfileName=f"{s.prefix}-app-role")["InstanceProfile"]["Arn"]

    # launch template: AMI, type, profile, group, IMDSv2, tags, user data
    assert lt_data["ImageId"] == s.ami_id and lt_data["InstanceType"] == s.instance_type
    assert lt_data["IamInstanceProfile"]["Arn"] == app_profile_arn
    assert lt_data["SecurityGroupIds"] == [app_sg]
    assert lt_data["MetadataOptions"]["HttpTokens"] == "required"
    assert lt_data["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == s.root_volume_gb
    for spec in lt_data["TagSpecifications"]:
        assert _tags(spec["Tags"]) == {STACK_TAG: s.prefix, ROLE_TAG: "app"}
    _assert_script_syntax(app_script)
    assert app_script.startswith("#!/bin/bash\n") and "set -euo pipefail" in app_script
    for line in ("ExecStart=/opt/imgrec/venv/bin/python -m app_tier", "Restart=on-failure", "KillSignal=SIGTERM",
                 "KillMode=mixed", f"EnvironmentFile={ENV_FILE}", "User=imgrec",
                 f"REPO_URL='{REPO}'", "REPO_REF='v1.2'", "systemctl enable --now imgrec-worker.service",
                 "torch.load(F.get_model_file_path()", "-r \"$APP/src/requirements.txt\"",
                 "--extra-index-url https://download.pytorch.org/whl/cpu"):
        assert line in app_script, line
    stop = int(app_script.split("TimeoutStopSec=")[1].split()[0])
    assert stop >= s.visibility_timeout_s
    assert "imgrec-web.service" not in app_script
    env = _env_from_script(app_script)
    assert env["IMGREC_LAUNCH_TEMPLATE"] == launch_template_name(s)
    assert env["IMGREC_REQ_QUEUE"] == s.req_queue and env["IMGREC_DATA_DIR"] == INSTANCE_DATA_DIR
    # The env file round-trips: each deployed process parses the very settings deploy meant.
    assert Settings.from_env(env) == s.replace(launch_template=launch_template_name(s), data_dir=INSTANCE_DATA_DIR,
                                               web_host="0.0.0.0", instance_id="")

    # web instance: name, tags, type, profile, group, its own user data
    (web,) = [i for r in ec2.describe_instances(Filters=[
        {"Name": "tag:Name", "Values": [s.web_instance_name]},
        {"Name": "instance-state-name", "Values": ["running", "pending"]}])["Reservations"] for i in r["Instances"]]
    tags = _tags(web["Tags"])
    assert tags[STACK_TAG] == s.prefix and tags[ROLE_TAG] == "web"
    assert web["InstanceType"] == s.web_instance_type
    assert [g["GroupId"] for g in web["SecurityGroups"]] == [web_sg]
    assert web["IamInstanceProfile"]["Arn"].endswith(f"instance-profile/{s.prefix}-web-role")
    attr = ec2.describe_instance_attribute(InstanceId=web["InstanceId"], Attribute="userData")
    web_script = base64.b64decode(attr["UserData"]["Value"]).decode()
    _assert_script_syntax(web_script)
    for line in ("ExecStart=/opt/imgrec/venv/bin/python -m web_tier", "ExecStart=/opt/imgrec/venv/bin/python -m controller",
                 "AmbientCapabilities=CAP_NET_BIND_SERVICE",
                 "systemctl enable --now imgrec-web.service imgrec-controller.service"):
        assert line in web_script, line
    assert _env_from_script(web_script)["IMGREC_WEB_HOST"] == "0.0.0.0"
    assert "-m app_tier" not in web_script

    # dashboard: every metric, scoped to this stack
    body = json.loads(clients.cloudwatch.get_dashboard(DashboardName=dashboard_name(s))["DashboardBody"])
    metrics = [m for w in body["widgets"] for m in w["properties"]["metrics"]]
    ours = {m[1] for m in metrics if m[0] == s.metrics_namespace and m[2:4] == ["Stack", s.prefix]}
    assert ours == set(CONTROLLER_METRICS) | set(WORKER_METRICS)
    assert any(m[:4] == ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", s.req_queue] for m in metrics)
    assert [w["properties"]["title"] for w in body["widgets"]] == [
        "Request queue depth", "Backlog per instance", "App-tier instances", "Images per second", "Latency (ms)"]

    # second deploy: no change at all
    report2, url2 = deploy(s, clients)
    assert not report2.changed, str(report2)
    assert url2 == url and snapshot(clients) == after_first

    # the controller's launch: from the template, named per instance; it inherits the stack tag
    launched = ec2.run_instances(
        MinCount=1, MaxCount=1, LaunchTemplate={"LaunchTemplateName": launch_template_name(s)},
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": s.app_instance_name(1)}]}],
    )["Instances"][0]
    app_inst = ec2.describe_instances(InstanceIds=[launched["InstanceId"]])["Reservations"][0]["Instances"][0]
    assert _tags(app_inst["Tags"])[STACK_TAG] == s.prefix
    # (moto does not copy the template's instance profile onto the instance; the template data is asserted above)
    # someone else's instance with a look-alike name must survive destroy
    foreign = ec2.run_instances(ImageId=s.ami_id, MinCount=1, MaxCount=1, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": s.app_instance_name(99)}]}])["Instances"][0]
    clients.s3.put_object(Bucket=s.in_bucket, Key="a.jpg", Body=b"x")

    try:
        report3 = destroy(s, clients)
        assert "deleted" in str(report3)
        after = snapshot(clients)
        assert after["instances"] == sorted(before["instances"] + [foreign["InstanceId"]])
        after["instances"] = before["instances"]
        assert after == before
        gone = ec2.describe_instances(InstanceIds=[launched["InstanceId"], web["InstanceId"]])["Reservations"]
        assert {i["State"]["Name"] for r in gone for i in r["Instances"]} == {"terminated"}
        assert not destroy(s, clients).changed  # nothing left to remove
    finally:
        ec2.terminate_instances(InstanceIds=[foreign["InstanceId"]])


def test_ssh_only_when_asked_and_rules_converge(dsettings, clients):
    s = dsettings.replace(ssh_cidr="198.51.100.7/32")
    try:
        deploy(s, clients)
        web_sg = clients.ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": [f"{s.prefix}-web-sg"]}])["SecurityGroups"][0]
        rules = {(p["FromPort"], r["CidrIp"]) for p in web_sg["IpPermissions"] for r in p["IpRanges"]}
        assert rules == {(s.web_port, "203.0.113.0/24"), (22, "198.51.100.7/32")}
        # dropping SSH and widening the web CIDR converges the group in place
        report, _ = deploy(s.replace(ssh_cidr="", allowed_cidr="0.0.0.0/0"), clients)
        assert ("updated rules" in str(report))
        web_sg = clients.ec2.describe_security_groups(GroupIds=[web_sg["GroupId"]])["SecurityGroups"][0]
        rules = {(p["FromPort"], r["CidrIp"]) for p in web_sg["IpPermissions"] for r in p["IpRanges"]}
        assert rules == {(s.web_port, "0.0.0.0/0")}
    finally:
        destroy(s, clients)


def test_changed_settings_update_template_version_not_the_instance(dsettings, clients):
    try:
        deploy(dsettings, clients)
        bigger = dsettings.replace(instance_type="c5.large")
        report, _ = deploy(bigger, clients)
        assert "updated to version 2" in str(report)
        assert "settings changed since launch" in str(report)
        data, _ = _user_data_lt(clients, bigger)
        assert data["InstanceType"] == "c5.large"
    finally:
        destroy(dsettings, clients)


def test_deploy_refuses_without_source_and_leaves_nothing(settings, clients):
    before = snapshot(clients)
    with pytest.raises(DeployError, match="IMGREC_REPO_URL"):
        deploy(settings, clients)  # moto's base AMI is not baked and no repo URL is set
    with pytest.raises(DeployError, match="not found"):
        deploy(settings.replace(ami_id="ami-00000000deadbeef0", repo_url=REPO), clients)
    assert snapshot(clients) == before


def test_deploy_refuses_a_role_name_that_is_not_ours(dsettings, clients):
    iam = clients.iam
    name = f"{dsettings.prefix}-app-role"
    iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")
    try:
        with pytest.raises(DeployError, match="not tagged"):
            deploy(dsettings, clients)
        report = destroy(dsettings, clients)
        assert "kept (not ours)" in str(report)
        assert iam.get_role(RoleName=name)["Role"]["RoleName"] == name
    finally:
        iam.delete_role(RoleName=name)
        destroy(dsettings, clients)
