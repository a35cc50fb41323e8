"""IAM policy conditions judged against the request context AWS documents, not ignored.

AWS (IAM JSON policy elements: Condition operators): "If the key that you specify in a policy condition is not
present in the request context, the values do not match and the condition is false. If the policy condition
requires that the key is not matched, such as StringNotLike or ArnNotLike, and the right key is not present, the
condition is true. This logic applies to all condition operators except ...IfExists and Null check."
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html
The context keys modelled here: ``cloudwatch:namespace`` on PutMetricData ("Use IAM condition keys to limit users
to publishing metrics only in the CloudWatch namespaces that you specify",
https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/iam-cw-condition-keys-namespace.html);
``aws:ResourceTag/<key>`` and ``ec2:ResourceTag/<key>``, the tags of the instance an EC2 instance action names
(https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html); ``iam:PassedToService``
on the ``iam:PassRole`` that a RunInstances with an instance profile implies ("To pass a role (and its
permissions) to an AWS service, a user must have permissions to pass the role to the service. ... you must grant
the PassRole permission to the user's IAM user, role, or group.",
https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_passrole.html).

moto checks a statement's conditions only as ``StringEquals`` against a near-empty context: a missing key
passes, so every ``Condition`` in our policies holds locally whether or not it is right, and no RunInstances
ever needs ``iam:PassRole``. Here (``IMGREC_STRICT_IAM_CONDITIONS``, on), with IAM enforced, a statement applies
only when its conditions hold for the modelled keys (operators String*, Arn*, Bool, Null, Numeric*, with
``IfExists`` and ``ForAnyValue:``/``ForAllValues:``; keys case-insensitive; a condition on a key not modelled
is left as moto had it); a failed condition makes a statement not apply (moto denied outright); and a
RunInstances whose launch template or request names an instance profile also needs ``iam:PassRole`` on each
of its roles with ``iam:PassedToService`` = ``ec2.amazonaws.com``. ``iam_run_instances`` adds RunInstances'
per-resource keys.
"""

from __future__ import annotations

import fnmatch
import logging
import threading

from infra.local.strict import context
from infra.local.strict.control import StrictState

log = logging.getLogger(__name__)
KEY = "iam_conditions"
EC2_SERVICE = "ec2.amazonaws.com"
MODELLED_KEYS = {"cloudwatch:namespace", "iam:passedtoservice"}
MODELLED_PREFIXES = ("aws:resourcetag/", "ec2:resourcetag/")
_local = threading.local()  # .response: the moto response being authorised; .extra: keys of an implied check


