"""moto 5.2's CloudFormation creates an Application Load Balancer without its ``LoadBalancerAttributes`` and
both the balancer and its target group without their ``Tags``. Corrected in our launcher.

AWS: "LoadBalancerAttributes: The load balancer attributes" and "Tags: The tags to assign to the load balancer"
(https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-elasticloadbalancingv2-loadbalancer.html).
The stack sets the balancer's idle timeout above the longest synchronous wait, so that it never cuts a
``POST /`` still waiting for its label; on plain moto that setting would silently not exist.
"""

from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)
_applied = False


def _created(original, *, attributes: bool):
    @functools.wraps(original)
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        from moto.elbv2.models import elbv2_backends

        made = original.__func__(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        properties = cloudformation_json.get("Properties", {})
        backend = elbv2_backends[account_id][region_name]
        if attributes and properties.get("LoadBalancerAttributes"):
            backend.modify_load_balancer_attributes(
                made.arn, {a["Key"]: str(a["Value"]) for a in properties["LoadBalancerAttributes"]})
        if properties.get("Tags"):
            backend.add_tags([made.arn], properties["Tags"])
        return made

    return classmethod(create_from_cloudformation_json)


def apply() -> None:
    global _applied
    if _applied:
        return
    from moto.elbv2.models import FakeLoadBalancer, FakeTargetGroup

    FakeLoadBalancer.create_from_cloudformation_json = _created(
        FakeLoadBalancer.__dict__["create_from_cloudformation_json"], attributes=True)
    FakeTargetGroup.create_from_cloudformation_json = _created(
        FakeTargetGroup.__dict__["create_from_cloudformation_json"], attributes=False)
    _applied = True
    log.debug("moto fix applied: CloudFormation load balancers get their attributes and tags")
