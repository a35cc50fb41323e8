"""Response routing: one background thread per process reads this process's reply queue.

No HTTP request polls the queue itself: 200 waiting requests each long-polling
would steal each other's results. Instead the dispatcher receives every result,
wakes whoever waits for that request id, records it in the shared job store (so
any web process can read it, and nothing is lost when nobody waits), and only then
deletes the messages. Each web process has its own reply queue (``replies.py``),
so no process ever takes another's answers.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

from infra.config import DEFAULT_REQUEST_TIMEOUT_S, Settings
from infra.jobstore import STORE_ERRORS, JobStore
from infra.messages import BadMessage, ImageResult, recorded_by_worker
from web_tier.replies import ReplyQueue

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 10.0
LATENCY_WINDOW = 1000
MISSING_QUEUE = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")


@dataclass
class Watch:
    """What one waiting request sees: its results, and an event set when any arrives."""

    ids: frozenset[str]
    event: threading.Event = field(default_factory=threading.Event)
    results: dict[str, ImageResult] = field(default_factory=dict)
    recheck: bool = False  # the store re-reader (web_tier/recheck.py) looks its ids up every second


class Router:
    """Request id -> waiting requests. Several requests may watch the same id.

    It also remembers the ids this process sent and has seen no result for (``outstanding``), for
    ``ttl_s`` (a request's timeout): a clean stop with none out deletes its reply queue at once. An id
    whose result lands elsewhere (another process, the reaper) or never comes expires, so the set stays
    bounded by the requests of one timeout. One ``ttl_s`` for all makes the order they were sent the
    order they expire in."""

    def __init__(self, ttl_s: float = DEFAULT_REQUEST_TIMEOUT_S, clock=time.monotonic):
        self._lock = threading.Lock()
        self._clock = clock
        self._ttl_s = ttl_s
        self._watches: dict[str, list[Watch]] = {}
        self._expected: collections.OrderedDict[str, float] = collections.OrderedDict()  # id -> until, oldest first

    def expect(self, request_id: str) -> None:
        with self._lock:
            self._expected[request_id] = self._clock() + self._ttl_s
            self._expected.move_to_end(request_id)
            self._prune()

    def _prune(self) -> None:
        now = self._clock()
        while self._expected and next(iter(self._expected.values())) <= now:
            self._expected.popitem(last=False)

    @property
    def outstanding(self) -> int:
        with self._lock:
            self._prune()
            return len(self._expected)

    @property
    def tracked(self) -> int:
        """Entries held for ``outstanding`` (for the bounded-memory test)."""
        with self._lock:
            return len(self._expected)

    def recheck_ids(self) -> list[str]:
        """Ids that waiting synchronous requests want looked up in the job store."""
        with self._lock:
            return [i for i, ws in self._watches.items() if any(w.recheck for w in ws)]

    @contextmanager
    def watch(self, ids, *, recheck: bool = False):
        """Register before sending (or before reading the store) so no result slips between."""
        w = Watch(frozenset(ids), recheck=recheck)
        with self._lock:
            for i in w.ids:
                self._watches.setdefault(i, []).append(w)
        try:
            yield w
        finally:
            with self._lock:
                for i in w.ids:
                    waiting = self._watches.get(i, [])
                    if w in waiting:
                        waiting.remove(w)
                    if not waiting:
                        self._watches.pop(i, None)

    def deliver(self, result: ImageResult) -> int:
        """Hand a result to everyone watching its id; returns how many were waiting."""
        with self._lock:
            self._expected.pop(result.request_id, None)
            waiting = list(self._watches.get(result.request_id, ()))
            for w in waiting:
                w.results[result.request_id] = result
                w.event.set()
        return len(waiting)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._watches)


@dataclass
class DispatcherStats:
    """Counters the dashboard reads; updated only by the dispatcher thread."""

    results: int = 0
    failed: int = 0
    unclaimed: int = 0  # results that no request was waiting for (persisted all the same)
    garbled: int = 0
    receive_errors: int = 0
    persist_errors: int = 0
    last_poll_at: float | None = None
    # (result_at, total_ms or None, infer_ms or None) for the latest results.
    latencies: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LATENCY_WINDOW))

    def snapshot(self) -> dict:
        return {
            "results": self.results,
            "failed": self.failed,
            "unclaimed": self.unclaimed,
            "garbled": self.garbled,
            "receive_errors": self.receive_errors,
            "persist_errors": self.persist_errors,
            "last_poll_at": self.last_poll_at,
            "latencies": list(self.latencies),
        }


class Dispatcher(threading.Thread):
    """Long-polls this process's reply queue until ``stop()``; see the module doc."""

    def __init__(self, settings: Settings, sqs, store: JobStore, router: Router, reply: ReplyQueue):
        super().__init__(name="response-dispatcher", daemon=True)
        self.settings = settings
        self.sqs = sqs
        self.store = store
        self.router = router
        self.reply = reply
        self.stats = DispatcherStats()
        self._stop_event = threading.Event()
        self._persist_pool = ThreadPoolExecutor(max_workers=10, thread_name_prefix="persist")

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to finish; waits out at most one long poll."""
        self._stop_event.set()
        if self.is_alive():
            self.join(self.settings.receive_wait_s + 5 if timeout is None else timeout)
            if self.is_alive():
                log.warning("dispatcher still in a long poll after stop; it is a daemon and exits with the process")
        self._persist_pool.shutdown(wait=False)

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    def run(self) -> None:
        backoff = 0.5
        log.info("dispatcher started for web process %s", self.reply.owner)
        while not self._stop_event.is_set():
            try:
                if self.reply.url is None:
                    self.reply.open()
                    self.reply.start_heartbeat()
                elif self.reply.shared and self.reply.claim_lost:
                    self._reopen()
                self.poll_once()
                backoff = 0.5
            except (ClientError, BotoCoreError) as err:
                self.stats.receive_errors += 1
                log.error("reply queue %s: %s; retrying in %.1f s", self.reply.name, err, backoff)
                if isinstance(err, ClientError) and err.response["Error"]["Code"] in MISSING_QUEUE:
                    self._reopen()
                self._stop_event.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            except Exception:  # the thread must not die silently: requests would hang until timeout
                self.stats.receive_errors += 1
                log.exception("dispatcher error; retrying in %.1f s", backoff)
                self._stop_event.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        log.info("dispatcher stopped")

    def _reopen(self) -> None:
        """Our queue was removed under us (reaped after a long silence): answers for requests
        that named it go to the shared response queue; new requests name a new queue."""
        old = self.reply.name
        try:
            self.reply.open()
            log.warning("reply queue %s was gone; web process %s now answers from %s", old, self.reply.owner,
                        self.reply.name)
        except (ClientError, BotoCoreError) as err:
            log.error("cannot reopen a reply queue for web process %s: %s", self.reply.owner, err)

    def poll_once(self) -> int:
        """One long poll; returns how many messages were handled."""
        resp = self.sqs.receive_message(
            QueueUrl=self.reply.url, MaxNumberOfMessages=10, WaitTimeSeconds=self.settings.receive_wait_s,
            MessageAttributeNames=["All"],
        )
        self.stats.last_poll_at = time.time()
        messages = resp.get("Messages", [])
        received_at = time.time()
        done, results = [], []
        for msg in messages:
            result = self.parse(msg)
            if result is None:
                done.append(msg)  # garbled: would fail forever
            else:
                results.append((msg, result))
        # Record first, then answer: a client that reads its job right after its answer sees it done, from
        # any web process. A failed write still answers (the message stays and is recorded on redelivery).
        # A worker that recorded the result itself says so in a message attribute: nothing left to write.
        persisted = list(self._persist_pool.map(
            lambda mr: recorded_by_worker(mr[0]) or self.persist(mr[1], received_at), results))
        for _, result in results:
            self.route(result, received_at)
        done += [msg for (msg, _), ok in zip(results, persisted, strict=True) if ok]
        if done:
            self._delete_batch(done)
        return len(messages)

    def parse(self, msg: dict) -> ImageResult | None:
        """The result a message carries; None when it is garbled."""
        try:
            return ImageResult.from_json(msg.get("Body", ""))
        except BadMessage as err:
            self.stats.garbled += 1
            log.warning("dropping garbled response message %s: %s", msg.get("MessageId"), err)
            return None

    def route(self, result: ImageResult, received_at: float) -> None:
        """Wake whoever waits for this result."""
        woken = self.router.deliver(result)
        self.stats.results += 1
        self.stats.failed += 0 if result.ok else 1
        self.stats.unclaimed += 0 if woken else 1
        total_ms = None if result.sent_at is None else round((received_at - result.sent_at) * 1000, 1)
        self.stats.latencies.append((received_at, total_ms, result.infer_ms))
        log.debug("result %s for %s: %s (waiters %d)", result.request_id, result.name,
                  result.label if result.ok else result.error, woken)

    def persist(self, result: ImageResult, received_at: float) -> bool:
        """Record a result in the job store; False leaves its message to come back."""
        try:
            self.store.complete(result, received_at)
            return True
        except STORE_ERRORS as err:
            self.stats.persist_errors += 1
            log.error("cannot record result %s (%s): %s; its message stays on %s", result.request_id,
                      result.name, err, self.reply.name)
            return False

    def _delete_batch(self, messages: list[dict]) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        try:
            resp = self.sqs.delete_message_batch(QueueUrl=self.reply.url, Entries=entries)
        except ClientError:
            log.error("delete_message_batch on %s failed for %d messages; they will be redelivered and re-recorded",
                      self.reply.name, len(entries))
            raise
        for failure in resp.get("Failed", []):
            log.warning("could not delete response message %s: %s", failure.get("Id"), failure.get("Message"))
