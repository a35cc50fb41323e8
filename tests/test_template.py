"""The stack's template, checked offline against AWS's own schemas: committed and current, clean under cfn-lint
(AWS's resource schemas, no rule ignored), every policy through parliament, and deployable by hand."""

from __future__ import annotations

import json
import warnings

import pytest
import yaml

from infra.cfn import names
from infra.cfn.template import COMMITTED, committed_text, parameters, render, to_json, to_yaml
from infra.clients import Clients
from infra.config import Settings
from infra.local.stack import provision_stack
from infra.tags import Role

TEMPLATE_BODY_LIMIT = 51_200  # bytes CloudFormation takes inline; above it, `aws cloudformation deploy` needs S3
# Which community-auditor notes parliament may make, and why our conditions make them acceptable:
NARROWED = {
    # RunInstances + PassRole could start an instance with a more privileged role. Here RunInstances needs the
    # stack's launch template (ec2:LaunchTemplate) and PassRole names only the app role, for EC2 only
    # (iam:PassedToService): the controller can start workers with the workers' role, and nothing else.
    ("web", "PRIVILEGE_ESCALATION", ("ec2:runinstances", "iam:passrole")),
    # PassRole as above; sqs:CreateQueue (a queue may carry a policy) only on <prefix>-reply-* names: each web
    # process makes its own reply queue and no other.
    ("web", "PERMISSIONS_MANAGEMENT_ACTIONS", ("iam:passrole", "sqs:createqueue")),
}
UNKNOWN_TO_PARLIAMENT: set[str] = set()  # actions parliament 1.6.4's list lacks (none today)


def test_the_committed_template_is_the_rendered_one():
    assert COMMITTED.read_text() == committed_text(), (
        "infra/cfn/imgrec.yaml is stale: regenerate it with `python -m infra.cfn.template --write`")
    assert yaml.safe_load(COMMITTED.read_text()) == render(Settings())


def test_it_can_be_deployed_by_hand_without_a_bucket_for_the_template():
    assert len(COMMITTED.read_bytes()) < TEMPLATE_BODY_LIMIT
    assert len(to_json(render(Settings(endpoint_url="http://127.0.0.1:4566")))) < TEMPLATE_BODY_LIMIT


def test_its_parameters_are_what_a_deployment_chooses():
    assert set(parameters(Settings())) == {
        "Prefix", "AppInstanceType", "WebInstanceType", "AppRuntime", "BaseImageId", "ImageId", "RootDeviceName",
        "RootVolumeGb", "ModelArtifactPrefix", "ModelArtifactSha256", "RepoUrl", "RepoRef", "WebInstances",
        "MinAppInstances", "MaxAppInstances", "AllowedCidr", "SshCidr", "KeyName", "VpcId", "SubnetIds"}
    template = render(Settings())
    assert set(template["Parameters"]) == set(parameters(Settings()))  # each is used
    assert {r: v["DeletionPolicy"] for r, v in template["Resources"].items() if v["DeletionPolicy"] != "Delete"} \
        == {"InputBucket": "RetainExceptOnCreate", "OutputBucket": "RetainExceptOnCreate"}
    assert set(template["Outputs"]) >= {"WebUrl", "DashboardUrl", "InputBucketName", "OutputBucketName",
                                        "ModelBucketName", "RequestQueueUrl", "ResponseQueueUrl",
                                        "AppLaunchTemplateId"}
    data = render(Settings(prefix="t1"), data_only=True)
    assert set(data["Resources"]) == {"InputBucket", "OutputBucket", "DeadLetterQueue", "RequestQueue",
                                      "ResponseQueue", "JobsTable"}
    assert set(data["Parameters"]) == {"Prefix"}


@pytest.mark.parametrize("variant", ["committed", "data part", "local stack", "settings changed"])
def test_cfn_lint_finds_nothing_with_every_rule_on(variant):
    """cfn-lint (AWS's resource schemas, IAM action lists) with its informational rules too: 0 matches."""
    from cfnlint.api import ManualArgs, lint

    text = {"committed": committed_text(),
            "data part": to_yaml(render(Settings(prefix="t1"), data_only=True)),
            "local stack": to_yaml(render(Settings(endpoint_url="http://127.0.0.1:4566", prefix="t1"))),
            "settings changed": to_yaml(render(Settings(visibility_timeout_s=90, web_port=80, instance_type="c5.large",
                                                        request_timeout_s=600)))}[variant]
    matches = lint(text, config=ManualArgs(regions=["us-east-1"], include_checks=["I"]))
    assert [f"{m.rule.id} {m.message} (line {m.linenumber})" for m in matches] == []


def test_cfn_lint_catches_what_moto_would_take(tmp_path):
    """The check can fail: an instance type that does not exist, a misspelt action, a queue attribute below
    its minimum are all accepted by moto and refused here."""
    from cfnlint.api import ManualArgs, lint

    template = json.loads(to_json(render(Settings())))
    resources = template["Resources"]
    resources["AppLaunchTemplate"]["Properties"]["LaunchTemplateData"]["InstanceType"] = "t3.mirco"
    resources["AppRolePolicy"]["Properties"]["PolicyDocument"]["Statement"][1]["Action"] = ["sqs:RecieveMessage"]
    resources["RequestQueue"]["Properties"]["MessageRetentionPeriod"] = 10
    rules = {m.rule.id for m in lint(json.dumps(template), config=ManualArgs(regions=["us-east-1"]))}
    assert {"E3628", "W3037", "E3034"} <= rules, rules  # instance type, IAM action, queue minimum


@pytest.fixture(scope="module")
def resolved_policies(moto_server, model_dir) -> dict[str, str]:
    """Each role's policy as the stack resolves it (parliament reads documents, not templates)."""
    settings = Settings.from_env({}, endpoint_url=moto_server.url, prefix="parl", model_dir=model_dir, max_attempts=3)
    clients = Clients(settings)
    provision_stack(settings, clients)
    out = {}
    for role in (Role.APP, Role.WEB):
        doc = clients.iam.get_role_policy(RoleName=names.role_name(settings.prefix, role),
                                          PolicyName=names.policy_name(settings.prefix, role))["PolicyDocument"]
        out[str(role)] = doc if isinstance(doc, str) else json.dumps(doc)
    return out


def test_every_policy_passes_parliament_but_for_the_notes_our_conditions_narrow(resolved_policies):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # parliament imports pkg_resources
        from parliament import analyze_policy_string

    found = set()
    for role, doc in resolved_policies.items():
        for finding in analyze_policy_string(doc, include_community_auditors=True).findings:
            if finding.issue == "UNKNOWN_ACTION":
                assert finding.location.get("unknown_action") in UNKNOWN_TO_PARLIAMENT, finding.location
                continue
            found.add((role, finding.issue, tuple(sorted(finding.location.get("actions", [])))))
    assert found <= NARROWED, found - NARROWED
    assert found == NARROWED  # each listed note still applies (else the list above is stale)
