"""An Application Load Balancer in front of the web instances when ``IMGREC_WEB_INSTANCES`` > 1:
the balancer, one target group (health check ``GET /healthz``) and one HTTP listener on the web port.

Its idle timeout outlasts the longest synchronous wait (``IMGREC_REQUEST_TIMEOUT``), so the
balancer never cuts a ``POST /`` that is still waiting for its label. Everything carries the
stack tag; ``delete_alb`` removes only what has it.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass

from botocore.exceptions import ClientError

from infra.config import Settings
from infra.deploy.compute import wait
from infra.deploy.errors import DeployError
from infra.report import Report
from infra.tags import ROLE_TAG, STACK_TAG, owned_by

log = logging.getLogger(__name__)

ALB_ROLE = "alb"
HEALTH_PATH = "/healthz"
IDLE_MARGIN_S = 30  # on top of the request timeout: the 504 reaches the client before the balancer gives up
MAX_IDLE_TIMEOUT_S = 4000  # AWS's limit for an ALB
ELB_NAME_LIMIT = 32
HEALTH_CHECK = {"HealthCheckProtocol": "HTTP", "HealthCheckPath": HEALTH_PATH, "HealthCheckIntervalSeconds": 15,
                "HealthCheckTimeoutSeconds": 5, "HealthyThresholdCount": 2, "UnhealthyThresholdCount": 3,
                "Matcher": {"HttpCode": "200"}}
ALB_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Alb:
    arn: str
    dns_name: str
    target_group_arn: str


def _short_name(prefix: str, suffix: str) -> str:
    """ELB names: at most 32 characters; a long prefix is cut and made unique with a hash of it."""
    room = ELB_NAME_LIMIT - len(suffix) - 1
    if len(prefix) > room:
        prefix = f"{prefix[:room - 5]}-{hashlib.sha1(prefix.encode()).hexdigest()[:4]}"
    return f"{prefix}-{suffix}"


def alb_name(settings: Settings) -> str:
    return _short_name(settings.prefix, "alb")


def target_group_name(settings: Settings) -> str:
    return _short_name(settings.prefix, "web-tg")


def idle_timeout_s(settings: Settings) -> int:
    """Above the longest synchronous wait; refused if AWS's limit cannot hold it."""
    wanted = math.ceil(settings.request_timeout_s) + IDLE_MARGIN_S
    if wanted > MAX_IDLE_TIMEOUT_S:
        raise DeployError(f"IMGREC_REQUEST_TIMEOUT={settings.request_timeout_s} needs a load-balancer idle timeout of "
                          f"{wanted} s; an ALB allows at most {MAX_IDLE_TIMEOUT_S} s")
    return wanted


def _tags(settings: Settings) -> list[dict]:
    return [{"Key": STACK_TAG, "Value": settings.prefix}, {"Key": ROLE_TAG, "Value": ALB_ROLE}]


def _is_ours(elb, arn: str, settings: Settings) -> bool:
    desc = elb.describe_tags(ResourceArns=[arn])["TagDescriptions"]
    return bool(desc) and owned_by(desc[0].get("Tags"), settings.prefix)


def _find(call, key: str, missing_code: str, **kwargs) -> dict | None:
    try:
        found = call(**kwargs)[key]
    except ClientError as err:
        if err.response["Error"]["Code"] == missing_code:
            return None
        raise
    return found[0] if found else None


def find_alb(elb, settings: Settings) -> dict | None:
    return _find(elb.describe_load_balancers, "LoadBalancers", "LoadBalancerNotFound", Names=[alb_name(settings)])


def find_target_group(elb, settings: Settings) -> dict | None:
    return _find(elb.describe_target_groups, "TargetGroups", "TargetGroupNotFound",
                 Names=[target_group_name(settings)])


