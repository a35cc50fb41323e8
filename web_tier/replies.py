"""This web process's reply queue: made at start, named in every request, beaten, removed at a clean stop.

AWS's request-response pattern for SQS: one reply queue per producer, never shared,
the request id as correlation id. With ``IMGREC_REPLY_QUEUE=shared`` (the default,
and what `make run` gives its first web process) the process answers from the
course's ``<prefix>-resp-queue``, unless another live process already holds it;
otherwise it makes ``<prefix>-reply-<id>``, tagged with the stack, its owner and a
heartbeat, encrypted like every queue. A heartbeat thread re-tags the queue every
``IMGREC_REPLY_HEARTBEAT`` seconds; the controller drains and removes a reply queue
whose heartbeat has gone stale (``controller/reaper.py``).

The shared queue is claimed with a conditional item in the job table (``SharedClaim``),
not by reading its tags and then tagging it: every deployed web instance has the same
settings, and instances booting together all read "unowned" before any wrote its tag.
The condition makes exactly one of them the holder; the heartbeat renews the item (and
the tags, which the reaper reads), and a holder silent for the stale period may be
replaced. That compares the holder's clock with the contender's, as the heartbeat tags
always have; NTP keeps them within far less than the 6 beats (60 s) allowed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from botocore.exceptions import BotoCoreError, ClientError

from infra.config import Settings
from infra.messages import reply_queue_name
from infra.observe import queue_depth, queue_url
from infra.provision import reply_queue_attributes
from infra.tags import HEARTBEAT_TAG, OWNER_TAG, ROLE_TAG, STACK_TAG

log = logging.getLogger(__name__)

REPLY_ROLE = "reply"


def new_owner() -> str:
    """Who answers from a reply queue: host, pid and a token (pids repeat across hosts and restarts)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


CLAIM_PREFIX = "reply-claim:"  # the claim item's id: never a job id (':'), never the lease's


class SharedClaim:
    """Who answers from the shared response queue: one conditional item in the job table."""

    def __init__(self, dynamodb, table: str, queue: str, owner: str, stale_s: float, clock=time.time):
        self.db, self.table, self.owner, self.stale_s, self.clock = dynamodb, table, owner, stale_s, clock
        self.key = {"id": {"S": f"{CLAIM_PREFIX}{queue}"}}

    def _now(self) -> dict:
        return {"N": f"{self.clock():.3f}"}

    def acquire(self) -> str | None:
        """Take the claim if nobody live holds it; None on success, else the live holder."""
        try:
            self.db.put_item(TableName=self.table, Item={**self.key, "owner": {"S": self.owner}, "beat_at": self._now()},
                             ConditionExpression="attribute_not_exists(id) OR #o = :me OR beat_at < :stale",
                             ExpressionAttributeNames={"#o": "owner"},
                             ExpressionAttributeValues={":me": {"S": self.owner},
                                                        ":stale": {"N": f"{self.clock() - self.stale_s:.3f}"}})
            return None
        except ClientError as err:
            if err.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
        item = self.db.get_item(TableName=self.table, Key=self.key, ConsistentRead=True).get("Item", {})
        return item.get("owner", {}).get("S", "another web process")

    def renew(self) -> bool:
        """Refresh our heartbeat; False when the claim is no longer ours (we were taken for dead)."""
        try:
            self.db.update_item(TableName=self.table, Key=self.key, UpdateExpression="SET beat_at = :now",
                                ConditionExpression="#o = :me", ExpressionAttributeNames={"#o": "owner"},
                                ExpressionAttributeValues={":me": {"S": self.owner}, ":now": self._now()})
            return True
        except ClientError as err:
            if err.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise

    def release(self) -> None:
        try:
            self.db.delete_item(TableName=self.table, Key=self.key, ConditionExpression="#o = :me",
                                ExpressionAttributeNames={"#o": "owner"},
                                ExpressionAttributeValues={":me": {"S": self.owner}})
        except ClientError as err:
            if err.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise


