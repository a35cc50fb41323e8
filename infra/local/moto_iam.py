"""IAM enforcement in our moto server, and where we correct moto's judgement to match AWS's.

moto 5.2 in server mode checks every request's SigV4 signature and the caller's
identity policies once ``INITIAL_NO_AUTH_ACTION_COUNT`` requests have passed; the
local stack switches that on after it has created its identities
(``set_enforcement``: POST ``/moto-api/reset-auth``). The credentials it checks are
IAM users' access keys and ``sts:AssumeRole`` sessions (what our credential server
hands to each tier).

What moto judges: the action against the Resource of each Allow/Deny statement, for
S3 (bucket and object ARNs), SQS (queue ARNs), IAM (role ARNs) and STS (the role
assumed, with its trust policy). What it cannot judge: Conditions (ignored: a
statement applies as if its condition held), NotResource (a statement with it
applies to every resource), resource-based policies, and the resources of any other
service: it checks EC2 and CloudWatch calls against Resource ``*`` only. Those checks
live in the policy-document tests (tests/test_iam.py).

Corrections applied here (``apply()``, by our launcher), each where moto deviates from
AWS in a way that would wrongly deny a call our least-privilege policies allow:

- action names: AWS authorises the SQS batch calls as their single-message actions
  (``SendMessageBatch`` as ``sqs:SendMessage``, ...), CloudWatch calls as
  ``cloudwatch:*`` (moto uses the signing name ``monitoring``), S3 HeadBucket as
  ``s3:ListBucket``; moto checked the operation names;
- SQS calls that name a queue by ``QueueName`` (GetQueueUrl, CreateQueue) are checked
  against that queue's ARN (moto checked them against ``*``, which denies every
  queue-scoped grant of GetQueueUrl);
- EC2 and CloudWatch: a call that names instances (``InstanceId.N``: terminate,
  stop, start) is checked against each instance's ARN; any other call of these
  services passes when some Allow statement grants the action on any resource
  (moto would deny every resource-scoped statement, e.g. RunInstances through our
  launch template). The resource scoping itself is not judged locally;
- trust policies: moto cannot evaluate a ``Service`` principal (nobody signs as
  ``ec2.amazonaws.com``). Locally an IAM user named ``<anything>@<service>`` (for
  example ``imgrec@ec2.amazonaws.com``) speaks for that service: only our credential
  server, standing in for the EC2 instance-metadata service, holds such keys.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.request

log = logging.getLogger(__name__)

# moto's action -> the IAM action AWS authorises that call as.
ACTION_ALIASES = {
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "s3:HeadBucket": "s3:ListBucket",
    "s3:GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "s3:PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "s3:DeletePublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    # "Permissions for Put, Update, Delete, and Get actions are governed by the permissions used for the
    # underlying PutItem, UpdateItem, DeleteItem, and GetItem operations"; there is no TransactWriteItems
    # action (docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis-iam.html). Ours hold
    # only Update actions.
    "dynamodb:TransactWriteItems": "dynamodb:UpdateItem",
}
# Signing name -> IAM service prefix, where they differ.
SERVICE_PREFIXES = {"monitoring": "cloudwatch"}
# Services moto checks against Resource "*" only: judged by action (any Allow of the action passes); their
# resource scoping (EC2 launch templates, DynamoDB table ARNs) stays with the policy-document tests.
ACTION_LEVEL_SERVICES = frozenset({"ec2", "cloudwatch", "dynamodb"})
SERVICE_USER_MARK = "@"  # a user named <anything>@<service principal> speaks for that service
_INSTANCE_PARAM = re.compile(r"^InstanceId\.\d+$")
_applied = False


def iam_action(action: str) -> str:
    """The IAM action AWS authorises moto's ``service:Operation`` as."""
    service, _, name = action.partition(":")
    action = f"{SERVICE_PREFIXES.get(service, service)}:{name}"
    return ACTION_ALIASES.get(action, action)


def service_user_name(stack: str, service: str = "ec2.amazonaws.com") -> str:
    """The local IAM user that plays AWS service ``service`` in trust policies for ``stack``."""
    return f"{stack}{SERVICE_USER_MARK}{service}"


