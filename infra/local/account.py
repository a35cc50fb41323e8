"""The local account's own identities: what exists only because moto stands in for AWS.

`make run` calls ``open_account`` against its fresh, still permissive moto, then switches IAM
enforcement on (``IMGREC_LOCAL_IAM``, default on). It creates:

- ``<prefix>-local-admin``, an administrator user for tools outside the stack (the
  workload monitor, ``python -m infra status``, the AWS CLI, a grading script, and the
  local stack itself, which puts the stack up with these keys); its keys go to
  ``<data dir>/aws/credentials`` (profile ``default``) with ``<data dir>/aws/config``
  (region, endpoint_url) beside it;
- ``<prefix>@ec2.amazonaws.com``, the stand-in for the EC2 service: the only
  principal the stack's roles' trust policy (Service ec2.amazonaws.com) admits
  (``infra.local.moto_iam``); the credential server signs its AssumeRole calls with
  these keys, which are also written to ``<data dir>/aws/ec2-service`` (owner only)
  so that a process other than the stack's (the instance runner) can run one
  (``ec2_service_credentials``, ``CredentialServer.for_stack``).

The roles, instance profiles and the web instance come from the stack's template
(``infra.cfn``), as on AWS.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from infra.cfn import names
from infra.cfn.policies import POLICY_VERSION
from infra.clients import local_aws_files, make_client
from infra.config import Settings
from infra.local.moto_iam import service_user_name, set_enforcement
from infra.report import Report
from infra.tags import ROLE_TAG, STACK_TAG, Role

log = logging.getLogger(__name__)

# A permissive moto takes any keys; these create the identities before enforcement starts.
BOOTSTRAP_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
ADMIN_POLICY = {"Version": POLICY_VERSION, "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def admin_user_name(settings: Settings) -> str:
    return f"{settings.prefix}-local-admin"


@dataclass(frozen=True)
class LocalAccount:
    account: str
    admin: dict  # boto3 credential kwargs of the administrator
    ec2_service: dict  # boto3 credential kwargs of the EC2 stand-in (for the credential server)
    app_role: str  # the stack's roles, by name (the template makes them)
    web_role: str


def _ensure_user_with_key(iam, settings: Settings, name: str, policy: dict, report: Report) -> dict:
    """User ``name`` with one inline policy and exactly one fresh access key."""
    try:
        iam.get_user(UserName=name)
        report.add(f"iam user {name}", "unchanged")
    except ClientError as err:
        if err.response["Error"]["Code"] not in ("NoSuchEntity", "NoSuchEntityException"):
            log.error("get_user %s failed", name)
            raise
        iam.create_user(UserName=name, Tags=[{"Key": STACK_TAG, "Value": settings.prefix},
                                             {"Key": ROLE_TAG, "Value": Role.LOCAL}])
        report.add(f"iam user {name}", "created")
    iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(policy))
    for old in iam.list_access_keys(UserName=name)["AccessKeyMetadata"]:
        iam.delete_access_key(UserName=name, AccessKeyId=old["AccessKeyId"])
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}


def role_arn(account: str, role_name: str) -> str:
    return f"arn:aws:iam::{account}:role/{role_name}"  # moto serves the aws partition


def prepare_account(settings: Settings, *, credentials: dict | None = None) -> tuple[LocalAccount, Report]:
    """Create (or converge) the two local users and write their keys.

    Runs before enforcement (``credentials`` default: the bootstrap pair) or as an administrator.
    """
    credentials = credentials or BOOTSTRAP_CREDENTIALS
    iam = make_client("iam", settings, credentials=credentials)
    report = Report()
    try:
        account = make_client("sts", settings, credentials=credentials).get_caller_identity()["Account"]
    except ClientError:
        log.error("sts get_caller_identity against %s failed", settings.endpoint_url)
        raise
    app_role, web_role = names.role_name(settings.prefix, Role.APP), names.role_name(settings.prefix, Role.WEB)
    admin = _ensure_user_with_key(iam, settings, admin_user_name(settings), ADMIN_POLICY, report)
    assume = {"Version": POLICY_VERSION, "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRole",
        "Resource": [role_arn(account, app_role), role_arn(account, web_role)]}]}
    service = _ensure_user_with_key(iam, settings, service_user_name(settings.prefix), assume, report)
    write_admin_credentials(settings, admin, service)
    return LocalAccount(account, admin, service, app_role, web_role), report


def open_account(settings: Settings) -> tuple[LocalAccount, Report]:
    """``prepare_account`` on a fresh moto, then IAM enforcement on or off as ``IMGREC_LOCAL_IAM`` says."""
    account, report = prepare_account(settings)
    set_enforcement(settings.endpoint_url, settings.local_iam_enforced)
    report.add("moto IAM enforcement", "on" if settings.local_iam_enforced else "off (IMGREC_LOCAL_IAM=off)")
    return account, report


def _service_file(settings: Settings) -> Path:
    return local_aws_files(settings)[0].with_name("ec2-service")


def _write_keys(path: Path, header: str, keys: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{header}[default]\naws_access_key_id = {keys['aws_access_key_id']}\n"
                f"aws_secret_access_key = {keys['aws_secret_access_key']}\n")


def write_admin_credentials(settings: Settings, admin: dict, ec2_service: dict | None = None) -> None:
    """The admin's keys as the AWS CLI and boto3 read them (owner-only files)."""
    cred_file, config_file = local_aws_files(settings)
    header = (f"# imgrec local stack: {{who}} of the moto at {settings.endpoint_url}; valid while that stack runs.\n")
    _write_keys(cred_file, header.format(who=f"administrator {admin_user_name(settings)}"), admin)
    config_file.write_text(f"{header.format(who='settings')}[default]\nregion = {settings.region}\n"
                           f"endpoint_url = {settings.endpoint_url}\n")
    if ec2_service:
        _write_keys(_service_file(settings), header.format(who="the EC2 service stand-in (credential server)"),
                    ec2_service)
    log.info("administrator keys for %s written to %s", settings.endpoint_url, cred_file)


def ec2_service_credentials(settings: Settings) -> dict | None:
    """The EC2 stand-in's keys the running stack wrote (for a credential server in another process)."""
    parser = configparser.ConfigParser()
    try:
        parser.read_string(_service_file(settings).read_text())
        return {"aws_access_key_id": parser.get("default", "aws_access_key_id"),
                "aws_secret_access_key": parser.get("default", "aws_secret_access_key")}
    except (OSError, configparser.Error):
        return None


def remove_admin_credentials(settings: Settings) -> None:
    for path in (*local_aws_files(settings), _service_file(settings)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def profile_role(iam, profile_arn: str) -> str:
    """The role of instance profile ``profile_arn``: whose credentials an instance launched with it gets."""
    name = profile_arn.rsplit("/", 1)[-1]
    try:
        roles = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"]
    except ClientError:
        log.error("get_instance_profile %s failed", name)
        raise
    if not roles:
        raise LookupError(f"instance profile {name} has no role")
    return roles[0]["RoleName"]
