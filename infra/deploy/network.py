"""Security groups: the web port (and SSH only when asked) open to configured CIDRs; with a load
balancer, the web port only from the balancer's group and the balancer open to the CIDR; the app
tier accepts no inbound traffic at all, it only polls SQS and S3."""

from __future__ import annotations

import logging
from typing import NamedTuple

from botocore.exceptions import ClientError

from infra.config import Settings
from infra.deploy.compute import retry_while
from infra.deploy.errors import DeployError
from infra.deploy.settings import DeploySettings
from infra.report import Report
from infra.tags import ROLE_TAG, STACK_TAG, owned_by

log = logging.getLogger(__name__)

SSH_PORT = 22
DETACH_TIMEOUT_S = 300.0  # network interfaces of just-terminated instances take a while to go
DETACH_RETRY_S = 5.0


class Rule(NamedTuple):
    """One inbound TCP port from ``source``: a CIDR block or a security group id (``sg-...``)."""

    port: int
    source: str
    description: str

    @property
    def from_group(self) -> bool:
        return self.source.startswith("sg-")


def web_sg_name(settings: Settings) -> str:
    return f"{settings.prefix}-web-sg"


def app_sg_name(settings: Settings) -> str:
    return f"{settings.prefix}-app-sg"


def alb_sg_name(settings: Settings) -> str:
    return f"{settings.prefix}-alb-sg"


def web_rules(settings: Settings, dsettings: DeploySettings, alb_sg_id: str | None = None) -> list[Rule]:
    """The web port from the allowed CIDR, or only from the load balancer's group when there is one."""
    if alb_sg_id:
        rules = [Rule(settings.web_port, alb_sg_id, "imgrec web tier, from the load balancer only")]
    else:
        rules = [Rule(settings.web_port, dsettings.allowed_cidr, "imgrec web tier")]
    if dsettings.ssh_cidr:
        rules.append(Rule(SSH_PORT, dsettings.ssh_cidr, "imgrec ssh (IMGREC_SSH_CIDR)"))
    return rules


def alb_rules(settings: Settings, dsettings: DeploySettings) -> list[Rule]:
    return [Rule(settings.web_port, dsettings.allowed_cidr, "imgrec load balancer (IMGREC_ALLOWED_CIDR)")]


def default_vpc_id(ec2) -> str:
    try:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    except ClientError:
        log.error("describe_vpcs failed")
        raise
    if not vpcs:
        raise DeployError("this region has no default VPC; create one (`aws ec2 create-default-vpc`) and retry")
    return vpcs[0]["VpcId"]


def find_sg(ec2, name: str, vpc_id: str | None = None) -> dict | None:
    filters = [{"Name": "group-name", "Values": [name]}]
    if vpc_id:
        filters.append({"Name": "vpc-id", "Values": [vpc_id]})
    groups = ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
    return groups[0] if groups else None


def _rule_key(rule: dict) -> tuple[int, str] | None:
    """(port, source) of a single-port TCP ingress rule from describe_security_group_rules; None otherwise."""
    if rule.get("IsEgress") or rule.get("IpProtocol") != "tcp" or rule.get("FromPort") != rule.get("ToPort"):
        return None
    source = rule.get("CidrIpv4") or (rule.get("ReferencedGroupInfo") or {}).get("GroupId")
    return (rule["FromPort"], source) if source else None


def _ingress(ec2, group_id: str) -> list[dict]:
    rules = []
    for page in ec2.get_paginator("describe_security_group_rules").paginate(
            Filters=[{"Name": "group-id", "Values": [group_id]}]):
        rules.extend(r for r in page["SecurityGroupRules"] if not r.get("IsEgress"))
    return rules


def _permission(rule: Rule) -> dict:
    base = {"IpProtocol": "tcp", "FromPort": rule.port, "ToPort": rule.port}
    if rule.from_group:
        return {**base, "UserIdGroupPairs": [{"GroupId": rule.source, "Description": rule.description}]}
    return {**base, "IpRanges": [{"CidrIp": rule.source, "Description": rule.description}]}


def ensure_sg(ec2, settings: Settings, name: str, role: str, vpc_id: str, rules: list[Rule],
              report: Report) -> str:
    """Create or converge group ``name`` so its inbound rules are exactly ``rules``."""
    group = find_sg(ec2, name, vpc_id)
    if group is None:
        try:
            group_id = ec2.create_security_group(
                GroupName=name, Description=f"imgrec {role} tier of stack {settings.prefix}", VpcId=vpc_id,
                TagSpecifications=[{"ResourceType": "security-group", "Tags": [
                    {"Key": STACK_TAG, "Value": settings.prefix}, {"Key": ROLE_TAG, "Value": role},
                    {"Key": "Name", "Value": name}]}],
            )["GroupId"]
        except ClientError:
            log.error("create_security_group %s failed", name)
            raise
        group, action = {"GroupId": group_id}, "created"
    else:
        if not owned_by(group.get("Tags"), settings.prefix):
            raise DeployError(f"security group {name} ({group['GroupId']}) exists but is not ours; "
                              "pick another IMGREC_PREFIX or delete it")
        action = "unchanged"
    group_id = group["GroupId"]
    wanted = {(r.port, r.source): r for r in rules}
    have = _ingress(ec2, group_id) if action != "created" else []
    # Revoked by rule id: exact on AWS and in moto, whatever the rule's description or owner.
    unwanted = [r["SecurityGroupRuleId"] for r in have if _rule_key(r) not in wanted]
    if unwanted:
        ec2.revoke_security_group_ingress(GroupId=group_id, SecurityGroupRuleIds=unwanted)
        action = "updated rules" if action == "unchanged" else action
    present = {_rule_key(r) for r in have}
    missing = [r for key, r in wanted.items() if key not in present]
    if missing:
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[_permission(r) for r in missing])
        action = "updated rules" if action == "unchanged" else action
    report.add(f"security group {name} ({group_id})", action)
    return group_id


def delete_sg(ec2, settings: Settings, name: str, report: Report, *, timeout_s: float = DETACH_TIMEOUT_S,
              delay_s: float = DETACH_RETRY_S, report_absent: bool = True) -> None:
    """Delete group ``name`` if ours, retrying while the interfaces of just-terminated instances
    still hold it (no waiter shows them gone: moto, for one, keeps them forever)."""
    group = find_sg(ec2, name)
    if group is None:
        if report_absent:
            report.add(f"security group {name}", "absent")
        return
    if not owned_by(group.get("Tags"), settings.prefix):
        report.add(f"security group {name}", "kept (not ours)")
        return
    group_id = group["GroupId"]
    retry_while(lambda: ec2.delete_security_group(GroupId=group_id),
                lambda err: err.response["Error"]["Code"] == "DependencyViolation",
                f"delete_security_group {name} ({group_id})", timeout_s=timeout_s, delay_s=delay_s)
    report.add(f"security group {name} ({group_id})", "deleted")
