"""The stack's CloudFormation template, rendered from Python: the one definition of every resource, tag,
role and policy of a deployment, for real AWS and for the local stack on moto alike.

The tiers' settings (queue attributes, timeouts, metric namespace, ...) are rendered in; what a user picks
per deployment is a template parameter (``PARAMETERS``). While rendering, a parameter or resource that
decides a value stands in for it (``STAND_INS``, values ``Settings`` accepts) or is written ``{{Name}}``;
the last pass turns every such string into ``Fn::Sub`` (``Ref``/``Fn::GetAtt`` when it is nothing else).
``infra/cfn/imgrec.yaml`` is the template for the default settings, committed so that it can be read and
deployed by hand (``aws cloudformation deploy``, docs/DEPLOY.md); a test fails when it is stale.

    python -m infra.cfn.template [--data]   # print the template for the current settings (JSON)
    python -m infra.cfn.template --write    # rewrite infra/cfn/imgrec.yaml
"""

from __future__ import annotations

import functools
import json
import math
import re
import sys
from pathlib import Path

from infra.cfn import artifact, names
from infra.cfn.dashboard import dashboard_body
from infra.cfn.policies import EC2_TRUST_POLICY, app_policy, web_policy
from infra.config import ARTIFACT_MANIFEST_FILE, ARTIFACT_MODEL_FILE, PREFIX_RE, Settings
from infra.jobstore import table_spec
from infra.provision import ENCRYPTION, dlq_attributes, request_queue_attributes, response_queue_attributes
from infra.tags import NAME_TAG, Role, stack_tags
from infra.userdata import (
    ONNX_RUNTIME,
    PRELOAD_TORCH,
    TORCH_RUNTIME,
    Source,
    Unit,
    app_user_data,
    instance_settings,
    requirement_sets,
    units,
    web_user_data,
    worker_runtime,
)

COMMITTED = Path(__file__).with_name("imgrec.yaml")
DESCRIPTION = ("imgrec: elastic image recognition on S3, SQS, EC2 and DynamoDB (rendered by infra/cfn/template.py; "
               "deploy with `python -m infra deploy`, or by hand as docs/DEPLOY.md shows)")
DEFAULT_BASE_IMAGE = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
DEFAULT_ROOT_DEVICE = "/dev/xvda"
HEALTH_PATH = "/healthz"
IDLE_MARGIN_S = 30  # on top of the request timeout: the 504 reaches the client before the balancer gives up
MAX_IDLE_TIMEOUT_S = 4000  # AWS's limit for an ALB
WEB_BOOT_GRACE_S = 600
MAX_WEB_INSTANCES = 20  # an instance that installs the project needs minutes before its first health check
# Stand-ins that pass Settings' validation while rendering; each becomes a reference to the named value.
STAND_INS = {"cfnrefprefix": "Prefix", "cfnrefapptype.cfn": "AppInstanceType", "cfnrefami": "ImageIdValue",
             "cfnrefmodelbucket": "ModelBucket", "cfnrefmodelpath": "ModelArtifactPrefix",
             "cfnrefmodelsha": "ModelArtifactSha256", "cfnrefrepourl": "RepoUrl", "cfnrefreporef": "RepoRef"}
# Fn::Sub variables (``variables()``): values a condition chooses.
VARIABLE_NAMES = frozenset({"ImageIdValue", "AppModelUri", "AppServices", "AppWorkerNeeds", "AppRequirements",
                            "AppPreload"})
REFERENCE = re.compile(r"\{\{([A-Za-z0-9:.]+)\}\}")
# Values user data takes literally: no quotes, spaces or `$` (deploy's settings check the same patterns).
REPO_URL_PATTERN = r"^((https://|ssh://|git@|file:///)[A-Za-z0-9._~:/@%+=-]+)?$"
REPO_REF_PATTERN = r"^[A-Za-z0-9._/-]{1,100}$"
KEY_NAME_PATTERN = r"^[A-Za-z0-9._-]{0,255}$"


