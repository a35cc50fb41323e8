"""Which API call this moto thread is serving, and injected failures for it.

moto serves each HTTP request in its own thread and routes it through ``BaseResponse.call_action``; we wrap
that once to record ``<service>:<Action>`` and (parsed only when a behaviour or a pending fault asks) the
strings the request carries (names, URLs, ARNs, tag values: what scopes match), so behaviours can tell a
client's ``DescribeInstances`` from moto's own internal lookups (a CloudFormation stack creating an instance,
say), and so a test can make a call fail on demand (``client.inject_fault``) whatever the service. Faults are
answered after IAM has authorised the call, as AWS would, in the service's own error format.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

from infra.local.strict import control

log = logging.getLogger(__name__)
_local = threading.local()


@dataclass(frozen=True)
class Call:
    service: str  # moto's service name: "ec2", "sqs", "dynamodb", "cloudwatch", ...
    action: str  # the API action, e.g. "DescribeInstances"
    request: object = field(default=None, repr=False, compare=False)  # moto's BaseResponse serving it

    @property
    def operation(self) -> str:
        return f"{self.service}:{self.action}"

    @cached_property
    def names(self) -> tuple[str, ...]:
        """The strings the request carries (what scopes match), parsed on first use: most calls never ask."""
        return request_names(self.request) if self.request is not None else ()


def current() -> Call | None:
    """The client call this thread is serving, or None (moto's own work, or no request)."""
    return getattr(_local, "call", None)


def enabled(state: control.StrictState, key: str) -> bool:
    """Whether setting ``key`` is on for the client call this thread serves (its scope's value, else the default)."""
    call = current()
    return bool(state.value(key, call.names if call else ()))


def _strings(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def request_names(response) -> tuple[str, ...]:
    """Every string parameter of the request (query string and JSON body), for scope matching."""
    names = list(_strings(getattr(response, "querystring", None) or {}))
    body = getattr(response, "body", None)
    if body and isinstance(body, bytes | str) and body[:1] in (b"{", "{"):
        try:
            names += list(_strings(json.loads(body)))
        except ValueError:
            pass
    return tuple(names)


def install() -> None:
    from moto.core.exceptions import ServiceException
    from moto.core.responses import ActionResult, BaseResponse

    class InjectedFault(ServiceException):
        """Defined outside moto's packages, so moto serializes it with the called service's own error model."""

    original = BaseResponse.call_action

    def call_action(self):
        try:
            action = self._get_action()
        except Exception:  # noqa: BLE001 - no action (moto's own routes): serve it untouched
            return original(self)
        call = Call(str(getattr(self, "service_name", "") or ""), str(action), self)
        fault = control.state().take_fault(call)  # installed only with the emulation on
        if fault is not None:
            log.info("injected %s for %s (scope %s)", fault.code, call.operation, fault.scope)
            status, headers, body = self.serialized(ActionResult(InjectedFault(fault.code, fault.message)))
            headers["status"] = str(fault.status)
            return fault.status, headers, body
        _local.call = call
        try:
            return original(self)
        finally:
            _local.call = None

    BaseResponse.call_action = call_action
