"""The host inference gate: at most N holders (a further entrant queues), and a killed holder frees its slot.

Holders are forked children that say when they hold a slot and release it when told (pipes, no sleeps);
the slots' state is read directly with non-blocking ``flock`` probes. How long a waiter waits is printed
by tests/bench/bench_gate.py.
"""

import fcntl
import os
import signal
import threading

import pytest

from infra.local.gate import HostGate
from tests.helpers import wait_until


class Holder:
    """A forked child that enters the gate, reports it, and leaves when told (or dies when killed)."""

    def __init__(self, gate: HostGate):
        held_r, held_w = os.pipe()
        self._go_r, self._go_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(held_r)
            os.close(self._go_w)  # so that the parent's death reads as EOF below
            with gate:
                os.write(held_w, b"1")
                os.read(self._go_r, 1)  # until the parent says go (or dies: EOF)
            os._exit(0)
        os.close(held_w)
        os.close(self._go_r)
        self._held_r = held_r

    def wait_holding(self) -> None:
        assert os.read(self._held_r, 1) == b"1", "the holder exited without entering the gate"

    def release(self) -> int:
        os.write(self._go_w, b"1")
        return self.reap()

    def kill(self) -> int:
        os.kill(self.pid, signal.SIGKILL)
        return self.reap()

    def reap(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        for fd in (self._held_r, self._go_w):
            os.close(fd)
        self.pid = 0
        return os.waitstatus_to_exitcode(status)


@pytest.fixture
def holders():
    """Make holders; any still alive at the end is killed, pass or fail."""
    made: list[Holder] = []

    def make(gate: HostGate) -> Holder:
        made.append(Holder(gate))
        return made[-1]

    yield make
    for h in made:
        if h.pid:
            h.kill()


def free_slots(gate: HostGate) -> int:
    """Slots nobody holds, probed through fresh file descriptions (flock conflicts between them)."""
    free = 0
    for path in sorted(gate.directory.glob("slot-*.lock")):
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            free += 1
        except BlockingIOError:
            pass
        finally:
            os.close(fd)  # closing drops a probe's lock
    return free


def blocked_waiters(gate: HostGate) -> int:
    """Entrants the kernel has queued on one of the gate's slots (``->`` lines of /proc/locks)."""
    inodes = {f":{path.stat().st_ino} " for path in gate.directory.glob("slot-*.lock")}
    with open("/proc/locks") as locks:
        return sum(1 for line in locks if " -> " in line and any(i in line for i in inodes))


def enter_in_thread(gate: HostGate) -> tuple[threading.Thread, threading.Event, threading.Event]:
    """``with gate`` in a thread; ``entered`` is set inside the block, ``leave`` ends it."""
    entered, leave = threading.Event(), threading.Event()

    def run():
        with gate:
            entered.set()
            leave.wait(30)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, entered, leave


def test_gate_admits_at_most_its_slots(tmp_path, holders):
    gate = HostGate(tmp_path, 2)
    two = [holders(gate) for _ in range(2)]
    for h in two:
        h.wait_holding()
    assert free_slots(gate) == 0  # two holders, two slots: nothing left for a third
    thread, entered, leave = enter_in_thread(gate)
    try:
        wait_until(lambda: blocked_waiters(gate) == 1, 10, interval=0.01, what="the third entrant to queue")
        assert not entered.is_set()
        for h in two:
            assert h.release() == 0
        wait_until(entered.is_set, 10, interval=0.01, what="the waiter to get a freed slot")
        assert free_slots(gate) == 1  # the waiter holds exactly one
    finally:
        leave.set()
        thread.join(10)
    assert free_slots(gate) == 2 and blocked_waiters(gate) == 0


def test_a_killed_holder_frees_its_slot(tmp_path, holders):
    gate = HostGate(tmp_path, 1)
    holder = holders(gate)
    holder.wait_holding()
    assert free_slots(gate) == 0
    assert holder.kill() == -signal.SIGKILL
    assert free_slots(gate) == 1  # the kernel dropped the dead holder's flock
    thread, entered, leave = enter_in_thread(gate)
    wait_until(entered.is_set, 10, interval=0.01, what="entry after the holder was killed")
    leave.set()
    thread.join(10)
