"""RunInstances with a ClientToken it has seen launches nothing new: it answers with the first call's instances.

AWS ("Ensuring idempotency in Amazon EC2 API requests"): "Idempotency ensures that an API request completes
no more than one time. With an idempotent request, if the original request completes successfully, any
subsequent retries complete successfully without performing any further actions. However, the result might
contain updated information, such as the current creation status." RunInstances supports it through a client
token; the same token with other arguments fails with ``IdempotentParameterMismatch`` ("Arguments on this
idempotent request are inconsistent with arguments used in previous request(s).").
https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html

moto stores the token and launches again, so a controller that retries a launch whose answer it never saw
(a timeout, a dropped connection, botocore's own retry of a 5xx) doubles the fleet locally and nobody notices.
Here (``IMGREC_STRICT_EC2_IDEMPOTENCY``, on) a token seen before returns that reservation's instances in their
current state, and a token reused with different arguments answers ``IdempotentParameterMismatch`` (400).
Tokens are kept per account and region for the life of the server (AWS keeps them at least 24 hours).
"""

from __future__ import annotations

import threading

from infra.local.strict import context
from infra.local.strict.control import StrictState

KEY = "ec2_idempotency"
IGNORED_PARAMS = frozenset({"ClientToken", "Action", "Version"})


def _fingerprint(querystring: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in querystring.items()
                        if k not in IGNORED_PARAMS))


def apply(state: StrictState) -> None:
    from moto.core.exceptions import ServiceException
    from moto.core.responses import ActionResult
    from moto.ec2.responses.instances import InstanceResponse

    tokens: dict[tuple[str, str, str], tuple[str, tuple]] = {}  # (account, region, token) -> (reservation, args)
    lock = threading.Lock()
    original = InstanceResponse.run_instances

    class IdempotentParameterMismatch(ServiceException):
        code = "IdempotentParameterMismatch"
        message = "Arguments on this idempotent request are inconsistent with arguments used in previous request(s)."

    def run_instances(self):
        token = self._get_param("ClientToken")
        if not token or not context.enabled(state, KEY):
            return original(self)
        key = (self.current_account, self.region, token)
        args = _fingerprint(self.querystring)
        with lock:  # one launch per token, even when two identical requests race
            seen = tokens.get(key)
            if seen is None:
                result = original(self)
                tokens[key] = (result.result.id, args)
                return result
        reservation_id, first_args = seen
        if args != first_args:
            raise IdempotentParameterMismatch()
        return ActionResult(self.ec2_backend.reservations[reservation_id])

    InstanceResponse.run_instances = run_instances