class ReplyQueue:
    """Opens, heartbeats and closes this process's reply queue; ``url`` is what requests name."""

    def __init__(self, settings: Settings, sqs, dynamodb, owner: str | None = None, clock=time.time):
        self.settings = settings
        self.sqs = sqs
        self.owner = owner or new_owner()
        self.clock = clock
        self.claim = SharedClaim(dynamodb, settings.jobs_table, settings.resp_queue, self.owner,
                                 settings.reply_stale_s, clock)
        self.url: str | None = None
        self.shared = False
        self.claim_lost = False  # the shared queue's claim went to another process: make our own
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return "" if self.url is None else self.url.rpartition("/")[2]

    def open(self) -> str:
        """Claim the shared response queue or make our own; returns its URL."""
        if self.settings.reply_queue == "shared" and not self.claim_lost and self._claim_shared():
            return self.url
        name = reply_queue_name(self.settings.prefix, uuid.uuid4().hex[:12])
        tags = {STACK_TAG: self.settings.prefix, ROLE_TAG: REPLY_ROLE, OWNER_TAG: self.owner,
                HEARTBEAT_TAG: self._now()}
        try:
            self.url = self.sqs.create_queue(QueueName=name, Attributes=reply_queue_attributes(self.settings),
                                             tags=tags)["QueueUrl"]
        except ClientError:
            log.error("create_queue %s for web process %s failed", name, self.owner)
            raise
        self.shared = False
        log.info("reply queue %s made for web process %s", name, self.owner)
        return self.url

    def _claim_shared(self) -> bool:
        url = queue_url(self.sqs, self.settings.resp_queue)
        holder = self.claim.acquire()
        if holder is not None:
            log.warning("response queue %s is held by live web process %s; web process %s makes its own",
                        self.settings.resp_queue, holder, self.owner)
            return False
        self.sqs.tag_queue(QueueUrl=url, Tags={OWNER_TAG: self.owner, HEARTBEAT_TAG: self._now()})
        self.url, self.shared = url, True
        log.info("web process %s answers from the shared response queue %s", self.owner, self.settings.resp_queue)
        return True

    def _now(self) -> str:
        return f"{self.clock():.0f}"

    def beat(self) -> None:
        try:
            if self.shared and not self.claim.renew():
                log.error("web process %s lost its claim on the shared response queue %s (taken for dead); "
                          "it makes its own reply queue", self.owner, self.name)
                self.claim_lost = True
                return
            self.sqs.tag_queue(QueueUrl=self.url, Tags={HEARTBEAT_TAG: self._now()})
        except (ClientError, BotoCoreError) as err:
            log.warning("heartbeat on reply queue %s (web process %s) failed: %s", self.name, self.owner, err)

    def start_heartbeat(self) -> ReplyQueue:
        if self._thread is not None:
            return self

        def loop():
            while not self._stop.wait(self.settings.reply_heartbeat_s):
                self.beat()

        self._thread = threading.Thread(target=loop, name="reply-heartbeat", daemon=True)
        self._thread.start()
        return self

    def close(self, outstanding: int = 0) -> None:
        """Clean stop. Our own queue is deleted when no request that names it is still out;
        otherwise (and always for the shared queue) the owner tags go, so the controller's
        reaper persists what still arrives and deletes the queue once nothing can (AWS
        accepts sends to a deleted queue for up to 60 s, and those would be lost)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.url is None or (self.shared and self.claim_lost):
            return  # nothing made, or the shared queue is another process's now
        try:
            if not self.shared and outstanding == 0 and queue_depth(self.sqs, self.url).backlog == 0:
                self.sqs.delete_queue(QueueUrl=self.url)
                log.info("reply queue %s deleted (web process %s stopped)", self.name, self.owner)
                return
            self.sqs.untag_queue(QueueUrl=self.url, TagKeys=[OWNER_TAG, HEARTBEAT_TAG])
            if self.shared:
                self.claim.release()
            log.info("reply queue %s handed to the controller's reaper (web process %s stopped, %d requests out)",
                     self.name, self.owner, outstanding)
        except (ClientError, BotoCoreError) as err:
            log.warning("could not release reply queue %s of web process %s: %s; the controller reaps it",
                        self.name, self.owner, err)
