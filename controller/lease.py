"""One acting controller per stack, whatever the number of web processes or instances.

A lease is one conditional item in the stack's DynamoDB table (``lease:controller``),
in the manner of the DynamoDB lock client: the holder rewrites it with a fresh
record version number (``rvn``) every third of the lease; a contender that has
seen the *same* rvn for a whole lease duration, by its own clock, takes it over
with a write conditional on that rvn. No clocks are compared across hosts: the
holder stops acting ``duration - margin`` after it *began* its last successful
write, which is before any contender can have started counting, so two
controllers never act at once. ``decide`` is pure; ``Lease`` is the thin actuation.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, replace
from enum import StrEnum

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

LEASE_ID = "lease:controller"
SAFETY_MARGIN = 0.2  # of the duration: the holder stops this much before a contender may start
RENEW_EVERY = 1 / 3  # of the duration


class LeaseAction(StrEnum):
    CREATE = "create"  # no lease item: make one
    RENEW = "renew"  # ours: rewrite it with a new rvn
    TAKEOVER = "takeover"  # another's, unchanged for a whole duration: its holder is gone
    WAIT = "wait"  # ours and fresh, or another's and still changing


@dataclass(frozen=True)
class LeaseView:
    """The lease item as read: no item is ``LeaseView(None, None)``."""

    owner: str | None
    rvn: str | None


@dataclass(frozen=True)
class LeaseMemory:
    """What one contender remembers between ticks (monotonic seconds)."""

    held_rvn: str | None = None  # the rvn we last wrote successfully
    held_from: float | None = None  # when that write began
    seen_rvn: str | None = None  # another holder's rvn
    seen_since: float | None = None  # when we first saw that rvn


def is_leader(mem: LeaseMemory, now: float, duration: float) -> bool:
    return mem.held_from is not None and now - mem.held_from < duration * (1 - SAFETY_MARGIN)


def decide(view: LeaseView, mem: LeaseMemory, me: str, now: float, duration: float) -> tuple[LeaseAction, LeaseMemory]:
    """What to do about the lease now, and the memory to keep (pure)."""
    if view.rvn is None:
        return LeaseAction.CREATE, LeaseMemory()
    if view.owner == me and view.rvn == mem.held_rvn:
        if mem.held_from is not None and now - mem.held_from < duration * RENEW_EVERY:
            return LeaseAction.WAIT, mem
        return LeaseAction.RENEW, mem
    # Another's (or ours from before a lost renewal): wait until it has stood still for a duration.
    if view.rvn != mem.seen_rvn or mem.seen_since is None:
        return LeaseAction.WAIT, LeaseMemory(seen_rvn=view.rvn, seen_since=now)
    if now - mem.seen_since >= duration:
        return LeaseAction.TAKEOVER, replace(mem, held_rvn=None, held_from=None)
    return LeaseAction.WAIT, replace(mem, held_rvn=None, held_from=None)


class Lease:
    """The controller lease on one DynamoDB table; ``tick()`` says whether this process may act now."""

    def __init__(self, dynamodb, table: str, duration_s: float, *, owner: str | None = None, clock=time.monotonic):
        self.db = dynamodb
        self.table = table
        self.duration = duration_s
        self.owner = owner or uuid.uuid4().hex
        self.clock = clock
        self.mem = LeaseMemory()
        self._was_leader = False

    def read(self) -> LeaseView:
        item = self.db.get_item(TableName=self.table, Key={"id": {"S": LEASE_ID}}, ConsistentRead=True).get("Item")
        if not item:
            return LeaseView(None, None)
        return LeaseView(item.get("owner", {}).get("S"), item.get("rvn", {}).get("S"))

    def _write(self, condition: str, values: dict | None = None, names: dict | None = None) -> bool:
        rvn = uuid.uuid4().hex
        started = self.clock()
        extra = {}
        if values:
            extra["ExpressionAttributeValues"] = values
        if names:
            extra["ExpressionAttributeNames"] = names
        try:
            self.db.put_item(TableName=self.table, ConditionExpression=condition,
                             Item={"id": {"S": LEASE_ID}, "owner": {"S": self.owner}, "rvn": {"S": rvn},
                                   "duration_s": {"N": str(self.duration)}}, **extra)
        except ClientError as err:
            if err.response["Error"]["Code"] == "ConditionalCheckFailedException":
                self.mem = LeaseMemory()
                return False
            raise
        self.mem = LeaseMemory(held_rvn=rvn, held_from=started)
        return True

    def tick(self) -> bool:
        """Renew, acquire or wait; True while this process holds a valid lease."""
        now = self.clock()
        try:
            if self.mem.held_rvn is not None and is_leader(self.mem, now, self.duration):
                view = LeaseView(self.owner, self.mem.held_rvn)  # ours and valid: no read needed
            else:
                view = self.read()
            action, self.mem = decide(view, self.mem, self.owner, now, self.duration)
            if action is LeaseAction.CREATE:
                self._write("attribute_not_exists(id)")
            elif action is LeaseAction.RENEW:
                self._write("#o = :me AND rvn = :rvn", {":me": {"S": self.owner}, ":rvn": {"S": view.rvn}},
                            {"#o": "owner"})
            elif action is LeaseAction.TAKEOVER:
                self._write("rvn = :rvn", {":rvn": {"S": view.rvn}})
        except (ClientError, BotoCoreError) as err:
            log.warning("controller lease on %s: %s; acting only while the lease held so far lasts", self.table, err)
        leader = is_leader(self.mem, self.clock(), self.duration)
        if leader != self._was_leader:
            log.info("controller %s %s the lease on %s", self.owner[:8], "holds" if leader else "does not hold",
                     self.table)
            self._was_leader = leader
        return leader

    def confirm(self) -> bool:
        """Still ours, right now? A consistent read of the item: the same owner *and* the same version we last
        wrote, and our own clock still inside it. The loop asks this immediately before every EC2 call, so a
        controller that lost the lease mid-actuation (a slow reaper pass, a long launch) stops at once instead
        of acting on for the rest of its tick beside the one that took over."""
        if not is_leader(self.mem, self.clock(), self.duration):
            return False
        try:
            view = self.read()
        except (ClientError, BotoCoreError) as err:
            log.warning("controller lease on %s unreadable before an EC2 call (%s): not acting", self.table, err)
            return False
        if view.owner != self.owner or view.rvn != self.mem.held_rvn:
            log.warning("controller %s lost the lease on %s (now %s, version %s): stopping this actuation",
                        self.owner[:8], self.table, (view.owner or "nobody")[:8], (view.rvn or "-")[:8])
            self.mem = LeaseMemory()
            self._was_leader = False
            return False
        return True

    def release(self) -> None:
        """Clean stop: hand the lease back at once (only if it is still ours)."""
        if self.mem.held_rvn is None:
            return
        try:
            self.db.delete_item(TableName=self.table, Key={"id": {"S": LEASE_ID}}, ConditionExpression="rvn = :rvn",
                                ExpressionAttributeValues={":rvn": {"S": self.mem.held_rvn}})
            log.info("controller %s released the lease on %s", self.owner[:8], self.table)
        except (ClientError, BotoCoreError) as err:
            log.info("controller %s could not release the lease on %s (%s); it expires", self.owner[:8], self.table,
                     err)
        self.mem = LeaseMemory()
