"""Deploy and destroy against the moto server: every resource, policy, user-data script and tag."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

from controller.actuator import Ec2Actuator
from infra.clients import make_client
from infra.config import Settings
from infra.deploy.alb import HEALTH_PATH, alb_name, idle_timeout_s, target_group_name
from infra.deploy.dashboard import CONTROLLER_METRICS, WORKER_METRICS, dashboard_name
from infra.deploy.deploy import deploy, destroy, launch_template_name
from infra.deploy.errors import DeployError
from infra.deploy.iam import Arns, account_id, app_policy, web_policy
from infra.deploy.model import artifact_keys, model_bucket_name
from infra.deploy.settings import DEFAULT_AMI_PARAMETER, DeploySettings
from infra.tags import ROLE_TAG, STACK_TAG
from infra.userdata import ENV_FILE, INSTANCE_DATA_DIR, UNIT_DIR
from tests.deploy_helpers import env_from_script, snapshot, tags, write_artifact, written_files

REPO = "https://example.org/imgrec.git"


@pytest.fixture
def settings(settings, tmp_path):
    """The suite's settings with a models dir of the test's own: these tests write fake artifacts, which
    must never land on the session's real one (every worker test loads it)."""
    return settings.replace(model_dir=str(tmp_path / "models"))


@pytest.fixture
def dsettings() -> DeploySettings:
    return DeploySettings(repo_url=REPO, repo_ref="v1.2", allowed_cidr="203.0.113.0/24")


@pytest.fixture
def elbv2(settings):
    return make_client("elbv2", settings)


@pytest.fixture
def artifact(settings) -> str:
    """A built model artifact in the test's data dir; its sha256."""
    return write_artifact(settings)


def latest_al2023(settings) -> str:
    return make_client("ssm", settings).get_parameter(Name=DEFAULT_AMI_PARAMETER)["Parameter"]["Value"]