class TemplateError(ValueError):
    """The settings cannot be rendered into a valid stack (say an idle timeout above an ALB's limit)."""


def _parameter(kind: str, description: str, default=None, **extra) -> dict:
    out = {"Type": kind, "Description": description, **extra}
    if default is not None:
        out["Default"] = default
    return out


def parameters(settings: Settings) -> dict:
    """What a user chooses per deployment; the defaults are the settings' own (``Settings()``'s when committed)."""
    return {
        "Prefix": _parameter("String", "names every resource (the course's names: <prefix>-in-bucket, ...)",
                             settings.prefix, AllowedPattern=PREFIX_RE.pattern, MaxLength=40),
        "AppInstanceType": _parameter("String", "EC2 type of the app-tier instances", settings.instance_type),
        "AppRuntime": _parameter("String", "worker runtime: onnx (a model artifact) or torch (GPU types; PyPI's "
                                 "CUDA build)", ONNX_RUNTIME, AllowedValues=[ONNX_RUNTIME, TORCH_RUNTIME]),
        "WebInstanceType": _parameter("String", "EC2 type of the web/controller instances", "t3.small"),
        # A String: conditions compare it with "1" (moto hands Number parameters to conditions as numbers).
        "WebInstances": _parameter("String", "web instances; over 1 they sit behind an Application Load Balancer",
                                   "1", AllowedValues=[str(n) for n in range(1, MAX_WEB_INSTANCES + 1)]),
        "MinAppInstances": _parameter("Number", "fewest app-tier instances", settings.min_instances,
                                      MinValue=0, MaxValue=100),
        "MaxAppInstances": _parameter("Number", "most app-tier instances", settings.max_instances,
                                      MinValue=1, MaxValue=100),
        "BaseImageId": _parameter("AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
                                  "SSM parameter of the base image (the latest Amazon Linux 2023)", DEFAULT_BASE_IMAGE),
        "ImageId": _parameter("String", "an image id to use instead of the base image (one `python -m infra bake` "
                              "made); empty: the base image", "", AllowedPattern=r"^(ami-[0-9a-f]{8,17})?$"),
        "RootDeviceName": _parameter("String", "the image's root device", DEFAULT_ROOT_DEVICE,
                                     AllowedPattern=r"^/dev/[a-z0-9]+$"),
        "RootVolumeGb": _parameter("Number", "root disk of each instance (GiB)", 16, MinValue=8, MaxValue=1024),
        "ModelArtifactPrefix": _parameter("String", "key prefix of the model artifact in the model bucket",
                                          artifact.key_prefix(settings.model), AllowedPattern=r"^[A-Za-z0-9._/-]+$"),
        "ModelArtifactSha256": _parameter("String", "sha256 of the model artifact (its manifest's); empty for torch",
                                          "", AllowedPattern=r"^([0-9a-f]{64})?$"),
        "RepoUrl": _parameter("String", "git URL instances install the project from; empty: a baked image", "",
                              AllowedPattern=REPO_URL_PATTERN),
        "RepoRef": _parameter("String", "git branch, tag or commit to install", "main", AllowedPattern=REPO_REF_PATTERN),
        "AllowedCidr": _parameter("String", "who may reach the web port (the load balancer's with several)",
                                  "0.0.0.0/0", AllowedPattern=r"^[0-9./]+$"),
        "SshCidr": _parameter("String", "who may SSH to the web instances; empty: nobody", "",
                              AllowedPattern=r"^([0-9./]+)?$"),
        "KeyName": _parameter("String", "EC2 key pair for SSH; empty: none", "", AllowedPattern=KEY_NAME_PATTERN),
        "VpcId": _parameter("AWS::EC2::VPC::Id", "the VPC (deploy picks the default VPC)"),
        "SubnetIds": _parameter("List<AWS::EC2::Subnet::Id>", "public subnets in at least two zones for the web "
                                "instances and load balancer (deploy picks the default VPC's)"),
    }


