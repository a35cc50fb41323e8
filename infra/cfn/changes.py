"""Create, update and delete the stack through change sets, and read back what CloudFormation says: the plan
(each resource added, modified, replaced or removed), the outputs, and why an operation failed.

`python -m infra deploy | destroy` use it on AWS, the local stack and the tests on moto; the waiting is
botocore's CloudFormation waiters.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from botocore.exceptions import ClientError, WaiterError

from infra.queue_wait import create_when_free
from infra.tags import STACK_TAG

log = logging.getLogger(__name__)

CAPABILITIES = ["CAPABILITY_NAMED_IAM"]
NO_CHANGES = "didn't contain changes"  # AWS's StatusReason for an empty change set
# A stack in one of these states cannot be updated, only deleted (a create that rolled back, a change set
# never executed, a delete that stopped halfway).
DEAD_STATES = ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "REVIEW_IN_PROGRESS", "DELETE_FAILED")
VISIBLE_S = 120.0  # how long a new instance or image may stay unlisted (EC2's eventual consistency)


class StackFailed(RuntimeError):
    """A stack operation failed; ``reasons`` are the failing resources and what CloudFormation said."""

    def __init__(self, what: str, status: str, reasons: list[str]):
        self.status, self.reasons = status, reasons
        lines = "\n".join(f"  {r}" for r in reasons) or "  (no resource reported a reason)"
        super().__init__(f"{what} ended {status}:\n{lines}")


@dataclass(frozen=True)
class Change:
    action: str  # Add | Modify | Remove
    logical_id: str
    resource_type: str
    replacement: str | None = None  # for Modify: True | False | Conditional
    physical_id: str | None = None

    def __str__(self) -> str:
        note = {"True": "REPLACED (new physical resource)", "Conditional": "may be replaced",
                "False": "in place"}.get(self.replacement or "", "")
        return f"{self.action:<7} {self.logical_id} ({self.resource_type}){'  ' + note if note else ''}"


@dataclass(frozen=True)
class Plan:
    """A change set: what executing it would do. Empty when the stack already is what was asked."""

    stack: str
    change_set_id: str | None
    create: bool
    changes: tuple[Change, ...]

    @property
    def empty(self) -> bool:
        return not self.changes

    @property
    def replacements(self) -> list[Change]:
        return [c for c in self.changes if c.replacement in ("True", "Conditional")]

    def text(self) -> str:
        if self.empty:
            return f"stack {self.stack}: no changes (the change set is empty)"
        verb = "create" if self.create else "update"
        counts = {a: sum(c.action == a for c in self.changes) for a in ("Add", "Modify", "Remove")}
        head = (f"change set to {verb} stack {self.stack}: {counts['Add']} to add, {counts['Modify']} to modify "
                f"({len(self.replacements)} replaced), {counts['Remove']} to remove")
        return "\n".join([head, *(f"  {c}" for c in self.changes)])


def wait_for(waiter, wait_s: float, poll_s: float, **kwargs) -> None:
    """A botocore waiter asking every ``poll_s`` for up to ``wait_s`` (at least once)."""
    waiter.wait(WaiterConfig={"Delay": poll_s, "MaxAttempts": max(1, math.ceil(wait_s / poll_s))}, **kwargs)


def describe(cfn, name: str) -> dict | None:
    """The live stack ``name`` (not a deleted one), or None."""
    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except ClientError as err:
        if "does not exist" in err.response["Error"].get("Message", ""):
            return None
        log.error("describe_stacks %s failed", name)
        raise
    live = [s for s in stacks if s["StackStatus"] != "DELETE_COMPLETE"]
    return live[0] if live else None


def outputs(stack: dict | None) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in (stack or {}).get("Outputs", [])}


def failures(cfn, name: str) -> list[str]:
    """Why the stack's latest operation failed: each resource that failed, first failure first, with
    CloudFormation's reason (the events since the operation began)."""
    reasons = []
    for page in cfn.get_paginator("describe_stack_events").paginate(StackName=name):
        for event in page["StackEvents"]:  # newest first
            if event["LogicalResourceId"] == event["StackName"] and event["ResourceStatus"].endswith("_IN_PROGRESS") \
                    and event.get("ResourceStatusReason") == "User Initiated":
                return list(reversed(reasons))
            if event["ResourceStatus"].endswith("_FAILED"):
                reasons.append(f"{event['LogicalResourceId']} ({event['ResourceType']}) {event['ResourceStatus']}: "
                               f"{event.get('ResourceStatusReason') or 'no reason given'}")
    return list(reversed(reasons))


