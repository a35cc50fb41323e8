"""Deploy and destroy the stack against the moto server (with our CloudFormation corrections): every
resource, policy, user-data script and tag; a redeploy is an empty change set; a deploy that fails midway
rolls back and says why; destroy leaves every resource list as it was."""

from __future__ import annotations

import json
import subprocess

import pytest

from controller.actuator import Ec2Actuator
from infra.cfn import changes, names
from infra.cfn.dashboard import dashboard_body
from infra.cfn.template import idle_timeout_s
from infra.clients import Clients, make_client
from infra.config import Settings
from infra.deploy.deploy import deploy, destroy
from infra.deploy.errors import DeployError
from infra.deploy.settings import DEFAULT_AMI_PARAMETER, DeploySettings
from infra.metrics import CONTROLLER_METRICS, WORKER_METRICS
from infra.tags import NAME_TAG, ROLE_TAG, STACK_TAG, Role
from infra.userdata import (
    ENV_FILE,
    INSTANCE_DATA_DIR,
    UNIT_DIR,
    Source,
    app_user_data,
    instance_settings,
    web_user_data,
)
from tests.deploy_helpers import env_from_script, settled_snapshot, snapshot, tags, write_artifact, written_files
from tests.helpers import strict_aws, template_user_data, wait_listed

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
    """A built model artifact in the test's models dir; its sha256."""
    return write_artifact(settings)


def latest_al2023(settings) -> str:
    return make_client("ssm", settings).get_parameter(Name=DEFAULT_AMI_PARAMETER)["Parameter"]["Value"]


def web_instances(ec2, settings) -> list[dict]:
    """The stack's live web instances, once EC2 lists what its web group launched."""
    from infra.cfn.stack import web_group_instances

    wait_listed(ec2, web_group_instances(Clients(settings), settings) or [])
    return sorted((i for r in ec2.describe_instances(Filters=[
        {"Name": f"tag:{STACK_TAG}", "Values": [settings.prefix]}, {"Name": f"tag:{ROLE_TAG}", "Values": ["web"]},
        {"Name": "instance-state-name", "Values": ["running", "pending"]}])["Reservations"] for i in r["Instances"]),
        key=lambda i: i["InstanceId"])


def lt_data(ec2, name: str, version: str = "$Latest") -> dict:
    return ec2.describe_launch_template_versions(LaunchTemplateName=name, Versions=[version])[
        "LaunchTemplateVersions"][0]["LaunchTemplateData"]


def policy(iam, prefix: str, role: Role) -> dict:
    doc = iam.get_role_policy(RoleName=names.role_name(prefix, role),
                              PolicyName=names.policy_name(prefix, role))["PolicyDocument"]
    return json.loads(doc) if isinstance(doc, str) else doc


def statement(doc: dict, sid: str) -> dict:
    return next(st for st in doc["Statement"] if st["Sid"] == sid)


