"""moto 5.2's CloudFormation records only stack-level events; AWS records one per resource operation, and
a failed one says why. Corrected in our launcher.

AWS: DescribeStackEvents "Returns all stack related events for a specified stack in reverse chronological order"
(https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_DescribeStackEvents.html); each names
its resource and status, and a failed one carries a ``ResourceStatusReason``. `python -m infra
deploy` reports a failed deployment by the failing resource and its reason, read from these events; on plain
moto there is none to read.
"""

from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)
_applied = False


def stack_of(resources_map):
    """The stack a resource map belongs to (live, or deleted while its resources go)."""
    from moto.cloudformation.models import cloudformation_backends

    backend = cloudformation_backends[resources_map._account_id][resources_map._region_name]
    return backend.stacks.get(resources_map.stack_id) or backend.deleted_stacks.get(resources_map.stack_id)


def reason(err: Exception) -> str:
    """An error as AWS's events word it: the service's code and message."""
    code = getattr(err, "code", None) or getattr(err, "error_type", None) or type(err).__name__
    message = getattr(err, "message", None) or getattr(err, "description", None) or str(err)
    return f"{code}: {message}"


def record(stack, logical_id: str, resource_type: str, status: str, physical_id: str = "",
           status_reason: str | None = None) -> None:
    from moto.cloudformation.models import Event

    if stack is None:
        return
    stack.events.append(Event(stack_id=stack.stack_id, stack_name=stack.name, logical_resource_id=logical_id,
                              physical_resource_id=physical_id, resource_type=resource_type,
                              resource_status=status, resource_status_reason=status_reason,
                              resource_properties=None))


def _physical_id(resource) -> str:
    return str(getattr(resource, "physical_resource_id", "") or "")


def _around(action: str, original, *, logical_of, json_of, map_of, skip=lambda *a, **k: False):
    """Wrap a resource operation in ``<action>_IN_PROGRESS`` then ``_COMPLETE`` or ``_FAILED`` (reason) events."""

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        if skip(*args, **kwargs):
            return original(*args, **kwargs)
        stack, logical_id = stack_of(map_of(*args, **kwargs)), logical_of(*args, **kwargs)
        kind = json_of(*args, **kwargs).get("Type", "")
        record(stack, logical_id, kind, f"{action}_IN_PROGRESS")
        try:
            result = original(*args, **kwargs)
        except Exception as err:
            record(stack, logical_id, kind, f"{action}_FAILED", status_reason=reason(err))
            raise
        physical = _physical_id(result) if action != "DELETE" else _physical_id(args[1])
        record(stack, logical_id, kind, f"{action}_COMPLETE", physical)
        return result

    return wrapper


def condition_false(logical_id, resource_json, resources_map, *args, **kwargs) -> bool:
    condition = resource_json.get("Condition")
    return bool(condition) and not resources_map.lazy_condition_map[condition]


def apply() -> None:
    global _applied
    if _applied:
        return
    from moto.cloudformation import parsing

    parsing.parse_and_create_resource = _around(
        "CREATE", parsing.parse_and_create_resource, logical_of=lambda lid, *a, **k: lid,
        json_of=lambda lid, rj, *a, **k: rj, map_of=lambda lid, rj, rm, *a, **k: rm, skip=condition_false)
    parsing.parse_and_update_resource = _around(
        "UPDATE", parsing.parse_and_update_resource, logical_of=lambda lid, *a, **k: lid,
        json_of=lambda lid, rj, *a, **k: rj, map_of=lambda lid, rj, rm, *a, **k: rm)
    parsing.ResourceMap._delete_resource = _around(
        "DELETE", parsing.ResourceMap._delete_resource,
        logical_of=lambda rm, res, rj: getattr(res, "logical_resource_id", ""),
        json_of=lambda rm, res, rj: rj, map_of=lambda rm, res, rj: rm)
    _applied = True
    log.debug("moto fix applied: CloudFormation records an event per resource operation")