def public_subnets(ec2, vpc_id: str) -> list[str]:
    """One default subnet per availability zone (an ALB needs at least two zones)."""
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                            {"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    by_zone = {}
    for s in sorted(subnets, key=lambda s: s["AvailabilityZone"]):
        by_zone.setdefault(s["AvailabilityZone"], s["SubnetId"])
    if len(by_zone) < 2:
        raise DeployError(f"the default VPC {vpc_id} has default subnets in {len(by_zone)} availability zone(s); "
                          "a load balancer needs two")
    return list(by_zone.values())


def _ensure_balancer(elb, ec2, settings: Settings, vpc_id: str, sg_id: str, report: Report, poll_s: float) -> dict:
    name = alb_name(settings)
    lb = find_alb(elb, settings)
    if lb is None:
        try:
            lb = elb.create_load_balancer(Name=name, Subnets=public_subnets(ec2, vpc_id), SecurityGroups=[sg_id],
                                          Scheme="internet-facing", Type="application", IpAddressType="ipv4",
                                          Tags=_tags(settings))["LoadBalancers"][0]
        except ClientError:
            log.error("create_load_balancer %s failed", name)
            raise
        action = "created"
    elif not _is_ours(elb, lb["LoadBalancerArn"], settings):
        raise DeployError(f"load balancer {name} exists but is not ours; pick another IMGREC_PREFIX or delete it")
    elif lb.get("SecurityGroups") != [sg_id]:
        elb.set_security_groups(LoadBalancerArn=lb["LoadBalancerArn"], SecurityGroups=[sg_id])
        action = "security group updated"
    else:
        action = "unchanged"
    wait(elb.get_waiter("load_balancer_available"), f"load balancer {name} to become active", ALB_TIMEOUT_S, poll_s,
         LoadBalancerArns=[lb["LoadBalancerArn"]])
    idle = str(idle_timeout_s(settings))
    attrs = {a["Key"]: a["Value"] for a in
             elb.describe_load_balancer_attributes(LoadBalancerArn=lb["LoadBalancerArn"])["Attributes"]}
    if attrs.get("idle_timeout.timeout_seconds") != idle:
        elb.modify_load_balancer_attributes(LoadBalancerArn=lb["LoadBalancerArn"],
                                            Attributes=[{"Key": "idle_timeout.timeout_seconds", "Value": idle}])
        action = "idle timeout set" if action == "unchanged" else action
    report.add(f"load balancer {name} (idle timeout {idle} s)", action)
    return lb


def _ensure_target_group(elb, settings: Settings, vpc_id: str, report: Report) -> str:
    name = target_group_name(settings)
    tg = find_target_group(elb, settings)
    if tg is None:
        try:
            tg = elb.create_target_group(Name=name, Protocol="HTTP", Port=settings.web_port, VpcId=vpc_id,
                                         TargetType="instance", Tags=_tags(settings), **HEALTH_CHECK)["TargetGroups"][0]
        except ClientError:
            log.error("create_target_group %s failed", name)
            raise
        report.add(f"target group {name} (health check {HEALTH_PATH})", "created")
        return tg["TargetGroupArn"]
    if not _is_ours(elb, tg["TargetGroupArn"], settings):
        raise DeployError(f"target group {name} exists but is not ours; pick another IMGREC_PREFIX or delete it")
    if tg.get("Port") != settings.web_port:
        raise DeployError(f"target group {name} forwards to port {tg.get('Port')}, not IMGREC_WEB_PORT="
                          f"{settings.web_port}: destroy and deploy to change the web port")
    if any(tg.get(k) != v for k, v in HEALTH_CHECK.items()):
        elb.modify_target_group(TargetGroupArn=tg["TargetGroupArn"], **HEALTH_CHECK)
        report.add(f"target group {name} (health check {HEALTH_PATH})", "health check updated")
    else:
        report.add(f"target group {name} (health check {HEALTH_PATH})", "unchanged")
    return tg["TargetGroupArn"]


def _ensure_listener(elb, settings: Settings, lb_arn: str, tg_arn: str, report: Report) -> None:
    forward = [{"Type": "forward", "TargetGroupArn": tg_arn}]
    listeners = elb.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]
    keep = [x for x in listeners if x["Port"] == settings.web_port and x["Protocol"] == "HTTP"
            and [(a["Type"], a.get("TargetGroupArn")) for a in x["DefaultActions"]] == [("forward", tg_arn)]]
    for stale in listeners:
        if stale not in keep:
            elb.delete_listener(ListenerArn=stale["ListenerArn"])
            report.add(f"listener :{stale['Port']}", "deleted")
    if keep:
        report.add(f"listener HTTP :{settings.web_port} -> target group", "unchanged")
        return
    elb.create_listener(LoadBalancerArn=lb_arn, Protocol="HTTP", Port=settings.web_port, DefaultActions=forward,
                        Tags=_tags(settings))
    report.add(f"listener HTTP :{settings.web_port} -> target group", "created")


def ensure_alb(elb, ec2, settings: Settings, *, vpc_id: str, sg_id: str, report: Report,
               poll_s: float = 15.0) -> Alb:
    """Create or converge the balancer, its target group and listener."""
    lb = _ensure_balancer(elb, ec2, settings, vpc_id, sg_id, report, poll_s)
    tg_arn = _ensure_target_group(elb, settings, vpc_id, report)
    _ensure_listener(elb, settings, lb["LoadBalancerArn"], tg_arn, report)
    return Alb(lb["LoadBalancerArn"], lb["DNSName"], tg_arn)


def register_targets(elb, settings: Settings, tg_arn: str, instance_ids: list[str], report: Report) -> None:
    """Exactly ``instance_ids`` in the target group, on the web port."""
    have = {d["Target"]["Id"] for d in elb.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]}
    add = sorted(set(instance_ids) - have)
    drop = sorted(have - set(instance_ids))
    if add:
        elb.register_targets(TargetGroupArn=tg_arn, Targets=[{"Id": i, "Port": settings.web_port} for i in add])
    if drop:
        elb.deregister_targets(TargetGroupArn=tg_arn, Targets=[{"Id": i} for i in drop])
    what = f"targets {', '.join(sorted(instance_ids))}"
    report.add(what, "unchanged" if not add and not drop else f"registered {len(add)}, deregistered {len(drop)}")


def delete_alb(elb, settings: Settings, report: Report, *, timeout_s: float = ALB_TIMEOUT_S, poll_s: float = 15.0,
               report_absent: bool = True) -> None:
    """Delete the balancer (its listeners go with it), wait until it is gone, then the target group."""
    lb = find_alb(elb, settings)
    if lb is not None and _is_ours(elb, lb["LoadBalancerArn"], settings):
        elb.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
        wait(elb.get_waiter("load_balancers_deleted"), f"load balancer {alb_name(settings)} to be deleted",
             timeout_s, poll_s, LoadBalancerArns=[lb["LoadBalancerArn"]])
        report.add(f"load balancer {alb_name(settings)}", "deleted")
    elif lb is not None:
        report.add(f"load balancer {alb_name(settings)}", "kept (not ours)")
    elif report_absent:
        report.add(f"load balancer {alb_name(settings)}", "absent")
    tg = find_target_group(elb, settings)
    if tg is not None and _is_ours(elb, tg["TargetGroupArn"], settings):
        elb.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])
        report.add(f"target group {target_group_name(settings)}", "deleted")
    elif tg is not None:
        report.add(f"target group {target_group_name(settings)}", "kept (not ours)")
    elif report_absent:
        report.add(f"target group {target_group_name(settings)}", "absent")