def test_deploy_redeploy_destroy_restores_every_resource_list(settings, dsettings, clients, elbv2, artifact):
    s, d = settings, dsettings
    before = settled_snapshot(clients, elbv2)
    done = deploy(s, d, clients)
    assert done.plan.create and {c.action for c in done.plan.changes} == {"Add"}
    assert {c.logical_id for c in done.plan.changes} >= {"InputBucket", "AppLaunchTemplate", "WebGroup", "Dashboard"}
    assert not {"LoadBalancer", "WebIngressSsh"} & {c.logical_id for c in done.plan.changes}  # conditions hold
    out = done.outputs
    ec2, iam, s3 = clients.ec2, clients.iam, clients.s3
    ami = latest_al2023(s)  # IMGREC_AMI_ID unset: the latest Amazon Linux 2023, resolved by the stack from SSM

    # buckets: the course's names, private, encrypted, the input one versioned (our moto corrections)
    assert (out["InputBucketName"], out["OutputBucketName"]) == (s.in_bucket, s.out_bucket)
    model_bucket = out["ModelBucketName"]
    assert model_bucket.startswith(f"{s.prefix}-modelbucket-")  # CloudFormation's unique name
    for bucket in (s.in_bucket, s.out_bucket, model_bucket):
        assert tags(s3.get_bucket_tagging(Bucket=bucket)["TagSet"]) == {STACK_TAG: s.prefix, ROLE_TAG: "data"}
        assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
        assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert s3.get_bucket_versioning(Bucket=s.in_bucket)["Status"] == "Enabled"
    assert s3.get_bucket_versioning(Bucket=model_bucket)["Status"] == "Enabled"
    # the model artifact, uploaded after the stack: keys named by its sha256, the stack's parameter
    uri = f"s3://{model_bucket}/models/{s.model}/{artifact}/"
    assert out["ModelArtifactUri"] == uri
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=model_bucket)["Contents"])
    assert keys == [f"models/{s.model}/{artifact}/{n}" for n in ("manifest.json", "model.onnx")]
    assert s3.get_object(Bucket=model_bucket, Key=keys[1])["Body"].read() == b"onnx-bytes-for-tests"

    # IAM: roles trusted by EC2 only, tagged; one policy each; the app role reads exactly the two artifact keys
    account = make_client("sts", s).get_caller_identity()["Account"]
    for role in (Role.APP, Role.WEB):
        name = names.role_name(s.prefix, role)
        trust = iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"]
        trust = json.loads(trust) if isinstance(trust, str) else trust
        assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
        assert tags(iam.list_role_tags(RoleName=name)["Tags"]) == {STACK_TAG: s.prefix, ROLE_TAG: str(role)}
        assert iam.list_role_policies(RoleName=name)["PolicyNames"] == [names.policy_name(s.prefix, role)]
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        assert [x["RoleName"] for x in profile["Roles"]] == [name]
    app, web = policy(iam, s.prefix, Role.APP), policy(iam, s.prefix, Role.WEB)
    assert statement(app, "ReadModelArtifact")["Resource"] == [f"arn:aws:s3:::{model_bucket}/{k}"
                                                               for k in reversed(keys)]
    assert statement(app, "ListInputs") == {"Sid": "ListInputs", "Effect": "Allow", "Action": ["s3:ListBucket"],
                                            "Resource": [f"arn:aws:s3:::{s.in_bucket}"]}
    assert not any(model_bucket in json.dumps(st) for st in web["Statement"])
    lt_id = out["AppLaunchTemplateId"]
    template_arn = f"arn:aws:ec2:{s.region}:{account}:launch-template/{lt_id}"
    launch = statement(web, "LaunchAppTier")
    assert launch["Condition"] == {"ArnEquals": {"ec2:LaunchTemplate": template_arn}}
    assert f"arn:aws:ec2:{s.region}::image/{ami}" in launch["Resource"]
    assert statement(web, "ManageOwnInstances")["Condition"] == {
        "StringEquals": {f"aws:ResourceTag/{STACK_TAG}": s.prefix}}
    assert statement(web, "PassAppRole")["Resource"] == [f"arn:aws:iam::{account}:role/{s.prefix}-app-role"]

    # security groups: the web port from the allowed CIDR only, no SSH; the app tier no inbound; no balancer
    groups = {g["GroupName"]: g for g in ec2.describe_security_groups(
        Filters=[{"Name": f"tag:{STACK_TAG}", "Values": [s.prefix]}])["SecurityGroups"]}
    assert set(groups) == {f"{s.prefix}-web-sg", f"{s.prefix}-app-sg"}
    assert [(p["FromPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in groups[f"{s.prefix}-web-sg"]["IpPermissions"]] \
        == [(s.web_port, ["203.0.113.0/24"])]
    assert groups[f"{s.prefix}-app-sg"]["IpPermissions"] == []

    # the app tier's launch template: image, type, profile, group, IMDSv2, disk, tags, and exactly the user data
    # infra.userdata writes for these settings (the template's Fn::Sub resolved by CloudFormation)
    data = lt_data(ec2, names.launch_template_name(s))
    assert (data["ImageId"], data["InstanceType"]) == (ami, s.instance_type)
    assert data["IamInstanceProfile"]["Arn"].endswith(f"instance-profile/{s.prefix}-app-role")
    assert data["SecurityGroupIds"] == [groups[f"{s.prefix}-app-sg"]["GroupId"]]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == d.root_volume_gb
    assert all(tags(spec["Tags"]) == {STACK_TAG: s.prefix, ROLE_TAG: "app"} for spec in data["TagSpecifications"])
    inst = instance_settings(s, launch_template=names.launch_template_name(s), ami_id=ami).replace(model_uri=uri)
    app_script = template_user_data(ec2, names.launch_template_name(s))
    assert app_script == app_user_data(inst, Source(REPO, "v1.2"))
    subprocess.run(["bash", "-n"], input=app_script.encode(), check=True)
    assert f"fetch ${{IMGREC_MODEL_URI}} --sha256 {artifact}" in app_script
    env = env_from_script(app_script, ENV_FILE)
    assert env["IMGREC_MODEL_URI"] == uri and env["IMGREC_DATA_DIR"] == INSTANCE_DATA_DIR
    assert env["IMGREC_MODEL_DIR"] == ""  # nothing of the deploying machine's paths reaches an instance
    assert Settings.from_env(env) == inst.replace(launch_template="", runtime="onnx")

    # the web instances: an Auto Scaling group of one, named as the graders expect, with its own user data
    (web_inst,) = web_instances(ec2, s)
    assert tags(web_inst["Tags"])[NAME_TAG] == s.web_instance_name
    assert web_inst["InstanceType"] == d.web_instance_type and web_inst["ImageId"] == ami
    assert web_inst["IamInstanceProfile"]["Arn"].endswith(f"instance-profile/{s.prefix}-web-role")
    assert done.url == f"http://{web_inst['PublicIpAddress']}:{s.web_port}"
    web_script = template_user_data(ec2, names.web_launch_template_name(s.prefix))
    assert web_script == web_user_data(inst, Source(REPO, "v1.2"), instance_type="t3.small")
    assert "for unit in imgrec-web.service imgrec-controller.service" in web_script

    # the dashboard: every metric, scoped to this stack
    body = json.loads(clients.cloudwatch.get_dashboard(DashboardName=f"{s.prefix}-dashboard")["DashboardBody"])
    assert body == json.loads(json.dumps(dashboard_body(s, s.req_queue, s.dlq)).replace("{{AWS::Region}}", s.region))
    ours = {m[1] for w in body["widgets"] for m in w["properties"]["metrics"] if m[0] == s.metrics_namespace}
    assert ours == {str(m) for m in (*CONTROLLER_METRICS, *WORKER_METRICS)}
    after_first = snapshot(clients, elbv2)

    # a second deploy: an empty change set, nothing changes, the artifact is not uploaded again
    again = deploy(s, d, clients)
    assert again.plan.empty and again.plan.change_set_id is None
    assert "no changes" in again.plan.text() and [a for _, a in again.report.lines] == ["unchanged"] * 2
    assert snapshot(clients, elbv2) == after_first
    assert len(s3.list_object_versions(Bucket=model_bucket)["Versions"]) == 2

    # the controller's launch from the template inherits the stack tag; someone else's look-alike survives
    (launched,) = Ec2Actuator(ec2, s.replace(launch_template=names.launch_template_name(s))).launch(1)
    foreign = ec2.run_instances(ImageId=s.ami_id, MinCount=1, MaxCount=1, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": NAME_TAG, "Value": s.app_instance_name(99)}]}])["Instances"][0]
    s3.put_object(Bucket=s.in_bucket, Key="a.jpg", Body=b"x")
    wait_listed(ec2, [launched, foreign["InstanceId"]])  # launched a while before: EC2 lists them by now
    try:
        report = dict(destroy(s, clients).lines)
        assert report[f"web instance {web_inst['InstanceId']}"] == report[f"app instance {launched}"] == "terminated"
        assert report[f"stack {s.prefix}"] == "deleted" and report[f"bucket {s.in_bucket}"] == "deleted"
        after = snapshot(clients, elbv2)
        assert after["instances"] == sorted(before["instances"] + [foreign["InstanceId"]])
        assert after == {**before, "instances": after["instances"]}
        assert not destroy(s, clients).changed  # nothing left
    finally:
        ec2.terminate_instances(InstanceIds=[foreign["InstanceId"]])


def test_the_ami_path_boots_with_the_same_units_and_env_file_as_the_launch_template(settings, dsettings, clients,
                                                                                    artifact):
    """The controller without a launch template (``IMGREC_AMI_ID`` path) launches with the very boot
    script the stack put in the template: same unit files, same env file, byte for byte."""
    try:
        deploy(settings, dsettings, clients)
        lt_script = template_user_data(clients.ec2, names.launch_template_name(settings))
        web_script = template_user_data(clients.ec2, names.web_launch_template_name(settings.prefix))
        controller = Settings.from_env(env_from_script(web_script, ENV_FILE))  # what the controller runs with
        assert controller.launch_template == names.launch_template_name(settings)
        (iid,) = wait_listed(clients.ec2, Ec2Actuator(clients.ec2, controller.replace(launch_template="")).launch(1))
        attr = clients.ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
        import base64

        ami_script = base64.b64decode(attr["UserData"]["Value"]).decode()
        assert set(written_files(lt_script)) == {ENV_FILE, f"{UNIT_DIR}/imgrec-model.service",
                                                 f"{UNIT_DIR}/imgrec-worker.service"}
        assert written_files(ami_script) == written_files(lt_script)
        # the rest is the same too, but for where to install from (the AMI path needs a baked image)
        assert ami_script.replace("REPO_URL=''\nREPO_REF=''", f"REPO_URL='{REPO}'\nREPO_REF='v1.2'") == lt_script
    finally:
        destroy(settings, clients)


def test_web_instances_behind_a_load_balancer_then_back_to_one(settings, dsettings, clients, elbv2, artifact):
    s, d = settings.replace(request_timeout_s=300.0), dsettings.replace(web_instances=2, ssh_cidr="198.51.100.7/32")
    ec2 = clients.ec2
    before = settled_snapshot(clients, elbv2)
    try:
        done = deploy(s, d, clients)
        (lb,) = [x for x in elbv2.describe_load_balancers()["LoadBalancers"]
                 if tags(elbv2.describe_tags(ResourceArns=[x["LoadBalancerArn"]])["TagDescriptions"][0]["Tags"]).get(
                     STACK_TAG) == s.prefix]
        assert done.url == done.outputs["WebUrl"] == f"http://{lb['DNSName']}:{s.web_port}"
        assert lb["Scheme"] == "internet-facing" and lb["Type"] == "application"
        assert len({az["ZoneName"] for az in lb["AvailabilityZones"]}) >= 2
        attrs = {a["Key"]: a["Value"] for a in
                 elbv2.describe_load_balancer_attributes(LoadBalancerArn=lb["LoadBalancerArn"])["Attributes"]}
        assert int(attrs["idle_timeout.timeout_seconds"]) == idle_timeout_s(s) > s.request_timeout_s
        (listener,) = elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
        (tg,) = elbv2.describe_target_groups(TargetGroupArns=[listener["DefaultActions"][0]["TargetGroupArn"]])[
            "TargetGroups"]
        assert (tg["Protocol"], tg["Port"], tg["TargetType"], tg["HealthCheckPath"]) == ("HTTP", s.web_port, "instance",
                                                                                        "/healthz")
        (group,) = clients.autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[done.outputs["WebGroupName"]])["AutoScalingGroups"]
        assert group["TargetGroupARNs"] == [tg["TargetGroupArn"]] and group["DesiredCapacity"] == 2
        assert len(web_instances(ec2, s)) == 2
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
        assert deploy(s, d, clients).plan.empty

        # back to one web instance: the balancer goes, the web port opens to the CIDR again, the group shrinks
        one = deploy(s, d.replace(web_instances=1), clients)
        actions = {(c.action, c.logical_id) for c in one.plan.changes}
        assert {("Remove", "LoadBalancer"), ("Remove", "TargetGroup"), ("Remove", "Listener"),
                ("Add", "WebIngress"), ("Modify", "WebGroup")} <= actions
        assert "WebUrl" not in one.outputs and len(web_instances(ec2, s)) == 1
        assert not [x for x in elbv2.describe_load_balancers()["LoadBalancers"] if x["LoadBalancerArn"] == lb[
            "LoadBalancerArn"]]
        web_sg = ec2.describe_security_groups(GroupIds=[web_sg["GroupId"]])["SecurityGroups"][0]
        assert {(p["FromPort"], r["CidrIp"]) for p in web_sg["IpPermissions"] for r in p["IpRanges"]} \
            == {(s.web_port, "203.0.113.0/24"), (22, "198.51.100.7/32")}
        assert not any(p["UserIdGroupPairs"] for p in web_sg["IpPermissions"])  # the balancer's rule went
        deploy(s, d, clients)  # and out to two again, for destroy to remove
    finally:
        destroy(s, clients)
    assert snapshot(clients, elbv2) == before


def test_the_plan_says_what_is_replaced_before_anything_changes(settings, dsettings, clients, artifact):
    """A new dead-letter queue name replaces the queue (its name is create-only in AWS's schema); a new
    instance type only updates the launch template in place; the plan says so, and discarding it changes
    nothing."""
    try:
        deploy(settings, dsettings, clients)
        changed = settings.replace(dlq=f"{settings.prefix}-other-dlq", instance_type="c5.large")
        seen = []
        deploy(changed, dsettings, clients, approve=lambda text, p: seen.append(p) and False)  # declined: discarded
        (plan,) = seen
        by_id = {c.logical_id: c for c in plan.changes}
        assert by_id["DeadLetterQueue"].replacement == "True"
        assert by_id["AppLaunchTemplate"].replacement == "False"
        assert by_id["RequestQueue"].action == "Modify"  # its redrive names the new queue's ARN
        assert "REPLACED" in plan.text() and f"{len(plan.replacements)} replaced" in plan.text()
        assert deploy(settings, dsettings, clients).plan.empty
        # executed: the template gets a new version (CloudFormation leaves the default at 1, as AWS does), and
        # the controller, which launches $Latest, launches the new type from it
        bigger = settings.replace(instance_type="c5.large")
        done = deploy(bigger, dsettings, clients)
        assert [(c.logical_id, c.replacement) for c in done.plan.changes if c.logical_id == "AppLaunchTemplate"] \
            == [("AppLaunchTemplate", "False")]
        name = names.launch_template_name(settings)
        assert lt_data(clients.ec2, name)["InstanceType"] == "c5.large"
        assert lt_data(clients.ec2, name, "$Default")["InstanceType"] == "t3.micro"
        (iid,) = wait_listed(clients.ec2, Ec2Actuator(clients.ec2, bigger.replace(launch_template=name)).launch(1))
        launched = clients.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        assert launched["InstanceType"] == "c5.large"
    finally:
        destroy(settings, clients)


def test_gpu_app_instances_keep_the_torch_cuda_path_and_need_no_artifact(settings, dsettings, clients):
    gpu = settings.replace(instance_type="g4dn.xlarge")
    try:
        done = deploy(gpu, dsettings, clients)  # no artifact on disk: the torch runtime does not use one
        script = template_user_data(clients.ec2, names.launch_template_name(gpu))
        ami = latest_al2023(gpu)
        inst = instance_settings(gpu, launch_template=names.launch_template_name(gpu), ami_id=ami)
        # one script serves both runtimes: for torch it writes the model unit too, but never starts it
        unit = f"cat > {UNIT_DIR}/imgrec-model.service <<'IMGREC_EOF'\n{written_files(script)[f'{UNIT_DIR}/imgrec-model.service']}\nIMGREC_EOF\n"
        assert script.replace(unit, "") == app_user_data(inst.replace(runtime="torch"), Source(REPO, "v1.2"))
        env = env_from_script(script, ENV_FILE)
        assert env["IMGREC_RUNTIME"] == "torch" and env["IMGREC_MODEL_URI"] == ""
        assert "REQUIREMENTS='requirements/worker.txt requirements/model.txt requirements/torch.txt'" in script
        assert "for unit in imgrec-worker.service; do" in script
        assert done.report.lines == []  # nothing uploaded
    finally:
        destroy(gpu, clients)


def test_a_deploy_that_fails_midway_rolls_back_and_leaves_nothing(settings, dsettings, clients, elbv2, artifact,
                                                                   capsys):
    """A role of the stack's name exists already (not the stack's): CloudFormation fails on it after making
    the buckets, queues and table, rolls them back, and deploy reports the resource and AWS's reason. Deployed
    again at once, the rolled-back queues' names are not free yet (AWS keeps them 60 s; 4 s here): deploy
    waits, saying so, and succeeds."""
    iam = clients.iam
    taken = names.role_name(settings.prefix, Role.WEB)
    iam.create_role(RoleName=taken, AssumeRolePolicyDocument="{}")
    before = settled_snapshot(clients, elbv2)
    with strict_aws(settings, sqs_tombstone_s=4):
        _fail_then_deploy(settings, dsettings, clients, elbv2, before, taken)
    assert "a queue of that name was deleted less than 60 s ago" in capsys.readouterr().out
    assert snapshot(clients, elbv2) == {**before, "roles": sorted(set(before["roles"]) - {taken})}


def _fail_then_deploy(settings, dsettings, clients, elbv2, before, taken) -> None:
    iam = clients.iam
    try:
        with pytest.raises(changes.StackFailed) as failed:
            deploy(settings, dsettings, clients)
        assert failed.value.status == "ROLLBACK_COMPLETE"
        assert any(r.startswith("WebRole (AWS::IAM::Role) CREATE_FAILED: EntityAlreadyExists") and taken in r
                   for r in failed.value.reasons), failed.value.reasons
        after = snapshot(clients, elbv2)
        assert after == {**before, "stacks": after["stacks"]}  # every resource it made is gone
        assert settings.prefix in after["stacks"]  # the failed stack, ROLLBACK_COMPLETE, until deleted
        iam.delete_role(RoleName=taken)
        done = deploy(settings, dsettings, clients)  # the dead stack is deleted first, then all goes well
        assert done.plan.create
    finally:
        destroy(settings, clients)


def test_deploy_refuses_without_source_or_with_a_bad_artifact_and_leaves_nothing(settings, dsettings, clients, elbv2):
    before = settled_snapshot(clients, elbv2)
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


def test_a_bucket_another_account_owns_is_a_clear_error(settings, dsettings, clients, artifact):
    sts = make_client("sts", settings)
    creds = sts.assume_role(RoleArn="arn:aws:iam::111122223333:role/someone", RoleSessionName="someone")[
        "Credentials"]
    other = make_client("s3", settings, credentials={
        "aws_access_key_id": creds["AccessKeyId"], "aws_secret_access_key": creds["SecretAccessKey"],
        "aws_session_token": creds["SessionToken"]})
    other.create_bucket(Bucket=settings.in_bucket)
    try:
        with pytest.raises(DeployError, match=f"bucket {settings.in_bucket} belongs to another AWS account.*"
                                              "set IMGREC_PREFIX"):
            deploy(settings, dsettings, clients)
        assert changes.describe(clients.cloudformation, settings.prefix) is None
    finally:
        other.delete_bucket(Bucket=settings.in_bucket)


def make_stackless_deployment(settings, clients) -> None:
    """What the boto3 deployer left: the stack's names, each tagged, no stack (a subset is enough to find)."""
    tagged = [{"Key": STACK_TAG, "Value": settings.prefix}]
    iam, ec2 = clients.iam, clients.ec2
    for role in (Role.APP, Role.WEB):
        name = names.role_name(settings.prefix, role)
        iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}", Tags=tagged)
        iam.put_role_policy(RoleName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sqs:ListQueues", "Resource": "*"}]}))
        iam.create_instance_profile(InstanceProfileName=name)
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    ec2.create_security_group(GroupName=f"{settings.prefix}-web-sg", Description="legacy", TagSpecifications=[
        {"ResourceType": "security-group", "Tags": tagged}])
    ec2.create_launch_template(LaunchTemplateName=names.launch_template_name(settings),
                               LaunchTemplateData={"ImageId": settings.ami_id},
                               TagSpecifications=[{"ResourceType": "launch-template", "Tags": tagged}])
    ec2.run_instances(ImageId=settings.ami_id, MinCount=1, MaxCount=1, TagSpecifications=[{
        "ResourceType": "instance", "Tags": [*tagged, {"Key": ROLE_TAG, "Value": "web"}]}])
    clients.cloudwatch.put_dashboard(DashboardName=names.dashboard_name(settings.prefix), DashboardBody="{}")
    for bucket in (settings.in_bucket, f"{settings.prefix}-model-bucket"):
        clients.s3.create_bucket(Bucket=bucket)
        clients.s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tagged})
        clients.s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    clients.sqs.create_queue(QueueName=settings.req_queue, tags={STACK_TAG: settings.prefix})


def test_a_deployment_made_without_a_stack_is_found_by_deploy_and_removed_by_destroy(settings, dsettings, clients,
                                                                                   elbv2, artifact):
    before = settled_snapshot(clients, elbv2)
    make_stackless_deployment(settings, clients)
    with pytest.raises(DeployError, match=f"stack {settings.prefix} does not exist, but a deployment made without "
                                          "one does .*python -m infra destroy"):
        deploy(settings, dsettings, clients)
    report = dict(destroy(settings, clients).lines)
    assert report[f"bucket {settings.in_bucket}"] == "deleted (1 object versions)"
    assert report[f"role {settings.prefix}-web-role (and its instance profile)"] == "deleted"
    assert report[f"dashboard {settings.prefix}-dashboard"] == "deleted"
    assert snapshot(clients, elbv2) == before
    assert dict(destroy(settings, clients).lines) == {f"stack {settings.prefix}": "absent"}