def principal_matches(expected, caller_arn: str) -> bool:
    """Does a trust policy's Principal element admit ``caller_arn``? (AWS and Service principals.)"""
    if expected in (None, "*"):
        return True
    if isinstance(expected, str):
        return expected == caller_arn
    aws = _as_list(expected.get("AWS", []))
    if "*" in aws or caller_arn in aws:
        return True
    account = caller_arn.split(":")[4] if caller_arn.count(":") >= 5 else None
    if account and (account in aws or f"arn:aws:iam::{account}:root" in aws):
        return True  # the account trusts its own principals; their identity policy decides
    user = caller_arn.rsplit(":user/", 1)[1] if ":user/" in caller_arn else ""
    return any(user.endswith(SERVICE_USER_MARK + s) for s in _as_list(expected.get("Service", [])))


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _instance_ids(data) -> list[str]:
    ids = []
    for key, value in (data or {}).items():
        if _INSTANCE_PARAM.match(key):
            ids.extend(_as_list(value))
    return ids


def apply() -> None:
    """Patch moto's access control in this (the moto server's) process."""
    global _applied
    if _applied:
        return
    from moto.core.exceptions import JsonRESTError
    from moto.iam import access_control as ac
    from moto.sqs.responses import SQSResponse
    from moto.utilities.utils import get_partition

    original_init = ac.IAMRequestBase.__init__
    original_check = ac.IAMRequestBase.check_action_permitted

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self._action = iam_action(self._action)

    def check_action_permitted(self, resource: str) -> None:
        service = self._action.split(":", 1)[0]
        if resource != "*" or service not in ACTION_LEVEL_SERVICES:
            return original_check(self, resource)
        ids = _instance_ids(self._data) if service == "ec2" else []
        if ids:
            partition = get_partition(self._region)
            for instance_id in ids:
                original_check(self, f"arn:{partition}:ec2:{self._region}:{self.account_id}:instance/{instance_id}")
            return None
        return _check_action_level(self)

    def _check_action_level(self) -> None:
        permitted = False
        for policy in self._access_key.collect_policies():
            document = ac.IAMPolicy(policy)._policy_json
            for statement in _as_list(document["Statement"]):
                if statement.get("Effect") == "Allow" and "Resource" in statement:
                    statement = {**statement, "Resource": "*"}
                result = ac.IAMPolicyStatement(statement).is_action_permitted(self._action, "*")
                if result == ac.PermissionResult.DENIED:
                    self._raise_access_denied()
                permitted = permitted or result == ac.PermissionResult.PERMITTED
        if not permitted:
            self._raise_access_denied()

    class JsonAccessDenied(JsonRESTError):
        code = 403

    original_denied = ac.IAMRequest._raise_access_denied

    def _raise_access_denied(self) -> None:
        # JSON-protocol callers (SQS) need a JSON error to see its code; moto answers XML.
        if self._headers.get("X-Amz-Target"):
            raise JsonAccessDenied("AccessDenied",
                                   f"User: {self._access_key.arn} is not authorized to perform: {self._action}")
        original_denied(self)

    def _check_principal(self, principal: str) -> bool:
        return principal_matches(self._statement.get("Principal"), principal)

    original_sqs_resource = SQSResponse._determine_resource

    def _determine_sqs_resource(self) -> str:
        resource = original_sqs_resource(self)
        name = self._get_param("QueueName") if resource == "*" else None
        if name:
            return f"arn:{get_partition(self.region)}:sqs:{self.region}:{self.current_account}:{name}"
        return resource

    SQSResponse._determine_resource = _determine_sqs_resource
    ac.IAMRequest._raise_access_denied = _raise_access_denied
    ac.IAMRequestBase.__init__ = __init__
    ac.IAMRequestBase.check_action_permitted = check_action_permitted
    ac.IAMPolicyStatement._check_principal = _check_principal
    _applied = True
    log.debug("moto IAM corrections applied")


def set_enforcement(endpoint_url: str, on: bool, timeout: float = 5.0) -> None:
    """Switch moto's IAM checks on (from the next request) or off; moto-api calls are never checked."""
    count = "0" if on else "inf"
    req = urllib.request.Request(f"{endpoint_url.rstrip('/')}/moto-api/reset-auth", data=count.encode(), method="POST",
                                 headers={"Content-Type": "text/plain"})  # a form body would be parsed away
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        previous = json.loads(resp.read()).get("PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT")
    log.info("moto IAM enforcement %s at %s (was: %s free requests)", "on" if on else "off", endpoint_url, previous)
