"""One acting controller per stack: the lease's pure decision (table-driven), two contenders on the
moto server under a shared fake clock (never two leaders at once, takeover only after the holder
stops), and two real `python -m controller` processes (one acts; kill it and the other takes over)."""

from __future__ import annotations

import random
import signal

import pytest

from controller.lease import LEASE_ID, Lease, LeaseAction, LeaseMemory, LeaseView, decide, is_leader
from controller.reaper import ReapAction, ReplyQueueView
from controller.reaper import decide as reap
from infra.observe import QueueDepth, app_instances
from infra.tags import HEARTBEAT_TAG, OWNER_TAG, STACK_TAG
from tests.procs import log_text, start_module, stop_process, wait_for

D = 10.0
ME, OTHER = "me", "other"
HELD = LeaseMemory(held_rvn="r1", held_from=100.0)


@pytest.mark.parametrize("view, mem, now, action", [
    (LeaseView(None, None), LeaseMemory(), 0.0, LeaseAction.CREATE),
    (LeaseView(ME, "r1"), HELD, 101.0, LeaseAction.WAIT),  # ours, fresh
    (LeaseView(ME, "r1"), HELD, 104.0, LeaseAction.RENEW),  # over a third gone: renew
    (LeaseView(OTHER, "r9"), LeaseMemory(), 50.0, LeaseAction.WAIT),  # first sight: start counting
    (LeaseView(OTHER, "r9"), LeaseMemory(seen_rvn="r9", seen_since=50.0), 50 + D - 0.01, LeaseAction.WAIT),
    (LeaseView(OTHER, "r9"), LeaseMemory(seen_rvn="r9", seen_since=50.0), 50 + D, LeaseAction.TAKEOVER),
    (LeaseView(OTHER, "r10"), LeaseMemory(seen_rvn="r9", seen_since=50.0), 80.0, LeaseAction.WAIT),  # renewed
    (LeaseView(OTHER, "r2"), HELD, 105.0, LeaseAction.WAIT),  # taken from us: count like anyone
])
def test_lease_decision(view, mem, now, action):
    assert decide(view, mem, ME, now, D)[0] is action


def test_a_holder_stops_acting_before_anyone_may_take_over():
    assert is_leader(HELD, 100 + 0.79 * D, D) and not is_leader(HELD, 100 + 0.8 * D, D)
    assert not is_leader(LeaseMemory(), 0.0, D)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_two_contenders_never_lead_at_once(stack, clients):
    """Random interleavings, pauses of the holder (a stalled process) and restarts, on the real table."""
    clock = Clock()
    a, b = (Lease(clients.dynamodb, stack.jobs_table, D, owner=o, clock=clock) for o in ("ctl-a", "ctl-b"))
    rng = random.Random(7)
    leaders, paused = [], None
    for step in range(220):
        clock.t += rng.choice((0.3, 1.0, 2.0))
        if step % 50 == 10:  # the holder stalls for 1.5 leases
            paused = next((x for x in (a, b) if is_leader(x.mem, clock.t, D)), None)
            resume_at = clock.t + 1.5 * D
        if paused is not None and clock.t >= resume_at:
            paused = None
        for lease in (a, b):
            if lease is not paused:
                lease.tick()
        now_leaders = [x.owner for x in (a, b) if is_leader(x.mem, clock.t, D)]
        assert len(now_leaders) <= 1, f"two leaders at step {step}"
        leaders.append(now_leaders[0] if now_leaders else None)
    assert {"ctl-a", "ctl-b"} <= set(leaders), "the lease never changed hands after a stall"
    assert leaders.count(None) < len(leaders) // 3  # and someone leads most of the time
    holder = a if is_leader(a.mem, clock.t, D) else b
    holder.release()
    other = b if holder is a else a
    clock.t += 0.1
    assert other.tick()  # a released lease is free at once
    item = clients.dynamodb.get_item(TableName=stack.jobs_table, Key={"id": {"S": LEASE_ID}})["Item"]
    assert item["owner"]["S"] == other.owner


def test_two_controller_processes_one_acts_and_the_other_takes_over(stack, clients, tmp_path):
    settings = stack.replace(min_instances=2, max_instances=4, controller_lease_s=3.0, poll_interval_s=0.3)
    procs = [start_module("controller", settings, log_path=tmp_path / f"ctl{i}.log") for i in (1, 2)]
    try:
        wait_for(lambda: len(app_instances(clients.ec2, settings)) >= 2, 60, what="min fleet")
        holder = wait_for(lambda: next((p for p in procs if "holds the lease" in log_text(p)), None), 30,
                          what="a lease holder")
        other = procs[1] if holder is procs[0] else procs[0]
        wait_for(lambda: len(app_instances(clients.ec2, settings)) == 2, 10, what="exactly the min fleet")
        assert "launched" not in log_text(other)  # the standby never acted
        assert len(app_instances(clients.ec2, settings)) == 2  # not 4: two never launched at once
        holder.send_signal(signal.SIGKILL)  # no release: the other must wait the lease out
        holder.wait(10)
        victim = app_instances(clients.ec2, settings)[0].id
        clients.ec2.terminate_instances(InstanceIds=[victim])
        wait_for(lambda: "holds the lease" in log_text(other), 30, what="takeover")
        wait_for(lambda: len(app_instances(clients.ec2, settings)) == 2
                 and victim not in {i.id for i in app_instances(clients.ec2, settings)}, 30,
                 what="the new holder restoring the min fleet")
        assert "launched" in log_text(other)
    finally:
        for p in procs:
            stop_process(p)


FRESH = {STACK_TAG: "st", OWNER_TAG: "host:1:ab", HEARTBEAT_TAG: "1000"}
DEAD = {STACK_TAG: "st", OWNER_TAG: "host:1:ab", HEARTBEAT_TAG: "900"}
GONE = {STACK_TAG: "st"}  # owner tags removed at a clean stop


@pytest.mark.parametrize("tags, depth, shared, quiet_for, action", [
    (FRESH, QueueDepth(5, 0), False, 60.0, ReapAction.KEEP),  # alive: never touched
    (DEAD, QueueDepth(5, 0), False, None, ReapAction.DRAIN),  # results nobody reads: record them
    (DEAD, QueueDepth(0, 2), False, 60.0, ReapAction.KEEP),  # a dead dispatcher's messages come back soon
    (DEAD, QueueDepth(0, 0), False, None, ReapAction.KEEP),  # requests may still name it
    (DEAD, QueueDepth(0, 0), False, 5.0, ReapAction.KEEP),  # not quiet long enough
    (DEAD, QueueDepth(0, 0), False, 10.0, ReapAction.DELETE),
    (GONE, QueueDepth(0, 0), False, 10.0, ReapAction.DELETE),
    (DEAD, QueueDepth(3, 0), True, 10.0, ReapAction.DRAIN),  # the shared queue's holder died: drained
    (DEAD, QueueDepth(0, 0), True, 99.0, ReapAction.KEEP),  # ... and never deleted
    (GONE, QueueDepth(3, 0), True, 10.0, ReapAction.KEEP),  # released (or never held): the next holder reads it
    ({**DEAD, STACK_TAG: "other"}, QueueDepth(3, 0), False, 99.0, ReapAction.KEEP),  # not ours
])
def test_reaper_decision(tags, depth, shared, quiet_for, action):
    view = ReplyQueueView("q", tags, depth, shared=shared)
    assert reap(view, prefix="st", now=1000.0, stale_s=60.0, quiet_for=quiet_for, min_quiet_s=10.0) is action
