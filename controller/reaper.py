"""Reply queues whose web process is gone: record what they hold, then remove them.

Every web process heartbeats its reply queue's tags (``web_tier/replies.py``). A
queue whose owner is gone (heartbeat stale, or owner tags removed at a clean stop
that left requests out) is an orphan: its results are recorded in the job store
(so the jobs complete and any web process reads them), and once it is empty and
the request queue has been empty for a while, no request can name it any more and
it is deleted. Not sooner: AWS accepts sends to a deleted queue for up to 60 s and
those answers would be lost. The shared response queue is drained the same way
when its holder died (stale heartbeat), and never deleted; released at a clean
stop, it waits for the next default web process, as it always has. ``decide`` is pure; ``Reaper`` acts.

The same pass looks at the dead-letter queue: a request there will not be answered (its
workers failed on it ``maxReceiveCount`` times, or could not read its schema version), so
its job is marked failed with that reason (never over a result), and a synchronous client
waiting for it answers at once (its web process re-reads the job store every second).
Messages stay in the dead-letter queue for ``python -m infra redrive``; each is looked at
once and then hidden for ``DLQ_LOOK_S``, so the passes go round all of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from botocore.exceptions import BotoCoreError, ClientError

from infra.config import Settings
from infra.jobstore import STORE_ERRORS, JobStore
from infra.messages import BadMessage, ImageRequest, ImageResult, UnknownVersion, recorded_by_worker
from infra.observe import QueueDepth, owner_alive, queue_depth, queue_url
from infra.provision import reply_queue_urls
from infra.tags import OWNER_TAG, STACK_TAG

log = logging.getLogger(__name__)

DRAIN_ROUNDS = 10  # receives of up to 10 messages per orphan per pass: bounds one tick
DLQ_ROUNDS = 5  # receives of up to 10 dead-lettered requests per pass
DLQ_LOOK_S = 30  # a dead-lettered request looked at is hidden this long (redrive waits for it at most that)
MARKED_MEMORY = 10_000  # dead-lettered message ids already marked, not written again


class ReapAction(StrEnum):
    KEEP = "keep"
    DRAIN = "drain"  # record its results in the job store
    DELETE = "delete"


@dataclass(frozen=True)
class ReplyQueueView:
    name: str
    tags: dict[str, str]
    depth: QueueDepth
    shared: bool = False  # the stack's provisioned response queue: drained, never deleted


def decide(q: ReplyQueueView, *, prefix: str, now: float, stale_s: float, quiet_for: float | None,
           min_quiet_s: float) -> ReapAction:
    """What to do with one reply queue (pure). ``quiet_for``: how long the request queue has been
    empty, observed since this queue's owner went (None: not empty now)."""
    if not q.shared and q.tags.get(STACK_TAG) != prefix:
        return ReapAction.KEEP  # not ours
    if owner_alive(q.tags, now, stale_s):
        return ReapAction.KEEP
    if q.shared and not q.tags.get(OWNER_TAG):
        return ReapAction.KEEP  # released at a clean stop (or never held): the next default process reads it
    if q.depth.visible > 0:
        return ReapAction.DRAIN
    if q.shared or q.depth.backlog > 0:
        return ReapAction.KEEP  # messages a dead dispatcher held come back after the visibility timeout
    if quiet_for is not None and quiet_for >= min_quiet_s:
        return ReapAction.DELETE
    return ReapAction.KEEP


