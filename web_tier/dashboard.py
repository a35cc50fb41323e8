"""`GET /dashboard` (a live page) and `GET /api/metrics` (the JSON it polls).

The page asks for ``/api/metrics?since=<last t>`` every second and gets only the
new points, so a poll costs a lock, a short list copy and a small JSON body; the
AWS reads happen once per second in the shared sampler, whatever the number of
browsers.
"""

from __future__ import annotations

import logging
import math
import time

from flask import Blueprint, jsonify, render_template, request

from infra.config import Settings
from web_tier.dashboard_sampler import DEFAULT_IDLE_AFTER_S, DEFAULT_INTERVAL_S, DEFAULT_WINDOW_S, Sampler, columns
from web_tier.metrics_source import SERIES, MetricsSource

log = logging.getLogger(__name__)

POLL_MS = 1000


class BadSince(ValueError):
    pass


def parse_since(raw: str | None) -> float | None:
    """``since`` is epoch seconds; anything else is a 400 that says so."""
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadSince(f"since={raw[:40]!r}: expected epoch seconds, e.g. since=1700000000.5") from None
    if not math.isfinite(value) or value < 0:
        raise BadSince(f"since={raw[:40]!r}: expected a finite, non-negative number of epoch seconds")
    return value


def make_dashboard_blueprint(settings: Settings, clients, *, interval_s: float = DEFAULT_INTERVAL_S,
                             window_s: float = DEFAULT_WINDOW_S, idle_after_s: float = DEFAULT_IDLE_AFTER_S) -> Blueprint:
    """The dashboard blueprint; ``bp.sampler`` starts lazily on the first request and ``stop()`` ends it."""
    bp = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static",
                   static_url_path="/dashboard/static")
    sampler = Sampler(MetricsSource(settings, clients), interval_s=interval_s, window_s=window_s,
                      idle_after_s=idle_after_s)
    bp.sampler = sampler

    @bp.get("/dashboard")
    def page():
        sampler.start()
        return render_template("dashboard.html", prefix=settings.prefix, poll_ms=POLL_MS,
                               window_s=int(window_s), local=settings.is_local)

    @bp.get("/api/metrics")
    def metrics():
        try:
            since = parse_since(request.args.get("since"))
        except BadSince as err:
            return jsonify(error=str(err)), 400
        sampler.start()
        readings, latest = sampler.since(since)
        body = {
            "now": round(time.time(), 3),
            "interval_s": sampler.interval_s,
            "window_s": sampler.window_s,
            "stack": settings.prefix,
            "series_names": list(SERIES),
            "series": columns(readings),
            "latest": None,
            "sampler_running": sampler.running,
        }
        if latest is not None:
            body["latest"] = {"t": latest.t, "values": latest.values, "errors": latest.errors,
                              "instances": latest.instances, "latency_mode": latest.latency_mode}
        resp = jsonify(body)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    return bp
