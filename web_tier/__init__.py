"""The web tier: upload form and course API (``POST /``), JSON API, batches, response dispatcher.

``create_app`` builds the Flask app (page and ``POST /``, JSON API, ``/dashboard``);
``python -m web_tier`` serves it with waitress (several processes may share one port).
Shared state (settings, clients, job store, router, reply queue, dispatcher) lives on
``app.extensions["imgrec"]`` as a ``web_tier.state.WebState``; ``state.close()`` stops
its threads and releases the reply queue.
"""

from __future__ import annotations

import logging

from flask import Flask

from infra.clients import Clients
from infra.config import Settings
from infra.jobstore import JobStore
from web_tier.dispatcher import Dispatcher, Router
from web_tier.recheck import StoreRecheck
from web_tier.replies import ReplyQueue
from web_tier.state import EXTENSION, WebState

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, clients: Clients | None = None,
               start_dispatcher: bool = True) -> Flask:
    """Application factory. ``start_dispatcher=False`` makes no reply queue and reads none (tests, tools);
    requests then name no reply queue and are answered on the stack's response queue."""
    settings = settings or Settings.from_env()
    # One pooled connection per serving thread: 200 requests each storing an image at once.
    clients = clients or Clients(settings, pool=max(settings.max_pool_connections, settings.web_threads))
    store = JobStore(clients.dynamodb, settings.jobs_table)
    router = Router(settings.request_timeout_s)
    reply = ReplyQueue(settings, clients.sqs, clients.dynamodb)
    state = WebState(settings, clients, store, router, reply, Dispatcher(settings, clients.sqs, store, router, reply))

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = state.max_body_bytes
    app.extensions[EXTENSION] = state

    from web_tier import api, batches, upload
    from web_tier.dashboard import make_dashboard_blueprint

    app.register_blueprint(upload.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(batches.bp)
    dashboard = make_dashboard_blueprint(settings, clients)  # its sampler starts on the first /dashboard visit
    app.register_blueprint(dashboard)
    state.dashboard_sampler = dashboard.sampler
    upload.register_error_handlers(app)
    app.after_request(_security_headers)

    if start_dispatcher:
        state.dispatcher.start()
        state.recheck = StoreRecheck(store, router)
        state.recheck.start()
    return app


def _security_headers(resp):
    """File names and labels come from users: no browser may sniff a text answer into HTML or frame the page."""
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("X-Frame-Options", "DENY")
    resp.headers.setdefault("Referrer-Policy", "no-referrer")
    return resp


def get_state(app: Flask) -> WebState:
    return app.extensions[EXTENSION]
