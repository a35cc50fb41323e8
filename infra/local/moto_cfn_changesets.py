"""moto 5.2's change sets say only Add, Modify or Remove per resource, from the raw template text: no
``Replacement`` flag, resources whose condition is false listed as added, and a parameter change that modifies
resources listed as no change at all; executing an update neither deletes a resource whose condition became
false nor creates one whose condition became true (unless something happens to read it); and a change set with
nothing to change is refused with UpdateStack's "No updates are to be performed" error instead of being made
with status FAILED and AWS's "didn't contain changes" reason (what `aws cloudformation deploy` reads as "No
changes to deploy"). Corrected in our launcher: the plan is worked out as AWS describes it, with whether each
modified resource will be replaced, judged against AWS's own resource schemas (their ``createOnlyProperties``,
as cfn-lint carries them), and an update executes exactly that plan. AWS: "Replacement: For the Modify action, indicates whether CloudFormation will replace the resource by
creating a new one and deleting the old one. This value depends on the value of the RequiresRecreation property
in the ResourceTargetDefinition structure. For example, if the RequiresRecreation field is Always and the
Evaluation field is Static, Replacement is True. If the RequiresRecreation field is Always and the Evaluation
field is Dynamic, Replacement is Conditional."
(https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_ResourceChange.html).
`python -m infra deploy` shows this plan before it changes anything.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable

from infra.local.moto_cfn_events import condition_false

log = logging.getLogger(__name__)
_applied = False
SUB_NAME = re.compile(r"\$\{([A-Za-z0-9:.]+)\}")


def references(value) -> tuple[set[str], set[str]]:
    """(names a template value reads by ``Ref`` or a bare ``${Name}``, resources whose attributes it reads by
    ``Fn::GetAtt`` or ``${Name.Attribute}``)."""
    refs: set[str] = set()
    attrs: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                refs.add(inner)
            elif key == "Fn::GetAtt":
                attrs.add(inner[0] if isinstance(inner, list) else str(inner).split(".")[0])
            elif key == "Fn::Sub":
                text, variables = (inner, {}) if isinstance(inner, str) else (inner[0], inner[1])
                for name in SUB_NAME.findall(text):
                    if name not in variables:
                        (attrs if "." in name else refs).add(name.split(".")[0])
                more = references(variables)
                refs, attrs = refs | more[0], attrs | more[1]
            else:
                more = references(inner)
                refs, attrs = refs | more[0], attrs | more[1]
    elif isinstance(value, list):
        for inner in value:
            more = references(inner)
            refs, attrs = refs | more[0], attrs | more[1]
    return refs, attrs


@functools.cache
def create_only(resource_type: str, region: str) -> frozenset[str]:
    """Top-level properties whose change replaces the resource, from AWS's schema for the type."""
    try:
        from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

        schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema(region, resource_type).schema
    except Exception:  # noqa: BLE001 - a type cfn-lint does not know: assume in-place updates
        return frozenset()
    return frozenset(p.split("/")[2] for p in schema.get("createOnlyProperties", []))


def _detail(name: str, recreate: bool, source: str, causing: str | None = None) -> dict:
    target = {"Attribute": "Properties", "Name": name, "RequiresRecreation": "Always" if recreate else "Never"}
    # A template edit or a parameter's new value is known now (Static); a resource's attribute only once that
    # resource has been updated (Dynamic).
    detail = {"Target": target, "Evaluation": "Dynamic" if source == "ResourceAttribute" else "Static",
              "ChangeSource": source}
    if causing:
        detail["CausingEntity"] = causing
    return detail


def plan(old_map, old_json: dict, new_map, new_json: dict, region: str) -> list[tuple[str, str, dict]]:
    """[(action, logical id, extra)] for what changes from the live stack (``old_*``) to the new template:
    properties changed in the template, properties reading a changed parameter, and (in turn) properties
    reading a resource that changes, each judged replaced or not by the type's create-only properties."""
    old_live = {lid for lid in old_json if getattr(old_map._parsed_resources.get(lid), "logical_resource_id", None)}
    new_live = {lid for lid, rj in new_json.items() if not condition_false(lid, rj, new_map)}
    changed = {k for k in set(old_map.resolved_parameters) | set(new_map.resolved_parameters)
               if old_map.resolved_parameters.get(k) != new_map.resolved_parameters.get(k)}
    kept = [lid for lid in new_json if lid in old_live & new_live]
    details: dict[str, list[dict]] = {}
    for lid in kept:
        old_props, new_props = old_json[lid].get("Properties", {}), new_json[lid].get("Properties", {})
        recreate = create_only(new_json[lid]["Type"], region)
        found = [_detail(k, k in recreate, "DirectModification")
                 for k in sorted(set(old_props) | set(new_props)) if old_props.get(k) != new_props.get(k)]
        if found or old_json[lid] != new_json[lid]:
            details[lid] = found
    grew = True
    while grew:  # what reads a changed parameter, a replaced resource or a changed one's attributes, changes too
        grew = False
        replaced = {lid for lid, found in details.items() if any(d["Target"]["RequiresRecreation"] == "Always"
                                                                for d in found)}
        for lid in kept:
            recreate = create_only(new_json[lid]["Type"], region)
            have = {d["Target"]["Name"] for d in details.get(lid, [])}
            for key, value in sorted(new_json[lid].get("Properties", {}).items()):
                refs, attrs = references(value)
                cause = sorted(((refs & (changed | replaced)) | (attrs & set(details))) - {lid})
                if key in have or not cause:
                    continue
                source = "ParameterReference" if cause[0] in changed else "ResourceAttribute"
                details.setdefault(lid, []).append(_detail(key, key in recreate, source, cause[0]))
                grew = True
    out = [("Add", lid, {}) for lid in new_json if lid in new_live - old_live]
    for lid in (x for x in kept if x in details):
        found = details[lid]
        static = any(d["Target"]["RequiresRecreation"] == "Always" and d["Evaluation"] == "Static" for d in found)
        dynamic = any(d["Target"]["RequiresRecreation"] == "Always" for d in found)
        out.append(("Modify", lid, {"replacement": "True" if static else "Conditional" if dynamic else "False",
                                    "scope": ["Properties"] if found else [], "details": found}))
    out += [("Remove", lid, {}) for lid in old_json if lid in old_live - new_live]
    return out