def stack_parameters(settings: Settings, **values) -> dict[str, str]:
    """Every parameter's value for a deployment of ``settings``; ``values`` give the ones that are not
    settings (the image, the network, the artifact's checksum, the deploy-only choices)."""
    out = {"Prefix": settings.prefix, "AppInstanceType": settings.instance_type,
           "AppRuntime": worker_runtime(settings), "MinAppInstances": settings.min_instances,
           "MaxAppInstances": settings.max_instances, "ModelArtifactPrefix": artifact.key_prefix(settings.model),
           **values}
    unknown = set(out) - set(parameters(settings))
    if unknown:
        raise TemplateError(f"not parameters of the template: {sorted(unknown)}")
    return {k: ",".join(v) if isinstance(v, list | tuple) else str(v) for k, v in out.items()}


CONDITIONS = {
    "UseImageId": {"Fn::Not": [{"Fn::Equals": [{"Ref": "ImageId"}, ""]}]},
    "LoadBalanced": {"Fn::Not": [{"Fn::Equals": [{"Ref": "WebInstances"}, "1"]}]},
    "NotLoadBalanced": {"Fn::Equals": [{"Ref": "WebInstances"}, "1"]},
    "TorchRuntime": {"Fn::Equals": [{"Ref": "AppRuntime"}, TORCH_RUNTIME]},
    "HasSsh": {"Fn::Not": [{"Fn::Equals": [{"Ref": "SshCidr"}, ""]}]},
    "HasKeyName": {"Fn::Not": [{"Fn::Equals": [{"Ref": "KeyName"}, ""]}]},
}


def idle_timeout_s(settings: Settings) -> int:
    """The balancer's idle timeout: above the longest synchronous wait, so it never cuts a waiting `POST /`."""
    wanted = math.ceil(settings.request_timeout_s) + IDLE_MARGIN_S
    if wanted > MAX_IDLE_TIMEOUT_S:
        raise TemplateError(f"IMGREC_REQUEST_TIMEOUT={settings.request_timeout_s} needs a load-balancer idle timeout "
                            f"of {wanted} s; an ALB allows at most {MAX_IDLE_TIMEOUT_S} s")
    return wanted


# ---------------------------------------------------------------- resources

def _resource(kind: str, properties: dict, *, deletion: str = "Delete", condition: str | None = None, **extra) -> dict:
    """Every resource states its DeletionPolicy (and UpdateReplacePolicy where data lives)."""
    out = {"Type": kind, "DeletionPolicy": deletion, "UpdateReplacePolicy": "Delete" if deletion == "Delete" else "Retain",
           **extra, "Properties": properties}
    if condition:
        out["Condition"] = condition
    return out


def _queue(name: str, attributes: dict[str, str], prefix: str) -> dict:
    props = {"QueueName": name, "Tags": stack_tags(prefix, Role.DATA)}
    for key, value in attributes.items():
        if key == "RedrivePolicy":
            redrive = json.loads(value)
            props[key] = {"deadLetterTargetArn": "{{DeadLetterQueue.Arn}}",
                          "maxReceiveCount": int(redrive["maxReceiveCount"])}
        elif key in ENCRYPTION:
            props[key] = value == "true"
        else:
            props[key] = int(value)
    return _resource("AWS::SQS::Queue", props)


def _bucket(name: str | None, prefix: str, *, versioned: bool, keep: bool) -> dict:
    props = {"PublicAccessBlockConfiguration": {k: True for k in ("BlockPublicAcls", "BlockPublicPolicy",
                                                                  "IgnorePublicAcls", "RestrictPublicBuckets")},
             "BucketEncryption": {"ServerSideEncryptionConfiguration": [
                 {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}]},
             "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
             "Tags": stack_tags(prefix, Role.DATA)}
    if name:
        props["BucketName"] = name
    if versioned:
        props["VersioningConfiguration"] = {"Status": "Enabled"}
    # The images and results outlive a stack deleted by hand; a create that rolls back leaves nothing.
    return _resource("AWS::S3::Bucket", props, deletion="RetainExceptOnCreate" if keep else "Delete")


