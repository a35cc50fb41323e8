"""moto 5.2's CloudFormation does not roll back: a resource that fails to create leaves the stack
``CREATE_IN_PROGRESS`` with the resources made before it in place (and the API call answers 500). Corrected in
our launcher: a failed create deletes what it made, newest first, and ends ``ROLLBACK_COMPLETE``; a failed
update re-applies the previous template and parameters and ends ``UPDATE_ROLLBACK_COMPLETE``.

AWS: "Rolls back the specified stack to the last known stable state from CREATE_FAILED or UPDATE_FAILED stack
statuses. This operation will delete a stack if it doesn't contain a last known stable state."
(https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_RollbackStack.html), which is what a stack
operation does by default when a resource fails; and "RetainExceptOnCreate behaves like Retain for stack
operations, except for the stack operation that initially created the resource. If the stack operation that
created the resource is rolled back, CloudFormation deletes the resource."
(https://docs.aws.amazon.com/cdk/api/v2/docs/aws-cdk-lib.CfnDeletionPolicy.html).
A deployment that fails midway must leave nothing behind, and say which resource failed and why.
"""

from __future__ import annotations

import copy
import logging

from infra.local.moto_cfn_changesets import in_passes

log = logging.getLogger(__name__)
_applied = False


def _failed_resources(stack) -> list[str]:
    return [e.logical_resource_id for e in stack.events
            if e.resource_status.endswith("_FAILED") and e.logical_resource_id != stack.name]


def _delete_created(resources_map) -> None:
    """Delete every resource the map made, newest first, retrying those others still depend on."""
    created = [lid for lid, value in resources_map._parsed_resources.items()
               if getattr(value, "logical_resource_id", None) == lid and lid in resources_map._resource_json_map]

    def delete(lid: str) -> None:
        try:
            resources_map._delete_resource(resources_map._parsed_resources[lid], resources_map._resource_json_map[lid])
        except Exception as err:
            log.info("rollback: %s not deleted yet (%s)", lid, err)  # a dependency still holds it: next pass
            raise
        resources_map._parsed_resources.pop(lid, None)

    left, _ = in_passes(list(reversed(created)), delete)
    if left:
        log.warning("rollback could not delete %s", left)


def roll_back_create(stack, err: Exception) -> None:
    from infra.local.moto_cfn_events import reason

    failed = _failed_resources(stack)
    why = f"The following resource(s) failed to create: [{', '.join(failed)}]. " if failed else f"{reason(err)}. "
    stack.status = "ROLLBACK_IN_PROGRESS"
    stack._add_stack_event("ROLLBACK_IN_PROGRESS", resource_status_reason=why + "Rollback requested by user.")
    _delete_created(stack.resource_map)
    # Nothing of the stack is left; the lazy map must not make its resources again when read.
    stack.resource_map._resource_json_map = {}
    stack.status = "ROLLBACK_COMPLETE"
    stack._add_stack_event("ROLLBACK_COMPLETE")


def roll_back_update(stack, err: Exception, template: dict, parameters: dict) -> None:
    from infra.local.moto_cfn_events import reason

    failed = _failed_resources(stack)
    why = f"The following resource(s) failed to update: [{', '.join(failed)}]. " if failed else f"{reason(err)}. "
    stack.status = "UPDATE_ROLLBACK_IN_PROGRESS"
    stack._add_stack_event("UPDATE_ROLLBACK_IN_PROGRESS", resource_status_reason=why)
    try:
        stack.resource_map.update(template, parameters)
    except Exception as again:  # noqa: BLE001 - AWS's state for a rollback that failed too
        stack.status = "UPDATE_ROLLBACK_FAILED"
        stack._add_stack_event("UPDATE_ROLLBACK_FAILED", resource_status_reason=reason(again))
        return
    stack.status = "UPDATE_ROLLBACK_COMPLETE"
    stack._add_stack_event("UPDATE_ROLLBACK_COMPLETE")


def execute_change_set(self, change_set_name: str, stack_name: str | None = None) -> None:
    """moto's own, except that a failure rolls the stack back instead of escaping as a server error."""
    from moto.cloudformation.exceptions import ValidationError

    change_set = self.change_sets.get(change_set_name) or next(
        (cs for cs in self.change_sets.values() if cs.change_set_name == change_set_name), None)
    if change_set is None:
        raise ValidationError(stack_name)
    stack = self.stacks[change_set.stack_id]
    kind = change_set.change_set_type
    previous = (copy.deepcopy(stack.resource_map._template), dict(stack.resource_map.input_parameters))
    stack.status = f"{kind}_IN_PROGRESS"
    stack._add_stack_event(f"{kind}_IN_PROGRESS", resource_status_reason="User Initiated")
    try:
        change_set.apply()
    except Exception as err:  # noqa: BLE001 - any resource's failure: AWS rolls back
        log.info("stack %s: %s failed (%s); rolling back", stack.name, kind, err)
        change_set.execution_status = "EXECUTE_FAILED"
        if kind == "CREATE":
            roll_back_create(stack, err)
        else:
            roll_back_update(stack, err, *previous)
        return
    stack._add_stack_event(f"{kind}_COMPLETE")
    change_set.execution_status = "EXECUTE_COMPLETE"
    stack.status = f"{kind}_COMPLETE"
    stack.template = change_set.template


def apply() -> None:
    global _applied
    if _applied:
        return
    from moto.cloudformation.models import CloudFormationBackend

    CloudFormationBackend.execute_change_set = execute_change_set
    _applied = True
    log.debug("moto fix applied: CloudFormation rolls back a failed change set")
