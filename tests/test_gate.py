"""The host inference gate: at most N holders, and a killed holder frees its slot."""

import os
import signal
import time

from infra.local.gate import HostGate


def _child_holds(gate: HostGate, seconds: float) -> int:
    pid = os.fork()
    if pid == 0:
        with gate:
            time.sleep(seconds)
        os._exit(0)
    return pid


def test_gate_admits_at_most_its_slots(tmp_path):
    gate = HostGate(tmp_path, 2)
    holders = [_child_holds(gate, 1.0) for _ in range(2)]
    time.sleep(0.3)
    started = time.monotonic()
    with gate:  # both slots are held by the children: this waits for one to finish
        waited = time.monotonic() - started
    for pid in holders:
        os.waitpid(pid, 0)
    assert waited > 0.4


def test_a_killed_holder_frees_its_slot(tmp_path):
    gate = HostGate(tmp_path, 1)
    pid = _child_holds(gate, 60)
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    started = time.monotonic()
    with gate:
        pass
    assert time.monotonic() - started < 1.0