def data_resources(s: Settings) -> dict:
    """Buckets, queues and the job table: what every tier reads and writes (`python -m infra provision`
    and the test suite's fixtures create this part alone)."""
    table = table_spec(s.jobs_table, {})
    table["Tags"] = stack_tags(s.prefix, Role.DATA)
    table["PointInTimeRecoverySpecification"] = {"PointInTimeRecoveryEnabled": False}
    return {
        "InputBucket": _bucket(s.in_bucket, s.prefix, versioned=True, keep=True),
        "OutputBucket": _bucket(s.out_bucket, s.prefix, versioned=False, keep=True),
        "DeadLetterQueue": _queue(s.dlq, dlq_attributes(s), s.prefix),
        "RequestQueue": _queue(s.req_queue, request_queue_attributes(s, "dlq"), s.prefix),
        "ResponseQueue": _queue(s.resp_queue, response_queue_attributes(s), s.prefix),
        "JobsTable": _resource("AWS::DynamoDB::Table", table),
    }


def _role(s: Settings, role: Role, policy: dict) -> dict[str, dict]:
    title = role.value.capitalize()
    return {
        f"{title}Role": _resource("AWS::IAM::Role", {
            "RoleName": names.role_name(s.prefix, role), "AssumeRolePolicyDocument": EC2_TRUST_POLICY,
            "Description": f"imgrec {role} instances of stack {s.prefix}", "Tags": stack_tags(s.prefix, role)}),
        # A policy resource of its own: CloudFormation updates it in place when the document changes.
        f"{title}RolePolicy": _resource("AWS::IAM::Policy", {
            "PolicyName": names.policy_name(s.prefix, role), "PolicyDocument": policy,
            "Roles": [{"Ref": f"{title}Role"}]}),
        f"{title}InstanceProfile": _resource("AWS::IAM::InstanceProfile", {
            "InstanceProfileName": names.role_name(s.prefix, role), "Roles": [{"Ref": f"{title}Role"}]}),
    }


def _group(s: Settings, role: Role, description: str, ingress: list) -> dict:
    props = {"GroupName": names.security_group_name(s.prefix, role), "GroupDescription": description,
             "VpcId": {"Ref": "VpcId"}, "Tags": stack_tags(s.prefix, role, **{NAME_TAG: names.security_group_name(
                 s.prefix, role)})}
    if ingress:
        props["SecurityGroupIngress"] = ingress
    return _resource("AWS::EC2::SecurityGroup", props, condition="LoadBalanced" if role is Role.LOAD_BALANCER
                     else None)


def _tcp(port: int, description: str, **source) -> dict:
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "Description": description, **source}


def _ingress(port: int, description: str, condition: str, **source) -> dict:
    return _resource("AWS::EC2::SecurityGroupIngress", {"GroupId": "{{WebSecurityGroup.GroupId}}",
                                                        **_tcp(port, description, **source)}, condition=condition)


def _launch_template(s: Settings, role: Role, user_data, instance_type: dict, **extra) -> dict:
    title = role.value.capitalize()
    return _resource("AWS::EC2::LaunchTemplate", {
        "LaunchTemplateName": names.launch_template_name(s) if role is Role.APP else names.web_launch_template_name(
            s.prefix),
        "LaunchTemplateData": {
            "ImageId": "{{ImageIdValue}}", "InstanceType": instance_type,
            "IamInstanceProfile": {"Arn": f"{{{{{title}InstanceProfile.Arn}}}}"},
            "SecurityGroupIds": [f"{{{{{title}SecurityGroup.GroupId}}}}"],
            "UserData": {"Fn::Base64": user_data},
            "BlockDeviceMappings": [{"DeviceName": {"Ref": "RootDeviceName"}, "Ebs": {
                "VolumeSize": {"Ref": "RootVolumeGb"}, "VolumeType": "gp3", "Encrypted": True,
                "DeleteOnTermination": True}}],
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            "TagSpecifications": [{"ResourceType": kind, "Tags": stack_tags(s.prefix, role)}
                                  for kind in ("instance", "volume")],
            **extra},
        "TagSpecifications": [{"ResourceType": "launch-template", "Tags": stack_tags(s.prefix, role)}]})


