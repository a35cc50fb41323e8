"""The messages a worker holds, kept invisible while it works on them, and handed back on stop.

A batch can outlast the visibility timeout (a slow model, a busy host); if it did,
another worker would take the same messages. A heartbeat thread extends every held
message once it is a third of the timeout old, but never past ``max_hold_s`` after
its receive: a wedged worker's messages then become visible again and, after
``maxReceiveCount`` receives, reach the dead-letter queue instead of staying hidden
for up to SQS's 12 hours. On a hard stop everything held is released (visibility 0)
so another worker takes it at once; a retryable failure hands a message back after a
backoff (``retry_later``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    message_id: str
    extended_at: float
    received_at: float = 0.0
    over_hold: bool = False  # past max_hold_s: logged once, never extended again


def due_for_extension(entries: dict[str, _Entry], now: float, after_s: float,
                      timeout_s: int | None = None, max_hold_s: float = math.inf) -> list[tuple[str, int]]:
    """(receipt, new visibility s) for messages whose visibility was last set ``after_s`` or more ago (pure).

    The new visibility is ``timeout_s``, cut so that it ends ``max_hold_s`` after the
    receive; a message with less than a second of hold time left gets no extension.
    """
    timeout_s = int(timeout_s if timeout_s is not None else after_s * 3)
    due = []
    for receipt, e in entries.items():
        if now - e.extended_at < after_s:
            continue
        left = int(max_hold_s - (now - e.received_at)) if max_hold_s != math.inf else timeout_s
        if left >= 1:
            due.append((receipt, min(timeout_s, left)))
    return due


class HeldMessages:
    """Receipt handles this worker holds; the heartbeat extends them, ``release_all`` hands them back."""

    def __init__(self, sqs, queue_url: str, visibility_timeout_s: int, *, instance_id: str = "",
                 max_hold_s: float = math.inf):
        self._sqs, self._url = sqs, queue_url
        self.timeout_s = visibility_timeout_s
        self.max_hold_s = max_hold_s
        self.instance_id = instance_id
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, receipt: str, message_id: str, received_at: float | None = None) -> None:
        at = received_at or time.monotonic()
        with self._lock:
            self._entries[receipt] = _Entry(message_id, at, at)

    def discard(self, receipts) -> None:
        with self._lock:
            for r in receipts:
                self._entries.pop(r, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    # ------------------------------------------------------------ heartbeat
    def start(self) -> HeldMessages:
        self._thread = threading.Thread(target=self._loop, name="visibility", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def alive(self) -> bool:
        """False once the heartbeat thread has died (the worker then exits: nothing would extend its messages)."""
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        tick = max(0.2, min(5.0, self.timeout_s / 6))
        while not self._stop.wait(tick):
            self.extend_due()

    def extend_due(self) -> int:
        now = time.monotonic()
        with self._lock:
            due = due_for_extension(self._entries, now, self.timeout_s / 3, self.timeout_s, self.max_hold_s)
            over = [(r, e) for r, e in self._entries.items()
                    if not e.over_hold and now - e.received_at >= self.max_hold_s - 1]
            for _, e in over:
                e.over_hold = True
        for _, e in over:
            log.warning("message %s held %.0f s, over IMGREC_MAX_HOLD_S=%s: no longer extended, it becomes visible "
                        "again (instance %s)", e.message_id, now - e.received_at, self.max_hold_s, self.instance_id)
        by_timeout: dict[int, list[str]] = {}
        for receipt, timeout in due:
            by_timeout.setdefault(timeout, []).append(receipt)
        for timeout, receipts in by_timeout.items():
            self._change(receipts, timeout)
            log.info("extended visibility of %d messages by %d s (instance %s)", len(receipts), timeout,
                     self.instance_id)
        with self._lock:
            for r, _ in due:
                if r in self._entries:
                    self._entries[r].extended_at = now
        return len(due)

    def retry_later(self, delays: dict[str, int]) -> None:
        """Stop holding these receipts and make each visible again after its delay (s): a retry's backoff."""
        self.discard(delays)
        by_delay: dict[int, list[str]] = {}
        for receipt, delay in delays.items():
            by_delay.setdefault(int(delay), []).append(receipt)
        for delay, receipts in by_delay.items():
            self._change(receipts, delay)

    def release(self, receipts) -> None:
        """Visibility 0: another worker may take these at once."""
        receipts = list(receipts)
        self.discard(receipts)
        if receipts:
            self._change(receipts, 0)

    def release_all(self) -> int:
        with self._lock:
            receipts = list(self._entries)
        self.release(receipts)
        if receipts:
            log.info("released %d held messages (instance %s)", len(receipts), self.instance_id)
        return len(receipts)

    def _change(self, receipts: list[str], timeout: int) -> None:
        for i in range(0, len(receipts), 10):
            chunk = receipts[i:i + 10]
            entries = [{"Id": str(n), "ReceiptHandle": r, "VisibilityTimeout": timeout} for n, r in enumerate(chunk)]
            try:
                resp = self._sqs.change_message_visibility_batch(QueueUrl=self._url, Entries=entries)
            except (ClientError, BotoCoreError) as err:
                # Best effort: the message still comes back when its current timeout ends.
                log.warning("change_message_visibility_batch (%d s) on %s failed for %d messages: %s",
                            timeout, self._url, len(chunk), err)
                continue
            for failed in resp.get("Failed", []):
                log.warning("visibility change to %d s failed for a message on %s: %s", timeout, self._url,
                            failed.get("Message") or failed.get("Code"))