# ------------------------------------------------------------ the condition block (pure)
def _like(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def _number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


_OPERATORS = {
    "stringequals": (lambda e, a: a == e, False),
    "stringnotequals": (lambda e, a: a == e, True),
    "stringequalsignorecase": (lambda e, a: a.lower() == e.lower(), False),
    "stringnotequalsignorecase": (lambda e, a: a.lower() == e.lower(), True),
    "stringlike": (_like, False),
    "stringnotlike": (_like, True),
    "arnequals": (_like, False),
    "arnlike": (_like, False),
    "arnnotequals": (_like, True),
    "arnnotlike": (_like, True),
    "bool": (lambda e, a: a.lower() == e.lower(), False),
    "numericequals": (lambda e, a: _number(a) is not None and _number(a) == _number(e), False),
    "numericnotequals": (lambda e, a: _number(a) is not None and _number(a) == _number(e), True),
    "numericlessthan": (lambda e, a: _number(a) is not None and _number(a) < _number(e), False),
    "numericlessthanequals": (lambda e, a: _number(a) is not None and _number(a) <= _number(e), False),
    "numericgreaterthan": (lambda e, a: _number(a) is not None and _number(a) > _number(e), False),
    "numericgreaterthanequals": (lambda e, a: _number(a) is not None and _number(a) >= _number(e), False),
}


def modelled(key: str, extra: frozenset[str] = frozenset()) -> bool:
    key = key.lower()
    return key in MODELLED_KEYS or key.startswith(MODELLED_PREFIXES) or key in extra or key.startswith(
        tuple(k for k in extra if k.endswith("/")))


def condition_holds(block: dict, ctx: dict[str, list[str]], keys: frozenset[str] = frozenset()) -> bool:
    """Whether a statement's Condition block holds for request context ``ctx`` (key -> values), judging only
    the keys ``modelled`` (plus ``keys``); any other key is left alone, as moto had it (pure)."""
    lowered = {k.lower(): [str(v) for v in vs] for k, vs in ctx.items()}
    for operator, tests in (block or {}).items():
        op = operator.lower()
        quantifier = ""
        if ":" in op:
            quantifier, op = op.split(":", 1)
        if_exists = op.endswith("ifexists")
        op = op.removesuffix("ifexists")
        for key, expected in (tests or {}).items():
            if not modelled(key, keys):
                continue
            expected = [str(e) for e in (expected if isinstance(expected, list) else [expected])]
            actual = lowered.get(key.lower())
            if op == "null":
                want_absent = expected[0].lower() == "true"
                if (actual is None) != want_absent:
                    return False
                continue
            if op not in _OPERATORS:
                return False  # AWS refuses such a policy; never let it allow anything here
            test, negated = _OPERATORS[op]
            if actual is None:
                if if_exists or negated or quantifier == "forallvalues":
                    continue
                return False
            if quantifier == "forallvalues":
                ok = all(any(test(e, a) for e in expected) for a in actual)
                ok = not ok if negated else ok
            else:
                match = any(test(e, a) for e in expected for a in actual)
                ok = not match if negated else match
            if not ok:
                return False
    return True


# ------------------------------------------------------------ the request context
def _backends(response):
    from moto.ec2.models import ec2_backends
    from moto.iam.models import iam_backends
    from moto.utilities.utils import get_partition

    region = getattr(response, "region", "us-east-1")
    account = getattr(response, "current_account", None)
    return ec2_backends[account][region], iam_backends[account][get_partition(region)]


def launch_template(response):
    """The launch template version a RunInstances names, or None."""
    spec = response._get_param("LaunchTemplate", {}) or {}
    if not spec:
        return None
    ec2, _ = _backends(response)
    try:
        return ec2._get_template_from_args(spec)
    except Exception:  # noqa: BLE001 - moto answers a bad template itself
        return None


def passed_roles(response) -> list[str]:
    """ARNs of the roles of the instance profile a RunInstances passes (request first, else its template)."""
    ec2, iam = _backends(response)
    arn, name = response._get_param("IamInstanceProfile.Arn"), response._get_param("IamInstanceProfile.Name")
    if not arn and not name:
        template = launch_template(response)
        profile = (template.data.get("IamInstanceProfile") or {}) if template else {}
        arn, name = profile.get("Arn"), profile.get("Name")
    try:
        found = iam.get_instance_profile_by_arn(arn) if arn else iam.get_instance_profile(name) if name else None
    except Exception:  # noqa: BLE001 - moto answers an unknown profile itself
        return []
    return [role.arn for role in found.roles] if found else []


def request_context(response, action: str, resource: str) -> dict[str, list[str]]:
    """The modelled context keys of ``action`` on ``resource`` in this request."""
    ctx: dict[str, list[str]] = {}
    if action == "cloudwatch:PutMetricData":
        namespace = response._get_param("Namespace")
        if namespace:
            ctx["cloudwatch:namespace"] = [namespace]
    if action.startswith("ec2:") and ":instance/i-" in resource:
        ec2, _ = _backends(response)
        for k, v in ec2.tags.get(resource.rsplit("/", 1)[1], {}).items():
            ctx[f"aws:ResourceTag/{k}"] = [v]
            ctx[f"ec2:ResourceTag/{k}"] = [v]
    ctx.update(getattr(_local, "extra", None) or {})
    return ctx


def check_as(request, action: str, resource: str, extra: dict[str, list[str]]) -> None:
    """Authorise an action the request implies (as AWS does), with the caller's policies; raises moto's
    access-denied error naming that action."""
    from moto.iam.access_control import IAMPolicy, PermissionResult

    _local.extra = extra
    try:
        results = [IAMPolicy(p).is_action_permitted(action, resource) for p in request._access_key.collect_policies()]
    finally:
        _local.extra = None
    if PermissionResult.DENIED in results or PermissionResult.PERMITTED not in results:
        saved = request._action
        request._action = action
        try:
            request._raise_access_denied()
        finally:
            request._action = saved


def current_response():
    return getattr(_local, "response", None)


def apply(state: StrictState) -> None:
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam import access_control as ac

    authenticate = ActionAuthenticatorMixin._authenticate_and_authorize_action

    def authenticate_with_context(self, iam_request_cls: type, resource: str = "*") -> None:
        _local.response = self
        try:
            return authenticate(self, iam_request_cls, resource)
        finally:
            _local.response = None

    statement_permitted = ac.IAMPolicyStatement.is_action_permitted

    def is_action_permitted(self, action, resource="*", principal=None, incoming_condition_values=None):
        response = current_response()
        block = self._statement.get("Condition")
        if response is None or not block or incoming_condition_values is not None or not context.enabled(state, KEY):
            return statement_permitted(self, action, resource, principal, incoming_condition_values)
        keys = frozenset(getattr(_local, "keys", None) or ())
        if not condition_holds(block, request_context(response, action, resource), keys):
            return ac.PermissionResult.NEUTRAL  # a statement whose condition fails does not apply
        plain = ac.IAMPolicyStatement({k: v for k, v in self._statement.items() if k != "Condition"})
        return statement_permitted(plain, action, resource, principal, incoming_condition_values)

    check = ac.IAMRequestBase.check_action_permitted

    def check_action_permitted(self, resource: str) -> None:
        check(self, resource)
        response = current_response()
        if self._action == "ec2:RunInstances" and response is not None and context.enabled(state, KEY):
            for role_arn in passed_roles(response):
                check_as(self, "iam:PassRole", role_arn, {"iam:PassedToService": [EC2_SERVICE]})

    ActionAuthenticatorMixin._authenticate_and_authorize_action = authenticate_with_context
    ac.IAMPolicyStatement.is_action_permitted = is_action_permitted
    ac.IAMRequestBase.check_action_permitted = check_action_permitted