def _runtime_choice(onnx: str, torch: str) -> dict:
    return {"Fn::If": ["TorchRuntime", torch, onnx]}


def _app_runtime_variables(onnx_settings: Settings, torch_settings: Settings) -> dict[str, tuple[str, str]]:
    """What the app tier's boot script says differently per runtime: {variable: (onnx text, torch text)},
    each as ``infra.userdata`` writes it for that runtime."""
    services = {r: " ".join(units(Role.APP, x)) for r, x in ((ONNX_RUNTIME, onnx_settings),
                                                              (TORCH_RUNTIME, torch_settings))}
    needs = "".join(f"{kind}={Unit.MODEL}\n" for kind in ("Requires", "After"))
    return {
        "AppServices": (services[ONNX_RUNTIME], services[TORCH_RUNTIME]),
        "AppWorkerNeeds": (needs, ""),
        "AppRequirements": tuple(" ".join(requirement_sets(Role.APP, r)) for r in (ONNX_RUNTIME, TORCH_RUNTIME)),
        "AppPreload": ("", PRELOAD_TORCH),
    }


def _swap(text: str, old: str, new: str) -> str:
    if old not in text:
        raise TemplateError(f"the boot script no longer contains {old!r}: update infra/cfn/template.py")
    return text.replace(old, new)


def _user_data(s: Settings) -> tuple[str, str]:
    """(the app tier's user data, the web instances' user data), with references to the parameters.

    One app script serves both runtimes: the few lines that differ are ``Fn::If`` variables."""
    inst = instance_settings(s.replace(instance_type="cfnrefapptype.cfn"), launch_template=names.launch_template_name(s),
                             ami_id="cfnrefami").replace(model_uri="s3://cfnrefmodelbucket/cfnrefmodelpath/cfnrefmodelsha/")
    source = Source("cfnrefrepourl", "cfnrefreporef")
    onnx, torch = inst.replace(runtime=ONNX_RUNTIME), inst.replace(runtime=TORCH_RUNTIME, model_uri="")
    env = {"IMGREC_MIN_INSTANCES": "{{MinAppInstances}}", "IMGREC_MAX_INSTANCES": "{{MaxAppInstances}}"}
    app = app_user_data(onnx, source, env={**env, "IMGREC_RUNTIME": "{{AppRuntime}}",
                                           "IMGREC_MODEL_URI": "{{AppModelUri}}"})
    variables = _app_runtime_variables(onnx, torch)
    app = _swap(app, f"for unit in {variables['AppServices'][0]};", "for unit in {{AppServices}};")
    app = _swap(app, f"services started: {variables['AppServices'][0]}", "services started: {{AppServices}}")
    app = _swap(app, variables["AppWorkerNeeds"][0], "{{AppWorkerNeeds}}")
    app = _swap(app, f"REQUIREMENTS='{variables['AppRequirements'][0]}'", "REQUIREMENTS='{{AppRequirements}}'")
    app = _swap(app, 'PRELOAD=""', 'PRELOAD="{{AppPreload}}"')
    web = web_user_data(onnx, source, instance_type="t3.small", env=env)
    return app, web


