"""What the blueprints share, kept on ``app.extensions["imgrec"]``.

A later blueprint (the dashboard) reads ``state.store`` (job counts, recent
jobs with timings) and ``state.dispatcher.stats`` (results, latencies) from here.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from infra.clients import Clients, make_client
from infra.config import Settings
from infra.observe import queue_url
from web_tier.dispatcher import Dispatcher, Router
from web_tier.jobs import JobStore

log = logging.getLogger(__name__)

EXTENSION = "imgrec"
MULTIPART_SLACK = 64 * 1024  # multipart headers and boundaries around one file


@dataclass
class WebState:
    settings: Settings
    clients: Clients
    store: JobStore
    router: Router
    dispatcher: Dispatcher
    dashboard_sampler: object | None = None  # set by create_app; has stop()
    _req_url: str | None = None
    _health: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def max_body_bytes(self) -> int:
        """The largest request body any route accepts (one file at the size limit, plus multipart framing)."""
        return self.settings.max_upload_bytes + MULTIPART_SLACK

    def request_queue_url(self) -> str:
        if self._req_url is None:
            self._req_url = queue_url(self.clients.sqs, self.settings.req_queue)
        return self._req_url

    def health_client(self, service: str):
        """Clients that try once: a health check must answer fast when a service is down."""
        with self._lock:
            if service not in self._health:
                self._health[service] = make_client(service, self.settings.replace(max_attempts=1), read_timeout=5)
            return self._health[service]

    def close(self, dispatcher_timeout: float = 3.0) -> None:
        """Stop the background threads, then the store. A dispatcher caught in a long poll is a daemon:
        whatever it holds goes back to the queue after the visibility timeout and is persisted next start."""
        if self.dashboard_sampler is not None:
            self.dashboard_sampler.stop()
        self.dispatcher.stop(timeout=dispatcher_timeout)
        if not self.dispatcher.is_alive():
            self.store.close()
