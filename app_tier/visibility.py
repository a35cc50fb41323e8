"""The messages a worker holds, kept invisible while it works on them, and handed back on stop.

A batch can outlast the visibility timeout (a slow model, a busy host); if it did,
another worker would take the same messages. A heartbeat thread extends every held
message once it is a third of the timeout old. On a hard stop everything held is
released (visibility 0) so another worker takes it at once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    message_id: str
    extended_at: float


def due_for_extension(entries: dict[str, _Entry], now: float, after_s: float) -> list[str]:
    """Receipt handles whose visibility was last set more than ``after_s`` ago (pure)."""
    return [receipt for receipt, e in entries.items() if now - e.extended_at >= after_s]


class HeldMessages:
    """Receipt handles this worker holds; the heartbeat extends them, ``release_all`` hands them back."""

    def __init__(self, sqs, queue_url: str, visibility_timeout_s: int, *, instance_id: str = ""):
        self._sqs, self._url = sqs, queue_url
        self.timeout_s = visibility_timeout_s
        self.instance_id = instance_id
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, receipt: str, message_id: str, received_at: float | None = None) -> None:
        with self._lock:
            self._entries[receipt] = _Entry(message_id, received_at or time.monotonic())

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

    def _loop(self) -> None:
        tick = max(0.2, min(5.0, self.timeout_s / 6))
        while not self._stop.wait(tick):
            self.extend_due()

    def extend_due(self) -> int:
        now = time.monotonic()
        with self._lock:
            due = due_for_extension(self._entries, now, self.timeout_s / 3)
        if due:
            self._change(due, self.timeout_s)
            with self._lock:
                for r in due:
                    if r in self._entries:
                        self._entries[r].extended_at = now
            log.info("extended visibility of %d messages by %d s (instance %s)", len(due), self.timeout_s,
                     self.instance_id)
        return len(due)

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