@functools.cache
def variables() -> dict:
    """``Fn::Sub`` variables: values chosen by a condition (the image, the app script's runtime lines)."""
    onnx = Settings(model_uri="s3://cfnrefmodelbucket/cfnrefmodelpath/cfnrefmodelsha/", runtime=ONNX_RUNTIME)
    out = {"ImageIdValue": {"Fn::If": ["UseImageId", {"Ref": "ImageId"}, {"Ref": "BaseImageId"}]},
           "AppModelUri": _runtime_choice("s3://{{ModelBucket}}/{{ModelArtifactPrefix}}/{{ModelArtifactSha256}}/",
                                          "")}
    out.update((k, _runtime_choice(*v)) for k, v in _app_runtime_variables(
        onnx, onnx.replace(runtime=TORCH_RUNTIME, model_uri="")).items())
    assert set(out) == VARIABLE_NAMES
    return {k: _resolve(v) for k, v in out.items()}


def control_resources(s: Settings) -> dict:
    """Roles, security groups, the launch templates, the web instances and their balancer, the dashboard."""
    artifact = [f"cfnrefmodelpath/cfnrefmodelsha/{name}" for name in (ARTIFACT_MODEL_FILE, ARTIFACT_MANIFEST_FILE)]
    app_data, web_data = _user_data(s)
    port = s.web_port
    health = {"HealthCheckProtocol": "HTTP", "HealthCheckPath": HEALTH_PATH, "HealthCheckIntervalSeconds": 15,
              "HealthCheckTimeoutSeconds": 5, "HealthyThresholdCount": 2, "UnhealthyThresholdCount": 3,
              "Matcher": {"HttpCode": "200"}}
    no_value = {"Ref": "AWS::NoValue"}
    return {
        # Private, encrypted, versioned; its name is CloudFormation's (unique: never another account's bucket).
        "ModelBucket": _bucket(None, s.prefix, versioned=True, keep=False),
        **_role(s, Role.APP, app_policy(s.prefix, s.metrics_namespace, tuple(artifact))),
        **_role(s, Role.WEB, web_policy(s.prefix, s.metrics_namespace)),
        "AppSecurityGroup": _group(s, Role.APP, "imgrec app tier: no inbound traffic, it polls SQS and S3", []),
        "LoadBalancerSecurityGroup": _group(s, Role.LOAD_BALANCER, "imgrec load balancer: the web port from "
                                            "AllowedCidr", [_tcp(port, "imgrec load balancer", CidrIp="{{AllowedCidr}}")]),
        "WebSecurityGroup": _group(s, Role.WEB, "imgrec web tier: the web port (from the load balancer only when "
                                   "there is one), SSH only from SshCidr", []),
        # One rule per resource: each exists exactly when its condition holds.
        "WebIngress": _ingress(port, "imgrec web tier", "NotLoadBalanced", CidrIp="{{AllowedCidr}}"),
        "WebIngressFromBalancer": _ingress(port, "imgrec web tier, from the load balancer", "LoadBalanced",
                                           SourceSecurityGroupId="{{LoadBalancerSecurityGroup.GroupId}}"),
        "WebIngressSsh": _ingress(22, "imgrec ssh", "HasSsh", CidrIp="{{SshCidr}}"),
        "AppLaunchTemplate": _launch_template(s, Role.APP, app_data, {"Ref": "AppInstanceType"}),
        "WebLaunchTemplate": _launch_template(s, Role.WEB, web_data, {"Ref": "WebInstanceType"},
                                              KeyName={"Fn::If": ["HasKeyName", {"Ref": "KeyName"}, no_value]}),
        # No fixed slots: an Auto Scaling group keeps WebInstances running (the controller's lease lets one act),
        # replaces a failed one and rolls them when their launch template changes.
        "WebGroup": _resource("AWS::AutoScaling::AutoScalingGroup", {
            "AutoScalingGroupName": names.web_group_name(s.prefix),
            "MinSize": "{{WebInstances}}", "MaxSize": "{{WebInstances}}", "DesiredCapacity": "{{WebInstances}}",
            "VPCZoneIdentifier": {"Ref": "SubnetIds"},
            "LaunchTemplate": {"LaunchTemplateId": {"Ref": "WebLaunchTemplate"},
                               "Version": "{{WebLaunchTemplate.LatestVersionNumber}}"},
            "TargetGroupARNs": {"Fn::If": ["LoadBalanced", [{"Ref": "TargetGroup"}], no_value]},
            "HealthCheckType": {"Fn::If": ["LoadBalanced", "ELB", "EC2"]},
            "HealthCheckGracePeriod": WEB_BOOT_GRACE_S,
            "Tags": [{**t, "PropagateAtLaunch": True}
                     for t in stack_tags(s.prefix, Role.WEB, **{NAME_TAG: s.web_instance_name})]},
            DependsOn=["WebRolePolicy"],
            UpdatePolicy={"AutoScalingRollingUpdate": {"MaxBatchSize": 1, "MinInstancesInService": 0}}),
        "LoadBalancer": _resource("AWS::ElasticLoadBalancingV2::LoadBalancer", {
            "Type": "application", "Scheme": "internet-facing", "IpAddressType": "ipv4",
            "Subnets": {"Ref": "SubnetIds"}, "SecurityGroups": ["{{LoadBalancerSecurityGroup.GroupId}}"],
            "LoadBalancerAttributes": [{"Key": "idle_timeout.timeout_seconds", "Value": str(idle_timeout_s(s))}],
            "Tags": stack_tags(s.prefix, Role.LOAD_BALANCER)}, condition="LoadBalanced"),
        "TargetGroup": _resource("AWS::ElasticLoadBalancingV2::TargetGroup", {
            "Protocol": "HTTP", "Port": port, "VpcId": {"Ref": "VpcId"}, "TargetType": "instance", **health,
            "Tags": stack_tags(s.prefix, Role.LOAD_BALANCER)}, condition="LoadBalanced"),
        "Listener": _resource("AWS::ElasticLoadBalancingV2::Listener", {
            "LoadBalancerArn": {"Ref": "LoadBalancer"}, "Protocol": "HTTP", "Port": port,
            "DefaultActions": [{"Type": "forward", "TargetGroupArn": {"Ref": "TargetGroup"}}]},
            condition="LoadBalanced"),
        "Dashboard": _resource("AWS::CloudWatch::Dashboard", {
            "DashboardName": names.dashboard_name(s.prefix),
            "DashboardBody": json.dumps(dashboard_body(s, s.req_queue, s.dlq), separators=(",", ":"))}),
    }


