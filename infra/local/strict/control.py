"""Run-time state of the strict local AWS, scoped by resource-name prefix, and its HTTP route on the moto server.

Tests share one moto server per session and tell their resources apart by a name prefix, so every run-time
override and injected fault belongs to a *scope*: a prefix. A behaviour asks for a value with the names the
request touches (queue, bucket, table, stack tag, CloudWatch ``Stack`` dimension, ...); the override of the
longest scope that starts one of them wins, else the default. One test's settings thus cannot reach another's
resources, and ``DELETE`` of a scope ends them. moto's ``/moto-api/`` config route cannot express this, so we
serve our own, ``/_imgrec/strict`` (never IAM-checked, like moto's):

- ``GET /_imgrec/strict`` -> JSON state (enabled, defaults, scopes, faults);
- ``PUT /_imgrec/strict/scopes/<scope>`` with a JSON object of ``{setting: value}``;
- ``DELETE /_imgrec/strict/scopes/<scope>``: that scope's overrides and faults go;
- ``POST /_imgrec/strict/faults`` with ``{scope, operation, code, times, message, status}``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from infra.local.strict.settings import StrictSettings, coerce

if TYPE_CHECKING:
    from infra.local.strict.context import Call

log = logging.getLogger(__name__)

ROUTE = "/_imgrec/strict"
# HTTP status AWS answers for the failures tests inject (EC2 API reference, "Error codes"): capacity is a
# server error, limits are client errors, throttling is 503. Anything else defaults to 400.
FAULT_STATUS = {"InsufficientInstanceCapacity": 500, "InternalError": 500, "ServiceUnavailable": 503,
                "Unavailable": 503, "RequestLimitExceeded": 503, "Throttling": 400, "ThrottlingException": 400,
                "VcpuLimitExceeded": 400, "InstanceLimitExceeded": 400}


@dataclass
class Fault:
    scope: str
    operation: str  # "<service>:<Action>", e.g. "ec2:RunInstances"
    code: str
    times: int | None = None  # None: until the scope is cleared
    message: str = ""
    status: int = 0

    def __post_init__(self) -> None:
        self.status = int(self.status or FAULT_STATUS.get(self.code, 400))
        self.message = self.message or f"{self.code} (injected by the strict local AWS for scope {self.scope!r})"


class StrictState:
    """Defaults, per-scope overrides and pending faults; thread-safe (moto serves each request in a thread)."""

    def __init__(self, settings: StrictSettings):
        self.settings = settings
        self.defaults = settings.values()
        self._scopes: dict[str, dict[str, object]] = {}
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.settings.on

    # ------------------------------------------------------------ reads (behaviours)
    def value(self, key: str, names: Iterable[str | None] = ()) -> object:
        """``key``'s value for a request touching ``names``: the longest matching scope's override, else default."""
        names = [n for n in names if n]
        best, best_len = None, -1
        with self._lock:
            for scope, values in self._scopes.items():
                if key in values and len(scope) > best_len and any(matches(scope, n) for n in names):
                    best, best_len = values[key], len(scope)
        return self.defaults[key] if best_len < 0 else best

    def take_fault(self, call: Call) -> Fault | None:
        """The fault to answer this call with, if one is pending for it (a counted one is used up)."""
        if not self._faults:  # none injected (every request of a run without tests): the request is not parsed
            return None
        operation, names = call.operation, call.names
        with self._lock:
            for fault in self._faults:
                if fault.operation.lower() == operation.lower() and any(matches(fault.scope, n) for n in names):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    # ------------------------------------------------------------ writes (control route)
    def configure(self, scope: str, values: dict[str, object]) -> dict[str, object]:
        if not scope:
            raise ValueError("a scope (resource-name prefix) is required")
        checked = {key: coerce(key, value) for key, value in values.items()}
        with self._lock:
            self._scopes.setdefault(scope, {}).update(checked)
            return dict(self._scopes[scope])

    def clear(self, scope: str) -> None:
        with self._lock:
            self._scopes.pop(scope, None)
            self._faults = [f for f in self._faults if f.scope != scope]

    def add_fault(self, fault: Fault) -> None:
        if not fault.scope or ":" not in fault.operation or not fault.code:
            raise ValueError("a fault needs scope, operation ('service:Action') and code")
        with self._lock:
            self._faults.append(fault)

    def snapshot(self) -> dict:
        with self._lock:
            return {"enabled": self.enabled, "defaults": dict(self.defaults),
                    "scopes": {s: dict(v) for s, v in self._scopes.items()},
                    "faults": [asdict(f) for f in self._faults]}


def matches(scope: str, name: str) -> bool:
    """Whether ``name`` (a resource name, a tag or dimension value, a queue URL or an ARN) is in ``scope``."""
    return name.startswith(scope) or f"/{scope}" in name or f":{scope}" in name


STATE: StrictState | None = None


def state() -> StrictState:
    if STATE is None:
        raise RuntimeError("the strict local AWS is not installed in this process")
    return STATE


def install(settings: StrictSettings) -> StrictState:
    global STATE
    STATE = StrictState(settings)
    return STATE


# ------------------------------------------------------------ HTTP
def _json(start_response, status: int, payload) -> list[bytes]:
    body = json.dumps(payload).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}.get(status, "")
    start_response(f"{status} {reason}", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def handle(environ, start_response) -> list[bytes]:
    """Serve ``/_imgrec/strict...`` (a WSGI app)."""
    path = environ.get("PATH_INFO", "")[len(ROUTE):].strip("/")
    method = environ.get("REQUEST_METHOD", "GET")
    st = state()
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
        if path == "" and method == "GET":
            return _json(start_response, 200, st.snapshot())
        if path.startswith("scopes/") and method in ("PUT", "POST"):
            scope = path[len("scopes/"):]
            return _json(start_response, 200, {"scope": scope, "values": st.configure(scope, body)})
        if path.startswith("scopes/") and method == "DELETE":
            st.clear(path[len("scopes/"):])
            return _json(start_response, 200, {"cleared": path[len("scopes/"):]})
        if path == "faults" and method == "POST":
            fault = Fault(**{k: body[k] for k in ("scope", "operation", "code", "times", "message", "status")
                             if k in body})
            st.add_fault(fault)
            return _json(start_response, 200, asdict(fault))
        return _json(start_response, 404, {"error": f"no route {method} {ROUTE}/{path}"})
    except (KeyError, TypeError, ValueError) as err:
        return _json(start_response, 400, {"error": str(err)})


def wrap_dispatcher() -> None:
    """Serve our route ahead of moto's host/path dispatch (in the moto server process)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original = DomainDispatcherApplication.__call__

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith(ROUTE):
            return handle(environ, start_response)
        return original(self, environ, start_response)

    DomainDispatcherApplication.__call__ = __call__
