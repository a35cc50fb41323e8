"""What the blueprints share, kept on ``app.extensions["imgrec"]``.

``state.store`` is the shared job store (DynamoDB, any web process reads any job),
``state.reply`` this process's reply queue, ``state.dispatcher.stats`` what the
dispatcher counted.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from infra.clients import Clients, make_client
from infra.config import Settings
from infra.jobstore import JobStore
from infra.observe import queue_url
from web_tier.dispatcher import Dispatcher, Router
from web_tier.replies import ReplyQueue

log = logging.getLogger(__name__)

EXTENSION = "imgrec"
MULTIPART_SLACK = 64 * 1024  # multipart headers and boundaries around one file


class NotReady(RuntimeError):
    """This process has no reply queue yet: a request sent now could not be answered to it."""


@dataclass
class WebState:
    settings: Settings
    clients: Clients
    store: JobStore
    router: Router
    reply: ReplyQueue
    dispatcher: Dispatcher
    dashboard_sampler: object | None = None  # set by create_app; has stop()
    recheck: object | None = None  # the store re-reader (web_tier/recheck.py), started with the dispatcher
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

    def reply_to(self) -> str | None:
        """The reply queue requests name; None (the stack's response queue) only without a dispatcher."""
        if self.reply.url is None and self.dispatcher.is_alive():
            raise NotReady("this web process has no reply queue yet")
        return self.reply.url

    def health_client(self, service: str):
        """Clients that try once: a health check must answer fast when a service is down."""
        with self._lock:
            if service not in self._health:
                self._health[service] = make_client(service, self.settings.replace(max_attempts=1), read_timeout=5)
            return self._health[service]

    def close(self, dispatcher_timeout: float = 3.0) -> None:
        """Stop the background threads, then release the reply queue. A dispatcher caught in a long poll
        is a daemon: whatever it holds goes back to the queue after its visibility timeout. With no
        result outstanding there is nothing to wait for."""
        if self.dashboard_sampler is not None:
            self.dashboard_sampler.stop()
        if self.recheck is not None:
            self.recheck.stop()
        self.dispatcher.stop(timeout=dispatcher_timeout if self.router.outstanding else 0.2)
        self.reply.close(outstanding=self.router.outstanding)
