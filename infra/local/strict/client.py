"""Talk to the strict local AWS on a moto server: scoped overrides and injected faults, for tests and benches.

A scope is a resource-name prefix (a test's ``settings.prefix``): what is set for it reaches only resources
whose names, tags or dimensions start with it. ``scoped`` clears it again, so nothing leaks into the next test.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

ROUTE = "/_imgrec/strict"  # infra.local.strict.control.ROUTE (not imported: that module runs in the server)


def _call(endpoint_url: str, method: str, path: str, payload: dict | None = None, timeout: float = 5.0) -> dict:
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(f"{endpoint_url.rstrip('/')}{ROUTE}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")
        raise ValueError(f"strict AWS control route {method} {path}: {err.code} {detail}") from None


def state(endpoint_url: str) -> dict:
    """Whether the emulation is on, its defaults, every scope's overrides and the pending faults."""
    return _call(endpoint_url, "GET", "")


def configure(endpoint_url: str, scope: str, **values) -> dict:
    """Override settings (``StrictSettings`` field names: ``sqs_count_lag_s=60``, ...) for ``scope``."""
    return _call(endpoint_url, "PUT", f"/scopes/{urllib.parse.quote(scope, safe='')}", values)


def clear(endpoint_url: str, scope: str) -> None:
    _call(endpoint_url, "DELETE", f"/scopes/{urllib.parse.quote(scope, safe='')}")


def inject_fault(endpoint_url: str, scope: str, operation: str, code: str, *, times: int | None = None,
                 message: str = "", status: int = 0) -> dict:
    """Make ``operation`` ("ec2:RunInstances") fail with ``code`` for ``scope``: the next ``times`` calls, or
    every call until ``clear`` (``times=None``: a persistent throttle, which botocore's retries cannot hide)."""
    return _call(endpoint_url, "POST", "/faults", {"scope": scope, "operation": operation, "code": code,
                                                   "times": times, "message": message, "status": status})


@contextlib.contextmanager
def scoped(endpoint_url: str, scope: str, **values) -> Iterator[None]:
    """``configure`` for the block, then ``clear`` (faults injected for the scope meanwhile go too)."""
    if values:
        configure(endpoint_url, scope, **values)
    try:
        yield
    finally:
        clear(endpoint_url, scope)


def enabled(endpoint_url: str) -> bool:
    """Whether the server at ``endpoint_url`` runs the strict emulation (False for plain moto or none)."""
    try:
        return bool(state(endpoint_url).get("enabled"))
    except (OSError, ValueError):
        return False
