"""Where a worker's results go: the job store first, then the reply queue each request named.

The job store is where any web process finds a result, so no result depends on a reply
queue that may be going away (AWS accepts sends to a deleted queue for up to 60 s, then
drops them). The reply message only wakes the waiting request; it says in a message
attribute that the result is already recorded, so the web process does not write it again
(a web process of an older version ignores the attribute and records it once more, which
the store's conditional writes make harmless). A reply queue that no longer exists gets
the stack's response queue.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

from botocore.exceptions import BotoCoreError, ClientError

from infra.jobstore import STORE_ERRORS, JobStore
from infra.messages import ImageResult, UnknownVersion, recorded_attributes

log = logging.getLogger(__name__)

MISSING_QUEUE = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")


class Answers:
    """Records and sends one worker's results; message ids key everything (pure data in, ids out)."""

    def __init__(self, sqs, store: JobStore, resp_url: str, resp_queue: str, instance_id: str,
                 pool: ThreadPoolExecutor):
        self.sqs, self.store, self.pool = sqs, store, pool
        self.resp_url, self.resp_queue, self.instance_id = resp_url, resp_queue, instance_id

    def record(self, results: dict[str, ImageResult], only_if_queued: set[str]) -> set[str]:
        """Write each result into the job store; returns the message ids whose result is recorded.
        ``only_if_queued``: results (a last-receive failure) that must never overwrite a result."""
        def one(pair: tuple[str, ImageResult]) -> str | None:
            mid, result = pair
            try:
                self.store.complete(result, time.time(), only_if_queued=mid in only_if_queued)
                return mid
            except STORE_ERRORS as err:
                log.warning("recording result %s (%s) in the job store failed: %s; the web tier records it",
                            result.request_id, result.name, err)
                return None

        return {mid for mid in self.pool.map(one, list(results.items())) if mid}

    def send(self, results: dict[str, tuple[str | None, ImageResult]], recorded: set[str], batch_ids: str) -> set[str]:
        """Send each result (message id -> (reply queue URL or None, result)) to its queue; returns the
        message ids whose result went out."""
        by_queue: dict[str, list[tuple[str, ImageResult]]] = {}
        for mid, (url, result) in results.items():
            by_queue.setdefault(url or self.resp_url, []).append((mid, result))
        sent: set[str] = set()
        for url, pending in by_queue.items():
            for start in range(0, len(pending), 10):
                sent |= self._send_chunk(url, pending[start:start + 10], recorded, batch_ids)
        return sent

    def _send_chunk(self, url: str, chunk: list[tuple[str, ImageResult]], recorded: set[str], batch_ids: str) -> set[str]:
        entries = [{"Id": str(n), "MessageBody": r.to_json(),
                    **({"MessageAttributes": recorded_attributes()} if mid in recorded else {})}
                   for n, (mid, r) in enumerate(chunk)]
        try:
            resp = self.sqs.send_message_batch(QueueUrl=url, Entries=entries)
        except ClientError as err:
            if url != self.resp_url and err.response["Error"]["Code"] in MISSING_QUEUE:
                log.warning("reply queue %s is gone; answering batch %s on %s", url.rpartition("/")[2], batch_ids,
                            self.resp_queue)
                return self._send_chunk(self.resp_url, chunk, recorded, batch_ids)
            log.error("send_message_batch to %s failed for batch %s: %s", url.rpartition("/")[2], batch_ids, err)
            return set()
        except BotoCoreError as err:
            log.error("send_message_batch to %s failed for batch %s: %s", url.rpartition("/")[2], batch_ids, err)
            return set()
        sent = {chunk[int(ok["Id"])][0] for ok in resp.get("Successful", [])}
        for failed in resp.get("Failed", []):
            mid, result = chunk[int(failed["Id"])]
            log.error("result for request %s (message %s) was not sent: %s", result.request_id, mid,
                      failed.get("Message") or failed.get("Code"))
        return sent

    def newer_version(self, err: UnknownVersion, message_id: str, receive_count: int, max_receive_count: int) -> None:
        """A request of a schema version we do not read is left for redelivery (an upgraded worker may read
        it). Logged once, on the receive after which the redrive policy moves it to the dead-letter queue,
        and its job is marked failed then (never over a result)."""
        rid = err.ids.get("request_id")
        if receive_count < max_receive_count:
            log.debug("message %s (request %s): %s; left for redelivery (receive %d of %d)", message_id, rid, err,
                      receive_count, max_receive_count)
            return
        log.warning("message %s (request %s): %s; left for the dead-letter queue after %d receives "
                    "(`python -m infra redrive` once the workers read it; instance %s)", message_id, rid or "-", err,
                    receive_count, self.instance_id)
        result = err.failed_result(worker=self.instance_id, done_at=time.time())
        if result is None:
            return
        try:
            self.store.complete(result, only_if_queued=True)
        except STORE_ERRORS as exc:
            log.error("could not mark job %s failed (message %s dead-lettered): %s", rid, message_id, exc)
