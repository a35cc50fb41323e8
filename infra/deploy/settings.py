"""Settings only `python -m infra deploy | destroy | bake` read: instance types, who may connect,
where instances install the project from, disks, the number of web instances.

Validated only by those commands, so a typo here (say in ``IMGREC_ALLOWED_CIDR``) never stops a
worker, the web tier or the controller. Same conventions as ``infra.config.Settings``: a named
default, an environment variable and a doc string per field; the README table lists them too.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from infra.cfn.template import (
    DEFAULT_BASE_IMAGE,
    KEY_NAME_PATTERN,
    MAX_WEB_INSTANCES,
    REPO_REF_PATTERN,
    REPO_URL_PATTERN,
)
from infra.config import INSTANCE_TYPE_RE, ConfigError, env_field, values_from_env

DEFAULT_WEB_INSTANCE_TYPE = "t3.small"
DEFAULT_WEB_INSTANCES = 1  # the course's graders require exactly one running `web-instance`
DEFAULT_ALLOWED_CIDR = "0.0.0.0/0"
DEFAULT_SSH_CIDR = ""  # empty: no SSH rule at all
DEFAULT_KEY_NAME = ""
DEFAULT_REPO_URL = ""
DEFAULT_REPO_REF = "main"
DEFAULT_ROOT_VOLUME_GB = 16
# The AMI deploy and bake use when IMGREC_AMI_ID is left at its (moto-only) default: AWS's public
# SSM parameter for the latest Amazon Linux 2023, as AWS CDK's MachineImage.latestAmazonLinux2023 does.
DEFAULT_AMI_PARAMETER = DEFAULT_BASE_IMAGE
DEPLOY_ONLY_NOTE = "deploy only: "

# These values are written into a shell script (user data): the template's own patterns.
REPO_URL_RE, REPO_REF_RE, KEY_NAME_RE = (re.compile(p) for p in (REPO_URL_PATTERN, REPO_REF_PATTERN, KEY_NAME_PATTERN))
SSM_PARAMETER_RE = re.compile(r"^/[A-Za-z0-9_./-]{1,2047}$")


@dataclass(frozen=True)
class DeploySettings:
    web_instance_type: str = env_field(
        "IMGREC_WEB_INSTANCE_TYPE", DEFAULT_WEB_INSTANCE_TYPE, "EC2 type of the web/controller instances")
    web_instances: int = env_field(
        "IMGREC_WEB_INSTANCES", DEFAULT_WEB_INSTANCES,
        "web instances; over 1 they sit behind an Application Load Balancer and only the first runs the controller")
    allowed_cidr: str = env_field(
        "IMGREC_ALLOWED_CIDR", DEFAULT_ALLOWED_CIDR, "who may reach the web port (CIDR; the load balancer's when N > 1)")
    ssh_cidr: str = env_field(
        "IMGREC_SSH_CIDR", DEFAULT_SSH_CIDR, "CIDR allowed SSH to the web instances; empty: no SSH")
    key_name: str = env_field("IMGREC_KEY_NAME", DEFAULT_KEY_NAME, "EC2 key pair for SSH; empty: none")
    repo_url: str = env_field(
        "IMGREC_REPO_URL", DEFAULT_REPO_URL, "git URL instances install the project from")
    repo_ref: str = env_field(
        "IMGREC_REPO_REF", DEFAULT_REPO_REF, "git branch, tag or commit to install")
    root_volume_gb: int = env_field(
        "IMGREC_ROOT_VOLUME_GB", DEFAULT_ROOT_VOLUME_GB, "root disk size of each instance (GiB)")
    ami_parameter: str = env_field(
        "IMGREC_AMI_PARAMETER", DEFAULT_AMI_PARAMETER,
        "SSM parameter naming the base AMI when IMGREC_AMI_ID is not set")

    def __post_init__(self) -> None:
        def fail(attr: str, why: str) -> None:
            var = {f.name: f.metadata["env"] for f in dataclasses.fields(self)}[attr]
            raise ConfigError(f"{var}={getattr(self, attr)!r}: {why}")

        if not INSTANCE_TYPE_RE.match(self.web_instance_type):
            fail("web_instance_type", "not an EC2 instance type like t3.small")
        if not 1 <= self.web_instances <= MAX_WEB_INSTANCES:
            fail("web_instances", f"must be between 1 and {MAX_WEB_INSTANCES}")
        for attr in ("allowed_cidr", "ssh_cidr"):
            value = getattr(self, attr)
            if attr == "ssh_cidr" and value == "":
                continue
            try:
                ipaddress.ip_network(value)
            except ValueError as err:
                fail(attr, f"not a CIDR block like 203.0.113.0/24 ({err})")
        if self.repo_url and not REPO_URL_RE.match(self.repo_url):
            fail("repo_url", "use an https://, ssh:// or git@ URL without spaces or quotes")
        if not REPO_REF_RE.match(self.repo_ref):
            fail("repo_ref", "use a branch, tag or commit (letters, digits, . _ / -)")
        if not KEY_NAME_RE.match(self.key_name):
            fail("key_name", "use letters, digits, . _ -")
        if not 8 <= self.root_volume_gb <= 1024:
            fail("root_volume_gb", "must be between 8 and 1024 GiB")
        if not SSM_PARAMETER_RE.match(self.ami_parameter):
            fail("ami_parameter", "not an SSM parameter name like /aws/service/...")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> DeploySettings:
        """Parse every field from ``env`` (default ``os.environ``); ``overrides`` win."""
        return cls(**{**values_from_env(cls, env), **overrides})

    def replace(self, **changes) -> DeploySettings:
        return dataclasses.replace(self, **changes)

    @property
    def load_balanced(self) -> bool:
        return self.web_instances > 1