def outputs(resources: dict, s: Settings) -> dict:
    """What deploy prints and the local stack and tests read: each output of the resources rendered."""
    out = [
        ("InputBucketName", "InputBucket", "the input bucket", {"Ref": "InputBucket"}),
        ("OutputBucketName", "OutputBucket", "the output bucket", {"Ref": "OutputBucket"}),
        ("RequestQueueUrl", "RequestQueue", "the request queue", {"Ref": "RequestQueue"}),
        ("ResponseQueueUrl", "ResponseQueue", "the response queue", {"Ref": "ResponseQueue"}),
        ("DeadLetterQueueUrl", "DeadLetterQueue", "the dead-letter queue", {"Ref": "DeadLetterQueue"}),
        ("JobsTableName", "JobsTable", "the job table", {"Ref": "JobsTable"}),
        ("ModelBucketName", "ModelBucket", "where the model artifact goes", {"Ref": "ModelBucket"}),
        ("ModelArtifactUri", "ModelBucket", "the model artifact's location",
         "s3://{{ModelBucket}}/{{ModelArtifactPrefix}}/{{ModelArtifactSha256}}/"),
        ("AppLaunchTemplateId", "AppLaunchTemplate", "what the controller launches app instances from",
         {"Ref": "AppLaunchTemplate"}),
        ("WebGroupName", "WebGroup", "the web instances' Auto Scaling group", {"Ref": "WebGroup"}),
        ("WebUrl", "LoadBalancer", "the web tier, through the load balancer",
         f"http://{{{{LoadBalancer.DNSName}}}}:{s.web_port}"),
        ("DashboardUrl", "Dashboard", "the CloudWatch dashboard",
         "https://{{AWS::Region}}.console.aws.amazon.com/cloudwatch/home?region={{AWS::Region}}"
         "#dashboards:name={{Dashboard}}"),
    ]
    return {key: {"Description": text, "Value": value, **({"Condition": "LoadBalanced"} if key == "WebUrl" else {})}
            for key, needs, text, value in out if needs in resources}


