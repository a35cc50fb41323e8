"""The local supervisor's bookkeeping against real moto instances and real processes.

The reconcile tests give ``Supervisor`` a spawn function that starts a plain
sleeping Python process (optionally one that ignores SIGTERM), so start, stop,
replacement, escalation and reaping are checked in a second each, without the
model. The last test runs ``python -m infra.local.supervisor`` with real workers and
checks that Ctrl-C leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

import psutil
import pytest

from controller.actuator import Ec2Actuator
from infra.local.supervisor import ChildState, Supervisor
from tests.helpers import describe, wait_until
from tests.procs import log_text, start_module, stop_process, wait_for

SLEEPER = "import signal, time; {}; time.sleep(120)"


class Spawner:
    """Starts sleeper processes; remembers them so the test can clean up whatever happens."""

    def __init__(self, ignore_term: bool = False):
        self.ignore_term = ignore_term
        self.procs: list[subprocess.Popen] = []

    def __call__(self, instance_id: str) -> int:
        setup = "signal.signal(signal.SIGTERM, signal.SIG_IGN)" if self.ignore_term else "pass"
        proc = subprocess.Popen([sys.executable, "-c", SLEEPER.format(setup)])
        self.procs.append(proc)
        return proc.pid

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def spawner():
    made = []

    def make(ignore_term: bool = False) -> Spawner:
        made.append(Spawner(ignore_term))
        return made[-1]

    yield make
    for s in made:
        s.cleanup()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def settle(sup: Supervisor, until, timeout: float = 10.0):
    """Tick like the real loop until ``until()`` holds."""
    def ticked():
        sup.tick()
        return until()

    wait_until(ticked, timeout, interval=0.05, what=f"the supervisor to settle: {describe(until)}")


class FakeClock:
    """The supervisor's clock, moved by the test: grace periods and back-off without waiting them out."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def ignores_sigterm(pid: int) -> bool:
    """The process has installed SIG_IGN for SIGTERM (its SigIgn mask in /proc)."""
    with open(f"/proc/{pid}/status") as status:
        mask = next(int(line.split()[1], 16) for line in status if line.startswith("SigIgn:"))
    return bool(mask & (1 << (signal.SIGTERM - 1)))


