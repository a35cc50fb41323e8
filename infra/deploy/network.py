"""Security groups: the web port (and SSH only when asked) open to configured CIDRs;
the app tier accepts no inbound traffic at all, it only polls SQS and S3."""

from __future__ import annotations

import logging
import time
from typing import NamedTuple

from botocore.exceptions import ClientError

from infra.config import Settings
from infra.deploy.iam import DeployError
from infra.observe import ROLE_TAG, STACK_TAG
from infra.provision import Report

log = logging.getLogger(__name__)

SSH_PORT = 22
DELETE_RETRY_S = 120.0  # network interfaces of just-terminated instances take a while to go


class Rule(NamedTuple):
    port: int
    cidr: str
    description: str


def web_sg_name(settings: Settings) -> str:
    return f"{settings.prefix}-web-sg"


def app_sg_name(settings: Settings) -> str:
    return f"{settings.prefix}-app-sg"


def web_rules(settings: Settings) -> list[Rule]:
    rules = [Rule(settings.web_port, settings.allowed_cidr, "imgrec web tier")]
    if settings.ssh_cidr:
        rules.append(Rule(SSH_PORT, settings.ssh_cidr, "imgrec ssh (IMGREC_SSH_CIDR)"))
    return rules


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


def _current_rules(group: dict) -> set[tuple[int, str]]:
    """(port, cidr) of single-port TCP rules; anything else is revoked by ``_unwanted``."""
    out = set()
    for perm in group.get("IpPermissions", []):
        if perm.get("IpProtocol") == "tcp" and perm.get("ToPort") == perm.get("FromPort"):
            out.update((perm["FromPort"], rng["CidrIp"]) for rng in perm.get("IpRanges", []))
    return out


def _unwanted(group: dict, wanted: set[tuple[int, str]]) -> list[dict]:
    """Inbound permissions to revoke: every IPv4 range not wanted, and any IPv6 or group rule."""
    out = []
    for perm in group.get("IpPermissions", []):
        base = {k: perm[k] for k in ("IpProtocol", "FromPort", "ToPort") if k in perm}
        ranges = [r for r in perm.get("IpRanges", []) if (perm.get("FromPort"), r["CidrIp"]) not in wanted
                  or perm.get("IpProtocol") != "tcp" or perm.get("ToPort") != perm.get("FromPort")]
        if ranges:
            out.append({**base, "IpRanges": [{"CidrIp": r["CidrIp"]} for r in ranges]})
        if perm.get("Ipv6Ranges"):
            out.append({**base, "Ipv6Ranges": [{"CidrIpv6": r["CidrIpv6"]} for r in perm["Ipv6Ranges"]]})
        if perm.get("UserIdGroupPairs"):
            out.append({**base, "UserIdGroupPairs": [{"GroupId": g["GroupId"]} for g in perm["UserIdGroupPairs"]]})
    return out


def _permission(rule: Rule) -> dict:
    return {"IpProtocol": "tcp", "FromPort": rule.port, "ToPort": rule.port,
            "IpRanges": [{"CidrIp": rule.cidr, "Description": rule.description}]}


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
        group, action = {"GroupId": group_id, "IpPermissions": []}, "created"
    else:
        tags = {t["Key"]: t["Value"] for t in group.get("Tags", [])}
        if tags.get(STACK_TAG) != settings.prefix:
            raise DeployError(f"security group {name} ({group['GroupId']}) exists but is not ours; "
                              "pick another IMGREC_PREFIX or delete it")
        action = "unchanged"
    group_id = group["GroupId"]
    wanted = {(r.port, r.cidr): r for r in rules}
    extra = _unwanted(group, set(wanted))
    if extra:
        ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=extra)
        action = "updated rules" if action == "unchanged" else action
    missing = [r for key, r in wanted.items() if key not in _current_rules(group)]
    if missing:
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[_permission(r) for r in missing])
        action = "updated rules" if action == "unchanged" else action
    report.add(f"security group {name} ({group_id})", action)
    return group_id


def delete_sg(ec2, settings: Settings, name: str, report: Report, retry_s: float = DELETE_RETRY_S) -> None:
    group = find_sg(ec2, name)
    if group is None:
        report.add(f"security group {name}", "absent")
        return
    if {t["Key"]: t["Value"] for t in group.get("Tags", [])}.get(STACK_TAG) != settings.prefix:
        report.add(f"security group {name}", "kept (not ours)")
        return
    deadline = time.monotonic() + retry_s
    while True:
        try:
            ec2.delete_security_group(GroupId=group["GroupId"])
            break
        except ClientError as err:
            if err.response["Error"]["Code"] != "DependencyViolation" or time.monotonic() > deadline:
                log.error("delete_security_group %s (%s) failed", name, group["GroupId"])
                raise
            log.info("security group %s still in use; retrying", group["GroupId"])
            time.sleep(5)
    report.add(f"security group {name} ({group['GroupId']})", "deleted")