def _resolved(resources_map, template: dict, parameters: dict):
    """A resource map for ``template`` and ``parameters`` with parameters and conditions worked out, nothing made."""
    from moto.cloudformation.parsing import ResourceMap

    new_map = ResourceMap(resources_map.stack_id, resources_map["AWS::StackName"], parameters, resources_map.tags,
                          region_name=resources_map._region_name, account_id=resources_map._account_id,
                          template=template, cross_stack_resources=resources_map.cross_stack_resources)
    new_map.load()
    return new_map


KEPT_POLICIES = ("Retain", "RetainExceptOnCreate")  # a resource removed from the stack by an update stays
PASSES = 5  # resources others still depend on go (or come) in a later pass


def in_passes(ids: list[str], step: Callable[[str], None], passes: int = PASSES) -> tuple[list[str], Exception | None]:
    """``step`` each id; those it raised on (another resource still depends on it, or is not there yet) again
    in a later pass. Returns the ids still left after ``passes`` passes, and the last error."""
    last = None
    for _ in range(passes):
        left = []
        for lid in ids:
            try:
                step(lid)
            except Exception as err:  # noqa: BLE001 - a dependency not done yet: next pass
                left.append(lid)
                last = err
        ids = left
        if not ids:
            break
    return ids, last


def update(self, template: dict, parameters: dict | None = None) -> None:
    """Execute the plan ``plan`` works out: remove, then add, then modify, as CloudFormation does."""
    from moto.cloudformation.parsing import parse_and_update_resource

    parameters = parameters if parameters is not None else self.input_parameters
    actions = plan(self, self._resource_json_map, _resolved(self, template, parameters), template["Resources"],
                   self._region_name)

    def remove(lid: str) -> None:
        if self._resource_json_map[lid].get("DeletionPolicy") not in KEPT_POLICIES:
            self._delete_resource(self._parsed_resources[lid], self._resource_json_map[lid])
        self._parsed_resources.pop(lid, None)

    def modify(lid: str) -> None:
        changed = parse_and_update_resource(lid, self._resource_json_map[lid], self, account_id=self._account_id,
                                            region_name=self._region_name)
        if changed is not None:
            self._parsed_resources[lid] = changed

    left, last = in_passes([lid for action, lid, _ in reversed(actions) if action == "Remove"], remove)
    if left:
        raise last
    self._template, self.input_parameters = template, parameters
    self.load_mapping()
    self.load_parameters()
    self.load_conditions()
    self._resource_json_map = template["Resources"]
    for action, lid, _ in actions:
        if action == "Add":
            _ = self[lid]  # the lazy map makes it (and whatever it reads first)
    left, last = in_passes([lid for action, lid, _ in actions if action == "Modify"], modify)
    if left:
        raise last


def diff(self) -> list:
    from moto.cloudformation.models import Change

    stack = self.stack
    old_map = stack.resource_map
    new_map = _resolved(old_map, self.template_dict, self.parameters)
    changes = []
    for action, lid, extra in plan(old_map, old_map._resource_json_map, new_map, self.template_dict["Resources"],
                                   stack.region_name):
        source = self.template_dict["Resources"] if action != "Remove" else old_map._resource_json_map
        change = Change(action=action, logical_resource_id=lid, resource_type=source[lid]["Type"])
        resource = old_map._parsed_resources.get(lid)
        change.physical_resource_id = str(getattr(resource, "physical_resource_id", "") or "") or None
        for key, value in extra.items():
            setattr(change, key, value)
        changes.append(change)
    log.debug("change set %s: %s", self.change_set_name, json.dumps([(c.action, c.logical_resource_id,
                                                                       getattr(c, "replacement", None))
                                                                      for c in changes]))
    return changes


def _no_refusal(original):
    """CreateChangeSet makes an empty change set (the backend marks it FAILED with AWS's reason) rather than
    refusing the call as UpdateStack does."""

    @functools.wraps(original)
    def create_change_set(self):
        self._validate_different_update = lambda *args, **kwargs: None
        try:
            return original(self)
        finally:
            del self._validate_different_update

    return create_change_set


def apply() -> None:
    global _applied
    if _applied:
        return
    from moto.cloudformation.models import ChangeSet
    from moto.cloudformation.parsing import ResourceMap
    from moto.cloudformation.responses import CloudFormationResponse

    ChangeSet.diff = diff
    ResourceMap.update = update
    CloudFormationResponse.create_change_set = _no_refusal(CloudFormationResponse.create_change_set)
    _applied = True
    log.debug("moto fix applied: change sets with replacement flags, conditions and parameters")