def has_exited(pid: int) -> bool:
    """Our child ``pid`` has exited (left unreaped for the supervisor to collect, or collected already)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True  # the supervisor reaped it


def test_one_worker_per_running_instance_started_stopped_and_replaced(settings, clients, spawner):
    spawn = spawner()
    sup = Supervisor(settings, clients.ec2, spawn, grace_s=5)
    act = Ec2Actuator(clients.ec2, settings)
    a, b = act.launch(2)
    sup.tick()
    assert set(sup.serving) == {a, b} and len(spawn.procs) == 2
    sup.tick()
    assert len(spawn.procs) == 2  # no duplicates on later ticks

    pid_a = sup.serving[a].pid
    act.remove([a])
    sup.tick()
    assert a not in sup.serving and sup.draining[pid_a].state == ChildState.STOPPING
    settle(sup, lambda: not sup.draining)  # SIGTERM ended it; reaped
    assert not alive(pid_a)

    pid_b = sup.serving[b].pid
    os.kill(pid_b, signal.SIGKILL)
    settle(sup, lambda: b in sup.serving and sup.serving[b].pid != pid_b)
    assert sup.replaced == 1 and alive(sup.serving[b].pid)

    sup.stop_all(timeout=5)
    assert not sup.serving and not sup.draining
    assert not any(alive(p.pid) for p in spawn.procs)  # all ended and reaped: no zombies


def test_stubborn_worker_gets_a_second_sigterm_then_sigkill(settings, clients, spawner, caplog):
    caplog.set_level(logging.INFO, logger="infra.local.supervisor")
    spawn = spawner(ignore_term=True)
    clock = FakeClock()
    sup = Supervisor(settings, clients.ec2, spawn, grace_s=0.3, kill_after_s=0.3, clock=clock)
    act = Ec2Actuator(clients.ec2, settings)
    (iid,) = act.launch(1)
    sup.tick()
    pid = sup.serving[iid].pid
    wait_until(lambda: ignores_sigterm(pid), 10, interval=0.02, what="the worker to install its SIG_IGN")
    act.remove([iid])
    sup.tick()
    assert sup.draining[pid].state == ChildState.STOPPING
    clock.advance(0.2)
    sup.tick()
    assert sup.draining[pid].state == ChildState.STOPPING  # still inside the grace period
    clock.advance(0.2)
    sup.tick()
    assert sup.draining[pid].state == ChildState.FORCING and alive(pid)
    clock.advance(0.4)
    settle(sup, lambda: not sup.draining, timeout=5)
    assert not alive(pid)
    assert f"worker pid {pid} (instance {iid}) ignored two SIGTERMs: SIGKILL" in caplog.text
    assert f"worker pid {pid} (instance {iid}) exited with -9" in caplog.text


def test_warm_pool_stop_and_start_follow_the_instance(settings, clients, spawner):
    spawn = spawner()
    sup = Supervisor(settings, clients.ec2, spawn, grace_s=5)
    act = Ec2Actuator(clients.ec2, settings, warm_pool=True)
    (iid,) = act.launch(1)
    sup.tick()
    first = sup.serving[iid].pid
    act.remove([iid])  # stop_instances
    settle(sup, lambda: iid not in sup.serving and not sup.draining)
    assert not alive(first)
    assert act.launch(1) == [iid]  # start_instances on the stopped one
    settle(sup, lambda: iid in sup.serving)
    assert sup.serving[iid].pid != first
    sup.stop_all(timeout=5)


def test_crash_loop_backs_off(settings, clients, caplog):
    procs = []

    def dies_at_once(_iid: str) -> int:
        procs.append(subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]))
        return procs[-1].pid

    clock = FakeClock(0.0)
    started_at = []

    def spawn(iid: str) -> int:
        started_at.append(clock())
        return dies_at_once(iid)

    sup = Supervisor(settings, clients.ec2, spawn, clock=clock)
    Ec2Actuator(clients.ec2, settings).launch(1)
    for step in range(61):  # 3 s of the real loop's 0.05 s ticks; each tick sees the last start's death
        clock.now = step / 20
        if procs:
            wait_until(lambda: has_exited(procs[-1].pid), 10, interval=0.02, what="the worker to die")
        sup.tick()
    sup.stop_all(timeout=2)
    # immediate retry, then 1 s, then 2 s: 3 starts in 3 s rather than ~60
    assert len(procs) == 3, started_at
    assert started_at[1] - started_at[0] == pytest.approx(0.05)  # replaced on the next tick
    assert started_at[2] - started_at[1] == pytest.approx(1.05)  # seen dead a tick later, then 1 s back-off
    assert caplog.text.count("died (exit 3)") == len(procs)
    assert not any(alive(p.pid) for p in procs)


@pytest.mark.slow
def test_real_supervisor_runs_real_workers_and_ctrl_c_leaves_nothing(stack, clients, tmp_path):
    sup = start_module("infra.local.supervisor", stack, log_path=tmp_path / "supervisor.log")
    try:
        wait_for(lambda: "ready in" in log_text(sup) or sup.poll() is not None, 90, what="model load")
        ids = Ec2Actuator(clients.ec2, stack).launch(2)
        children = wait_for(lambda: len(psutil.Process(sup.pid).children()) == 2 and psutil.Process(sup.pid).children(),
                            20, what="two workers")
        wait_for(lambda: log_text(sup).count(" ready: model") == 2, 20, what="workers ready")
        for iid in ids:
            assert f"instance {iid} running: worker pid" in log_text(sup)
        sup.send_signal(signal.SIGINT)  # Ctrl-C, to the supervisor alone: it must stop its workers itself
        assert sup.wait(40) == 0
        assert not any(alive(c.pid) for c in children), log_text(sup)
        assert "exited with 0" in log_text(sup)
    finally:
        stop_process(sup)