# ---------------------------------------------------------------- the last pass

def _reference(text: str):
    """A string with stand-ins or ``{{Name}}`` references as ``Fn::Sub`` (``Ref``/``Fn::GetAtt`` if only one)."""
    for stand_in, name in STAND_INS.items():
        text = text.replace(stand_in, f"{{{{{name}}}}}")
    found = REFERENCE.findall(text)
    if not found:
        return text
    if text == f"{{{{{found[0]}}}}}" and found[0] not in VARIABLE_NAMES and "::" not in found[0]:
        name = found[0]
        return {"Fn::GetAtt": name.split(".", 1)} if "." in name else {"Ref": name}
    body = REFERENCE.sub(r"${\1}", text.replace("${", "${!"))
    chosen = {name: variables()[name] for name in dict.fromkeys(found) if name in VARIABLE_NAMES}
    return {"Fn::Sub": [body, chosen] if chosen else body}


def _resolve(value):
    if isinstance(value, str):
        return _reference(value)
    if isinstance(value, list):
        return [_resolve(v) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v) for k, v in value.items()}
    return value


def _referenced(template: dict) -> set[str]:
    text = json.dumps(template)
    return set(re.findall(r'"Ref": "([A-Za-z0-9]+)"', text)) | set(re.findall(r"\$\{([A-Za-z0-9]+)[.}]", text))


def render(settings: Settings, *, data_only: bool = False) -> dict:
    """The template for ``settings`` (the whole stack, or only its data part)."""
    s = settings.replace(prefix="cfnrefprefix")
    resources = data_resources(s) if data_only else {**data_resources(s), **control_resources(s)}
    body = _resolve({"Resources": resources, "Outputs": outputs(resources, s)})
    conditions = {} if data_only else CONDITIONS
    used = _referenced(body) | _referenced(conditions)
    template = {"AWSTemplateFormatVersion": "2010-09-09", "Description": DESCRIPTION,
                "Parameters": {k: v for k, v in parameters(settings).items() if k in used}}
    if conditions:
        template["Conditions"] = conditions
    template.update(body)
    leftover = re.findall(r"cfnref[a-z.]*|\{\{[^}]*\}\}", json.dumps(template))
    if leftover:
        raise TemplateError(f"unresolved references in the template: {sorted(set(leftover))}")
    return template


def to_json(template: dict) -> str:
    """Compact JSON: what the API calls send (a smaller body than YAML, parsed fast by CloudFormation and moto)."""
    return json.dumps(template, separators=(",", ":"))


def to_yaml(template: dict) -> str:
    """Readable YAML: scripts and documents as literal blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data) -> bool:  # CloudFormation rejects YAML aliases
            return True

    def text(dumper, value: str):
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    header = "# Rendered by `python -m infra.cfn.template --write` from infra/cfn/template.py: edit that, not this.\n"
    return header + yaml.dump(template, Dumper=Dumper, sort_keys=False, width=120, allow_unicode=True)


def committed_text() -> str:
    """What infra/cfn/imgrec.yaml must hold: the template of the default settings."""
    return to_yaml(render(Settings()))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--write" in args:
        COMMITTED.write_text(committed_text())
        print(f"wrote {COMMITTED}")
        return 0
    print(to_json(render(Settings.from_env(), data_only="--data" in args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