def plan(cfn, name: str, body: str, parameters: Mapping[str, str], *, tags: Mapping[str, str], wait_s: float = 300.0,
         poll_s: float = 5.0) -> Plan:
    """Make a change set for ``body`` with ``parameters`` and read it back (an empty one is deleted)."""
    stack = describe(cfn, name)
    create = stack is None
    try:
        made = cfn.create_change_set(
            StackName=name, ChangeSetName=f"{name}-{'create' if create else 'update'}-{_stamp()}",
            ChangeSetType="CREATE" if create else "UPDATE", TemplateBody=body, Capabilities=CAPABILITIES,
            Parameters=[{"ParameterKey": k, "ParameterValue": str(v)} for k, v in parameters.items()],
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    except ClientError:
        log.error("create_change_set for stack %s failed", name)
        raise
    try:
        wait_for(cfn.get_waiter("change_set_create_complete"), wait_s, poll_s, ChangeSetName=made["Id"])
    except WaiterError:
        found = cfn.describe_change_set(ChangeSetName=made["Id"])
        if NO_CHANGES in (found.get("StatusReason") or ""):
            cfn.delete_change_set(ChangeSetName=made["Id"])
            return Plan(name, None, create, ())
        raise StackFailed(f"change set {made['Id']}", found.get("Status", "FAILED"),
                          [found.get("StatusReason") or "no reason given"]) from None
    changes = []
    for page in cfn.get_paginator("describe_change_set").paginate(ChangeSetName=made["Id"]):
        for change in page.get("Changes", []):
            rc = change["ResourceChange"]
            changes.append(Change(rc["Action"], rc["LogicalResourceId"], rc["ResourceType"], rc.get("Replacement"),
                                  rc.get("PhysicalResourceId")))
    return Plan(name, made["Id"], create, tuple(changes))


def _stamp() -> str:
    import time

    return time.strftime("%Y%m%d%H%M%S")


def discard(cfn, change_plan: Plan) -> None:
    """Delete a change set that will not be executed (a dry run, an unconfirmed plan); a created stack's
    empty record goes with it."""
    if change_plan.change_set_id:
        cfn.delete_change_set(ChangeSetName=change_plan.change_set_id)
    if change_plan.create and (stack := describe(cfn, change_plan.stack)) and \
            stack["StackStatus"] == "REVIEW_IN_PROGRESS":
        cfn.delete_stack(StackName=change_plan.stack)


def execute(cfn, change_plan: Plan, *, wait_s: float = 1800.0, poll_s: float = 10.0) -> dict:
    """Execute the change set and wait; returns the stack, or raises ``StackFailed`` with the reasons
    (CloudFormation has rolled the stack back by then)."""
    name = change_plan.stack
    if change_plan.change_set_id is None:  # nothing to change
        return describe(cfn, name)
    try:
        cfn.execute_change_set(ChangeSetName=change_plan.change_set_id)
    except ClientError:
        log.error("execute_change_set %s failed", change_plan.change_set_id)
        raise
    waiter = "stack_create_complete" if change_plan.create else "stack_update_complete"
    try:
        wait_for(cfn.get_waiter(waiter), wait_s, poll_s, StackName=name)
    except WaiterError:
        stack = describe(cfn, name) or {"StackStatus": "DELETE_COMPLETE"}
        raise StackFailed(f"{'creating' if change_plan.create else 'updating'} stack {name}", stack["StackStatus"],
                          failures(cfn, name)) from None
    return describe(cfn, name)


def apply(cfn, name: str, body: str, parameters: Mapping[str, str], *, tags: Mapping[str, str] | None = None,
          confirm: Callable[[Plan], bool] = lambda p: True, wait_s: float = 1800.0, poll_s: float = 10.0,
          say: Callable[[str], None] = print) -> tuple[Plan, dict | None]:
    """Plan, ask ``confirm`` (it sees an empty plan too; False or an exception discards the change set),
    execute; returns the plan and the stack (None if not done). A stack a failed create left is deleted first.

    A queue deleted less than 60 s ago keeps its name (SQS's QueueDeletedRecently): a create CloudFormation
    rolled back for that reason (a stack just destroyed, or rolled back, and put up again) is planned and
    executed again once the name is free, saying so; the plan the user confirmed is not asked again."""
    asked: list[Plan] = []

    def confirm_once(change_plan: Plan) -> bool:
        if asked and asked[0].create == change_plan.create:
            return True
        asked.append(change_plan)
        return confirm(change_plan)

    return create_when_free(
        lambda: _apply_once(cfn, name, body, parameters, tags=tags, confirm=confirm_once, wait_s=wait_s,
                            poll_s=poll_s),
        f"stack {name}", say=say, errors=(StackFailed,), recent=queue_names_taken)


def queue_names_taken(err: StackFailed) -> bool:
    return any("QueueDeletedRecently" in reason for reason in err.reasons)


def _apply_once(cfn, name: str, body: str, parameters: Mapping[str, str], *, tags: Mapping[str, str] | None,
                confirm: Callable[[Plan], bool], wait_s: float, poll_s: float) -> tuple[Plan, dict | None]:
    stack = describe(cfn, name)
    if stack and stack["StackStatus"] in DEAD_STATES:
        log.warning("stack %s is %s (an earlier operation failed): deleting it first", name, stack["StackStatus"])
        delete(cfn, name, wait_s=wait_s, poll_s=poll_s)
    change_plan = plan(cfn, name, body, parameters, tags={STACK_TAG: name, **(tags or {})}, wait_s=wait_s,
                       poll_s=poll_s)
    try:
        go = confirm(change_plan)
    except BaseException:
        discard(cfn, change_plan)
        raise
    if not go:
        discard(cfn, change_plan)
        return change_plan, None
    return change_plan, execute(cfn, change_plan, wait_s=wait_s, poll_s=poll_s)


def delete(cfn, name: str, *, wait_s: float = 1800.0, poll_s: float = 10.0) -> bool:
    """Delete the stack and wait until it is gone; False when there was none."""
    stack = describe(cfn, name)
    if stack is None:
        return False
    try:
        cfn.delete_stack(StackName=stack["StackId"])
        wait_for(cfn.get_waiter("stack_delete_complete"), wait_s, poll_s, StackName=stack["StackId"])
    except WaiterError:
        raise StackFailed(f"deleting stack {name}", (describe(cfn, name) or {}).get("StackStatus", "DELETE_FAILED"),
                          failures(cfn, stack["StackId"])) from None
    return True


def wait_terminated(ec2, ids: list[str], wait_s: float, poll_s: float) -> None:
    """botocore's instance_terminated waiter, after its instance_exists one: EC2 is eventually consistent, and
    the terminated waiter fails on an id not listed yet (InvalidInstanceID.NotFound)."""
    wait_for(ec2.get_waiter("instance_exists"), min(wait_s, VISIBLE_S), poll_s, InstanceIds=ids)
    wait_for(ec2.get_waiter("instance_terminated"), wait_s, poll_s, InstanceIds=ids)


def default_network(ec2) -> tuple[str, list[str]]:
    """The default VPC and one default subnet per availability zone (a load balancer needs two zones)."""
    try:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise LookupError("this region has no default VPC; create one (`aws ec2 create-default-vpc`) and retry")
        vpc = vpcs[0]["VpcId"]
        subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                                {"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    except ClientError:
        log.error("describe_vpcs/describe_subnets failed")
        raise
    by_zone: dict[str, str] = {}
    for subnet in sorted(subnets, key=lambda s: s["AvailabilityZone"]):
        by_zone.setdefault(subnet["AvailabilityZone"], subnet["SubnetId"])
    if len(by_zone) < 2:
        raise LookupError(f"the default VPC {vpc} has default subnets in {len(by_zone)} availability zone(s); "
                          "the web instances and load balancer need two")
    return vpc, list(by_zone.values())