def _user_data_lt(clients, settings) -> tuple[dict, str]:
    lt = clients.ec2.describe_launch_templates(LaunchTemplateNames=[launch_template_name(settings)])
    lt_id = lt["LaunchTemplates"][0]["LaunchTemplateId"]
    data = clients.ec2.describe_launch_template_versions(LaunchTemplateId=lt_id, Versions=["$Default"])
    data = data["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    return data, base64.b64decode(data["UserData"]).decode()


def _instance_user_data(ec2, instance_id: str) -> str:
    attr = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    return base64.b64decode(attr["UserData"]["Value"]).decode()


def _web_instances(ec2, settings) -> list[dict]:
    return sorted((i for r in ec2.describe_instances(Filters=[
        {"Name": f"tag:{STACK_TAG}", "Values": [settings.prefix]}, {"Name": f"tag:{ROLE_TAG}", "Values": ["web"]},
        {"Name": "instance-state-name", "Values": ["running", "pending"]}])["Reservations"] for i in r["Instances"]),
        key=lambda i: tags(i["Tags"])["Name"])


def _assert_script_syntax(script: str) -> None:
    subprocess.run(["bash", "-n"], input=script.encode(), check=True)


def test_deploy_makes_every_resource_and_destroy_restores_the_account(settings, dsettings, clients, elbv2, artifact):
    s, d = settings, dsettings
    before = snapshot(clients, elbv2)
    report, url = deploy(s, d, clients)
    assert report.changed and url.startswith("http://") and url.endswith(f":{s.web_port}")
    after_first = snapshot(clients, elbv2)
    ec2, iam = clients.ec2, clients.iam
    arns = Arns(s.region, account_id(make_client("sts", s)))
    ami = latest_al2023(s)  # IMGREC_AMI_ID unset: the latest Amazon Linux 2023, from SSM
    assert ami != s.ami_id and ec2.describe_images(ImageIds=[ami])["Images"]

    # buckets and queues (from provision), tagged
    assert {s.in_bucket, s.out_bucket} <= set(after_first["buckets"])
    for name in s.queue_names:
        url_q = clients.sqs.get_queue_url(QueueName=name)["QueueUrl"]
        assert clients.sqs.list_queue_tags(QueueUrl=url_q)["Tags"][STACK_TAG] == s.prefix

    # the model artifact: its own private, encrypted, versioned bucket, keys named by the sha256
    bucket = model_bucket_name(s)
    s3 = clients.s3
    assert tags(s3.get_bucket_tagging(Bucket=bucket)["TagSet"]) == {STACK_TAG: s.prefix}
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    model_key, manifest_key = artifact_keys(s.model, artifact)
    assert model_key == f"models/{s.model}/{artifact}/model.onnx"
    assert s3.get_object(Bucket=bucket, Key=model_key)["Body"].read() == b"onnx-bytes-for-tests"
    assert json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())["sha256"] == artifact
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == sorted([model_key, manifest_key])
    uri = f"s3://{bucket}/models/{s.model}/{artifact}/"

    # security groups: web port from the allowed CIDR only, no SSH; app tier no inbound; no balancer
    groups = {g["GroupName"]: g for g in ec2.describe_security_groups(
        Filters=[{"Name": f"tag:{STACK_TAG}", "Values": [s.prefix]}])["SecurityGroups"]}
    assert set(groups) == {f"{s.prefix}-web-sg", f"{s.prefix}-app-sg"}
    web_perms = groups[f"{s.prefix}-web-sg"]["IpPermissions"]
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in web_perms] \
        == [("tcp", s.web_port, s.web_port, ["203.0.113.0/24"])]
    assert groups[f"{s.prefix}-app-sg"]["IpPermissions"] == []
    assert after_first["load balancers"] == before["load balancers"]

    # IAM: roles trusted by EC2 only, inline policies exactly the generated ones, profiles hold the roles
    lt_data, app_script = _user_data_lt(clients, s)
    lt_id = ec2.describe_launch_templates(LaunchTemplateNames=[launch_template_name(s)])["LaunchTemplates"][0][
        "LaunchTemplateId"]
    app_sg, web_sg = groups[f"{s.prefix}-app-sg"]["GroupId"], groups[f"{s.prefix}-web-sg"]["GroupId"]
    deployed = s.replace(model_uri=uri)
    expected = {"app": app_policy(deployed, arns),
                "web": web_policy(deployed, arns, launch_template_id=lt_id, app_sg_id=app_sg, ami_id=ami)}
    for role in ("app", "web"):
        name = f"{s.prefix}-{role}-role"
        r = iam.get_role(RoleName=name)["Role"]
        trust = r["AssumeRolePolicyDocument"]
        trust = json.loads(trust) if isinstance(trust, str) else trust
        assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
        assert tags(iam.list_role_tags(RoleName=name)["Tags"]) == {STACK_TAG: s.prefix, ROLE_TAG: role}
        assert iam.list_role_policies(RoleName=name)["PolicyNames"] == [f"{name}-policy"]
        doc = iam.get_role_policy(RoleName=name, PolicyName=f"{name}-policy")["PolicyDocument"]
        doc = json.loads(doc) if isinstance(doc, str) else doc
        assert doc == expected[role]
        actions = [a for st in doc["Statement"] for a in st["Action"]]
        assert actions and not any("*" in a for a in actions)
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        assert [x["RoleName"] for x in profile["Roles"]] == [name]
    # the app role reads exactly the two artifact objects, and nothing else of that bucket; the web role none
    reads = {r for st in expected["app"]["Statement"] for r in st["Resource"] if bucket in r}
    assert reads == {f"arn:aws:s3:::{bucket}/{model_key}", f"arn:aws:s3:::{bucket}/{manifest_key}"}
    assert not any(bucket in json.dumps(st) for st in expected["web"]["Statement"])
    app_profile_arn = iam.get_instance_profile(InstanceProfileName=f"{s.prefix}-app-role")["InstanceProfile"]["Arn"]

    # launch template: AMI, type, profile, group, IMDSv2, tags, user data
    assert lt_data["ImageId"] == ami and lt_data["InstanceType"] == s.instance_type
    assert lt_data["IamInstanceProfile"]["Arn"] == app_profile_arn
    assert lt_data["SecurityGroupIds"] == [app_sg]
    assert lt_data["MetadataOptions"]["HttpTokens"] == "required"
    assert lt_data["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == d.root_volume_gb
    for spec in lt_data["TagSpecifications"]:
        assert tags(spec["Tags"]) == {STACK_TAG: s.prefix, ROLE_TAG: "app"}
    _assert_script_syntax(app_script)
    assert app_script.startswith("#!/bin/bash\n") and "set -euo pipefail" in app_script
    for line in ("ExecStart=/opt/imgrec/venv/bin/python -m app_tier", "Restart=on-failure", "KillSignal=SIGTERM",
                 "KillMode=mixed", f"EnvironmentFile={ENV_FILE}", "User=imgrec",
                 f"REPO_URL='{REPO}'", "REPO_REF='v1.2'", "for unit in imgrec-model.service imgrec-worker.service",
                 # the worker's runtime requirement set only: no torch, no test or dev tools, no torch index
                 "REQUIREMENTS='requirements/worker.txt'\n", "PIP_EXTRA=''\n", 'PRELOAD=""\n',
                 # the artifact is fetched and verified before the worker may start
                 "ExecStart=/opt/imgrec/venv/bin/python -m app_tier.artifact fetch ${IMGREC_MODEL_URI}",
                 "Requires=imgrec-model.service\nAfter=imgrec-model.service",
                 "imgrec: refusing to start the worker: the model artifact was refused"):
        assert line in app_script, line
    for absent in ("torch.txt", "dev.txt", "web.txt", "torch.load", "imgrec-web.service", "imgrec-controller"):
        assert absent not in app_script, absent
    stop = int(app_script.split("TimeoutStopSec=")[1].split()[0])
    assert stop >= s.visibility_timeout_s
    env = env_from_script(app_script, ENV_FILE)
    assert env["IMGREC_MODEL_URI"] == uri and env["IMGREC_RUNTIME"] == "onnx"
    assert env["IMGREC_REQ_QUEUE"] == s.req_queue and env["IMGREC_DATA_DIR"] == INSTANCE_DATA_DIR
    assert "IMGREC_ALLOWED_CIDR" not in env and "IMGREC_REPO_URL" not in env  # deploy-only settings stay out
    # The env file round-trips: each deployed process parses the very settings deploy meant.
    assert Settings.from_env(env) == s.replace(launch_template="", ami_id=ami, data_dir=INSTANCE_DATA_DIR,
                                               web_host="0.0.0.0", instance_id="", model_uri=uri)

    # web instance: name, tags, type, profile, group, its own user data (web set, web tier + controller)
    (web,) = _web_instances(ec2, s)
    wtags = tags(web["Tags"])
    assert wtags["Name"] == s.web_instance_name and wtags[STACK_TAG] == s.prefix and wtags[ROLE_TAG] == "web"
    assert web["InstanceType"] == d.web_instance_type and web["ImageId"] == ami
    assert [g["GroupId"] for g in web["SecurityGroups"]] == [web_sg]
    assert web["IamInstanceProfile"]["Arn"].endswith(f"instance-profile/{s.prefix}-web-role")
    web_script = _instance_user_data(ec2, web["InstanceId"])
    _assert_script_syntax(web_script)
    for line in ("ExecStart=/opt/imgrec/venv/bin/python -m web_tier", "ExecStart=/opt/imgrec/venv/bin/python -m controller",
                 "AmbientCapabilities=CAP_NET_BIND_SERVICE", "REQUIREMENTS='requirements/web.txt'\n",
                 "for unit in imgrec-web.service imgrec-controller.service"):
        assert line in web_script, line
    web_env = env_from_script(web_script, ENV_FILE)
    assert web_env["IMGREC_WEB_HOST"] == "0.0.0.0" and web_env["IMGREC_LAUNCH_TEMPLATE"] == launch_template_name(s)
    assert web_env["IMGREC_MODEL_URI"] == uri and web_env["IMGREC_AMI_ID"] == ami
    assert "-m app_tier" not in web_script and "worker.txt" not in web_script

    # dashboard: every metric, scoped to this stack
    body = json.loads(clients.cloudwatch.get_dashboard(DashboardName=dashboard_name(s))["DashboardBody"])
    metrics = [m for w in body["widgets"] for m in w["properties"]["metrics"]]
    ours = {m[1] for m in metrics if m[0] == s.metrics_namespace and m[2:4] == ["Stack", s.prefix]}
    assert ours == set(CONTROLLER_METRICS) | set(WORKER_METRICS)
    assert any(m[:4] == ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", s.req_queue] for m in metrics)
    assert [w["properties"]["title"] for w in body["widgets"]] == [
        "Request queue depth", "Backlog per instance", "App-tier instances", "Images per second", "Latency (ms)"]

    # second deploy: no change at all (the artifact is not uploaded again)
    report2, url2 = deploy(s, d, clients)
    assert not report2.changed, str(report2)
    assert url2 == url and snapshot(clients, elbv2) == after_first
    assert len(s3.list_object_versions(Bucket=bucket)["Versions"]) == 2

    # the controller's launch: from the template, named per instance; it inherits the stack tag
    launched = ec2.run_instances(
        MinCount=1, MaxCount=1, LaunchTemplate={"LaunchTemplateName": launch_template_name(s)},
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": s.app_instance_name(1)}]}],
    )["Instances"][0]
    app_inst = ec2.describe_instances(InstanceIds=[launched["InstanceId"]])["Reservations"][0]["Instances"][0]
    assert tags(app_inst["Tags"])[STACK_TAG] == s.prefix
    # (moto does not copy the template's instance profile onto the instance; the template data is asserted above)
    # someone else's instance with a look-alike name must survive destroy
    foreign = ec2.run_instances(ImageId=s.ami_id, MinCount=1, MaxCount=1, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": s.app_instance_name(99)}]}])["Instances"][0]
    clients.s3.put_object(Bucket=s.in_bucket, Key="a.jpg", Body=b"x")

    try:
        report3 = destroy(s, clients)
        assert "deleted" in str(report3)
        after = snapshot(clients, elbv2)
        assert after["instances"] == sorted(before["instances"] + [foreign["InstanceId"]])
        after["instances"] = before["instances"]
        assert after == before
        gone = ec2.describe_instances(InstanceIds=[launched["InstanceId"], web["InstanceId"]])["Reservations"]
        assert {i["State"]["Name"] for r in gone for i in r["Instances"]} == {"terminated"}
        assert not destroy(s, clients).changed  # nothing left to remove
    finally:
        ec2.terminate_instances(InstanceIds=[foreign["InstanceId"]])


def test_the_ami_path_boots_with_the_same_units_and_env_file_as_the_launch_template(settings, dsettings, clients,
                                                                                    artifact):
    """The controller without a launch template (``IMGREC_AMI_ID`` path) launches with the very boot
    script deploy put in the template: same unit files, same env file, byte for byte."""
    try:
        deploy(settings, dsettings, clients)
        _, lt_script = _user_data_lt(clients, settings)
        (web,) = _web_instances(clients.ec2, settings)
        # what the controller on the web instance runs with, minus the template: the AMI path
        controller = Settings.from_env(env_from_script(_instance_user_data(clients.ec2, web["InstanceId"]), ENV_FILE))
        assert controller.launch_template == launch_template_name(settings)
        iid = Ec2Actuator(clients.ec2, controller.replace(launch_template="")).launch(1)[0]
        ami_script = _instance_user_data(clients.ec2, iid)
        _assert_script_syntax(ami_script)
        lt_files, ami_files = written_files(lt_script), written_files(ami_script)
        assert set(lt_files) == {ENV_FILE, f"{UNIT_DIR}/imgrec-model.service", f"{UNIT_DIR}/imgrec-worker.service"}
        assert ami_files == lt_files
        # the rest of the script is the same too, but for where to install from (the AMI path needs a baked image)
        assert ami_script.replace("REPO_URL=''\nREPO_REF=''", f"REPO_URL='{REPO}'\nREPO_REF='v1.2'") == lt_script
    finally:
        destroy(settings, clients)


def test_web_instances_behind_a_load_balancer_then_back_to_one(settings, dsettings, clients, elbv2, artifact):
    s, d = settings.replace(request_timeout_s=300.0), dsettings.replace(web_instances=2, ssh_cidr="198.51.100.7/32")
    ec2 = clients.ec2
    before = snapshot(clients, elbv2)
    try:
        report, url = deploy(s, d, clients)
        (lb,) = elbv2.describe_load_balancers(Names=[alb_name(s)])["LoadBalancers"]
        assert url == f"http://{lb['DNSName']}:{s.web_port}"
        assert lb["Scheme"] == "internet-facing" and lb["Type"] == "application"
        assert len({az["ZoneName"] for az in lb["AvailabilityZones"]}) >= 2
        lb_tags = tags(elbv2.describe_tags(ResourceArns=[lb["LoadBalancerArn"]])["TagDescriptions"][0]["Tags"])
        assert lb_tags[STACK_TAG] == s.prefix
        attrs = {a["Key"]: a["Value"] for a in
                 elbv2.describe_load_balancer_attributes(LoadBalancerArn=lb["LoadBalancerArn"])["Attributes"]}
        assert int(attrs["idle_timeout.timeout_seconds"]) == idle_timeout_s(s) > s.request_timeout_s

        # target group with the /healthz check, and a listener on the web port forwarding to it
        (tg,) = elbv2.describe_target_groups(Names=[target_group_name(s)])["TargetGroups"]
        assert (tg["Protocol"], tg["Port"], tg["TargetType"]) == ("HTTP", s.web_port, "instance")
        assert tg["HealthCheckPath"] == HEALTH_PATH == "/healthz" and tg["Matcher"] == {"HttpCode": "200"}
        (listener,) = elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
        assert (listener["Protocol"], listener["Port"]) == ("HTTP", s.web_port)
        assert listener["DefaultActions"][0]["TargetGroupArn"] == tg["TargetGroupArn"]

        # two web instances, both targets; only the first (named exactly IMGREC_WEB_INSTANCE_NAME) runs the controller
        webs = _web_instances(ec2, s)
        assert [tags(w["Tags"])["Name"] for w in webs] == [s.web_instance_name, f"{s.web_instance_name}-2"]
        targets = elbv2.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])["TargetHealthDescriptions"]
        assert sorted(t["Target"]["Id"] for t in targets) == sorted(w["InstanceId"] for w in webs)
        first, second = (_instance_user_data(ec2, w["InstanceId"]) for w in webs)
        assert "-m controller" in first and "for unit in imgrec-web.service imgrec-controller.service" in first
        assert "-m controller" not in second and "for unit in imgrec-web.service; do" in second

        # security groups: balancer open to the allowed CIDR; web port only from the balancer's group; SSH kept
        groups = {g["GroupName"]: g for g in ec2.describe_security_groups(
            Filters=[{"Name": f"tag:{STACK_TAG}", "Values": [s.prefix]}])["SecurityGroups"]}
        alb_sg, web_sg = groups[f"{s.prefix}-alb-sg"], groups[f"{s.prefix}-web-sg"]
        assert lb["SecurityGroups"] == [alb_sg["GroupId"]]
        assert {(p["FromPort"], r["CidrIp"]) for p in alb_sg["IpPermissions"] for r in p["IpRanges"]} \
            == {(s.web_port, "203.0.113.0/24")}
        assert {(p["FromPort"], g["GroupId"]) for p in web_sg["IpPermissions"] for g in p["UserIdGroupPairs"]} \
            == {(s.web_port, alb_sg["GroupId"])}
        assert {(p["FromPort"], r["CidrIp"]) for p in web_sg["IpPermissions"] for r in p["IpRanges"]} \
            == {(22, "198.51.100.7/32")}
        assert all(w["SecurityGroups"] == [{"GroupId": web_sg["GroupId"], "GroupName": web_sg["GroupName"]}]
                   for w in webs)

        again, _ = deploy(s, d, clients)
        assert not again.changed, str(again)

        # back to one web instance: the second and the balancer go, the web port opens to the CIDR again
        report1, url1 = deploy(s, d.replace(web_instances=1), clients)
        assert f"web instance {webs[1]['InstanceId']}" in str(report1)
        assert [w["InstanceId"] for w in _web_instances(ec2, s)] == [webs[0]["InstanceId"]]
        assert elbv2.describe_load_balancers()["LoadBalancers"] == [
            x for x in elbv2.describe_load_balancers()["LoadBalancers"] if x["LoadBalancerName"] != alb_name(s)]
        assert not any(tg["TargetGroupName"] == target_group_name(s)
                       for tg in elbv2.describe_target_groups()["TargetGroups"])
        groups = {g["GroupName"]: g for g in ec2.describe_security_groups(
            Filters=[{"Name": f"tag:{STACK_TAG}", "Values": [s.prefix]}])["SecurityGroups"]}
        assert set(groups) == {f"{s.prefix}-web-sg", f"{s.prefix}-app-sg"}
        web_sg = groups[f"{s.prefix}-web-sg"]
        assert not any(p["UserIdGroupPairs"] for p in web_sg["IpPermissions"])
        assert (s.web_port, "203.0.113.0/24") in {(p["FromPort"], r["CidrIp"]) for p in web_sg["IpPermissions"]
                                                   for r in p["IpRanges"]}
        assert not url1.startswith(f"http://{lb['DNSName']}")
        deploy(s, d, clients)  # and out to two again, for destroy to remove
    finally:
        destroy(s, clients)
    after = snapshot(clients, elbv2)
    assert after == before


def test_ssh_only_when_asked_and_rules_converge(settings, dsettings, clients, artifact):
    s, d = settings, dsettings.replace(ssh_cidr="198.51.100.7/32")
    try:
        deploy(s, d, clients)
        web_sg = clients.ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": [f"{s.prefix}-web-sg"]}])["SecurityGroups"][0]
        rules = {(p["FromPort"], r["CidrIp"]) for p in web_sg["IpPermissions"] for r in p["IpRanges"]}
        assert rules == {(s.web_port, "203.0.113.0/24"), (22, "198.51.100.7/32")}
        # dropping SSH and widening the web CIDR converges the group in place
        report, _ = deploy(s, d.replace(ssh_cidr="", allowed_cidr="0.0.0.0/0"), clients)
        assert ("updated rules" in str(report))
        web_sg = clients.ec2.describe_security_groups(GroupIds=[web_sg["GroupId"]])["SecurityGroups"][0]
        rules = {(p["FromPort"], r["CidrIp"]) for p in web_sg["IpPermissions"] for r in p["IpRanges"]}
        assert rules == {(s.web_port, "0.0.0.0/0")}
    finally:
        destroy(s, clients)


def test_changed_settings_update_template_version_not_the_instance(settings, dsettings, clients, artifact):
    try:
        deploy(settings, dsettings, clients)
        bigger = settings.replace(instance_type="c5.large")
        report, _ = deploy(bigger, dsettings, clients)
        assert "updated to version 2" in str(report)
        assert "settings changed since launch" in str(report)
        data, _ = _user_data_lt(clients, bigger)
        assert data["InstanceType"] == "c5.large"
        # a rebuilt model: new keys, a new URI in a new template version; the old objects stay (versioned bucket)
        sha = write_artifact(settings, b"a rebuilt model")
        report, _ = deploy(bigger, dsettings, clients)
        assert "updated to version 3" in str(report)
        _, script = _user_data_lt(clients, bigger)
        assert env_from_script(script, ENV_FILE)["IMGREC_MODEL_URI"].endswith(f"/{sha}/")
    finally:
        destroy(settings, clients)


def test_gpu_app_instances_keep_the_torch_cuda_path_and_need_no_artifact(settings, dsettings, clients):
    gpu = settings.replace(instance_type="g4dn.xlarge")
    try:
        deploy(gpu, dsettings, clients)  # no artifact on disk: the torch runtime does not use one
        _, script = _user_data_lt(clients, gpu)
        env = env_from_script(script, ENV_FILE)
        assert env["IMGREC_RUNTIME"] == "torch" and env["IMGREC_MODEL_URI"] == ""
        assert "REQUIREMENTS='requirements/worker.txt requirements/model.txt requirements/torch.txt'" in script
        assert "PIP_EXTRA=''" in script  # PyPI's CUDA build, not the CPU index
        assert "torch.load(F.get_model_file_path()" in script and "for unit in imgrec-worker.service; do" in script
        assert set(written_files(script)) == {ENV_FILE, f"{UNIT_DIR}/imgrec-worker.service"}
        doc = clients.iam.get_role_policy(RoleName=f"{gpu.prefix}-app-role",
                                          PolicyName=f"{gpu.prefix}-app-role-policy")["PolicyDocument"]
        doc = json.loads(doc) if isinstance(doc, str) else doc
        assert [st["Sid"] for st in doc["Statement"]][0] == "WorkRequestQueue"  # no ReadModelArtifact
        assert model_bucket_name(gpu) not in {
            b["Name"] for b in clients.s3.list_buckets()["Buckets"]}
    finally:
        destroy(gpu, clients)


def test_deploy_refuses_without_source_or_with_a_bad_artifact_and_leaves_nothing(settings, dsettings, clients, elbv2,
                                                                                 tmp_path):
    before = snapshot(clients, elbv2)
    with pytest.raises(DeployError, match="IMGREC_REPO_URL"):
        deploy(settings, DeploySettings(), clients)  # the base AMI is not baked and no repo URL is set
    with pytest.raises(DeployError, match="not found"):
        deploy(settings.replace(ami_id="ami-00000000deadbeef0"), dsettings, clients)
    with pytest.raises(DeployError, match="no model artifact .*python -m app_tier.build_model"):
        deploy(settings, dsettings, clients)
    sha = write_artifact(settings, manifest_sha="0" * 64)
    with pytest.raises(DeployError, match=f"has sha256 {sha}, but manifest .* says {'0' * 64}"):
        deploy(settings, dsettings, clients)
    write_artifact(settings, model="mobilenet_v3_large")
    with pytest.raises(DeployError, match="is for model 'mobilenet_v3_large'"):
        deploy(settings, dsettings, clients)
    assert snapshot(clients, elbv2) == before


def test_deploy_refuses_a_role_name_that_is_not_ours(settings, dsettings, clients, artifact):
    iam = clients.iam
    name = f"{settings.prefix}-app-role"
    iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")
    try:
        with pytest.raises(DeployError, match="not tagged"):
            deploy(settings, dsettings, clients)
        report = destroy(settings, clients)
        assert "kept (not ours)" in str(report)
        assert iam.get_role(RoleName=name)["Role"]["RoleName"] == name
    finally:
        iam.delete_role(RoleName=name)
        destroy(settings, clients)
