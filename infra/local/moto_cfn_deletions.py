"""moto 5.2's CloudFormation never deletes two kinds of resource it creates: an ELBv2 target group and an
``AWS::EC2::SecurityGroupIngress`` rule (neither model has a delete), so a stack deleted, or updated to drop
them, leaves the target group and the rule behind. Corrected in our launcher.

AWS: "If a resource has no DeletionPolicy attribute, AWS CloudFormation deletes the resource by default. Note
that this capability also applies to update operations that lead to resources being removed."
(https://docs.aws.amazon.com/cdk/api/v2/docs/aws-cdk-lib.CfnDeletionPolicy.html). The stack drops its load
balancer, target group and the web group's rule from the balancer when it goes back to one web instance.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)
_applied = False


def _delete_target_group(self, account_id: str, region_name: str) -> None:
    from moto.elbv2.models import elbv2_backends

    backend = elbv2_backends[account_id][region_name]
    if self.arn in backend.target_groups:
        backend.delete_target_group(self.arn)


def _revoke_ingress(self, account_id: str, region_name: str) -> None:
    """Drop exactly the rule this resource added (moto lets its source group go first, so match, not revoke)."""
    p = self.properties
    wanted = (str(p.get("IpProtocol")), int(p.get("FromPort")), int(p.get("ToPort")))
    source, cidr = p.get("SourceSecurityGroupId"), p.get("CidrIp")
    self.security_group.ingress_rules = [
        rule for rule in self.security_group.ingress_rules
        if (rule.ip_protocol, rule.from_port, rule.to_port) != wanted
        or (cidr and rule.ip_range.get("CidrIp") != cidr) or (source and rule.source_group.get("GroupId") != source)]


def apply() -> None:
    global _applied
    if _applied:
        return
    from moto.ec2.models.security_groups import SecurityGroupIngress
    from moto.elbv2.models import FakeTargetGroup

    FakeTargetGroup.delete = _delete_target_group
    SecurityGroupIngress.delete = _revoke_ingress
    _applied = True
    log.debug("moto fix applied: CloudFormation deletes target groups and security-group ingress rules")