class Reaper:
    """One pass over the stack's reply queues per ``run_once``; only the lease holder calls it."""

    def __init__(self, settings: Settings, sqs, store: JobStore, *, min_quiet_s: float | None = None):
        self.settings = settings
        self.sqs = sqs
        self.store = store
        self.min_quiet_s = settings.reply_heartbeat_s if min_quiet_s is None else min_quiet_s
        self._quiet_since: float | None = None
        self._req_url: str | None = None
        self._resp_url: str | None = None
        self._dlq_url: str | None = None
        self._marked: dict[str, None] = {}  # insertion-ordered: the oldest are forgotten first

    def run_once(self, now: float, monotonic: float) -> dict[str, ReapAction]:
        """``now``: epoch seconds (heartbeats are epoch); ``monotonic``: for the quiet period."""
        if self._req_url is None:
            self._req_url = queue_url(self.sqs, self.settings.req_queue)
            self._resp_url = queue_url(self.sqs, self.settings.resp_queue)
        # The request queue first: results of every request gone from it were sent before this read.
        backlog = queue_depth(self.sqs, self._req_url).backlog
        self._quiet_since = (self._quiet_since or monotonic) if backlog == 0 else None
        quiet_for = None if self._quiet_since is None else monotonic - self._quiet_since
        done = {}
        for url in [self._resp_url, *reply_queue_urls(self.sqs, self.settings)]:
            name = url.rpartition("/")[2]
            try:
                view = ReplyQueueView(name, self.sqs.list_queue_tags(QueueUrl=url).get("Tags", {}),
                                      queue_depth(self.sqs, url), shared=url == self._resp_url)
            except ClientError as err:  # deleted since the listing
                log.info("reply queue %s: %s", name, err.response["Error"]["Code"])
                continue
            action = decide(view, prefix=self.settings.prefix, now=now, stale_s=self.settings.reply_stale_s,
                            quiet_for=quiet_for, min_quiet_s=self.min_quiet_s)
            if action is ReapAction.DRAIN:
                n = self.drain(url)
                log.info("reply queue %s has no live owner (%s): recorded %d results", name,
                         view.tags.get(OWNER_TAG, "no owner tag"), n)
            elif action is ReapAction.DELETE:
                self.sqs.delete_queue(QueueUrl=url)
                log.info("reply queue %s deleted: no live owner, empty, request queue quiet for %.0f s", name,
                         quiet_for)
            done[name] = action
        try:
            self.mark_dead_letters()
        except (ClientError, BotoCoreError) as err:
            log.error("dead-letter pass on %s failed: %s; trying again next pass", self.settings.dlq, err)
        return done

    def mark_dead_letters(self) -> int:
        """Mark the jobs of dead-lettered requests failed (only those still queued); returns how many."""
        if self._dlq_url is None:
            self._dlq_url = queue_url(self.sqs, self.settings.dlq)
        marked = 0
        for _ in range(DLQ_ROUNDS):
            msgs = self.sqs.receive_message(QueueUrl=self._dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                            VisibilityTimeout=DLQ_LOOK_S).get("Messages", [])
            if not msgs:
                break
            for msg in msgs:
                if msg["MessageId"] not in self._marked and self._mark_one(msg):
                    marked += 1
        return marked

    def _mark_one(self, msg: dict) -> bool:
        mid = msg["MessageId"]
        try:
            req = ImageRequest.from_json(msg.get("Body", ""))
            result = ImageResult(req.request_id, req.name, batch_id=req.batch_id, error=(
                f"its request reached the dead-letter queue: the workers failed on it "
                f"{self.settings.max_receive_count} times (an image that crashes them, or a lasting fault); "
                f"python -m infra redrive retries it"))
        except UnknownVersion as err:
            result = err.failed_result()
        except BadMessage as err:
            log.warning("dead-lettered message %s is not a request (%s); left for inspection", mid, err)
            self._remember(mid)
            return False
        if result is None or not result.request_id:
            self._remember(mid)
            return False
        try:
            changed = self.store.complete(result, only_if_queued=True)
        except STORE_ERRORS as err:
            log.error("cannot mark job %s failed (dead-lettered message %s): %s; next pass", result.request_id, mid,
                      err)
            return False
        self._remember(mid)
        if changed:
            log.warning("job %s (%s) marked failed: %s (message %s)", result.request_id, result.name, result.error,
                        mid)
        return changed

    def _remember(self, mid: str) -> None:
        self._marked[mid] = None
        while len(self._marked) > MARKED_MEMORY:
            del self._marked[next(iter(self._marked))]

    def drain(self, url: str) -> int:
        """Record every visible result in the job store, then delete it; returns how many."""
        recorded = 0
        for _ in range(DRAIN_ROUNDS):
            msgs = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                            MessageAttributeNames=["All"]).get("Messages", [])
            if not msgs:
                break
            done = []
            for msg in msgs:
                try:
                    if not recorded_by_worker(msg):  # the worker recorded it already
                        self.store.complete(ImageResult.from_json(msg.get("Body", "")))
                    recorded += 1
                except BadMessage as err:
                    log.warning("dropping garbled message %s on %s: %s", msg.get("MessageId"),
                                url.rpartition("/")[2], err)
                except STORE_ERRORS as err:
                    log.error("cannot record result in message %s: %s; it stays", msg.get("MessageId"), err)
                    continue
                done.append(msg)
            if done:
                self.sqs.delete_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)])
        return recorded
