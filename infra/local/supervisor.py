"""The local backend: one worker process per running moto app-tier instance.

On AWS an instance boots and runs the worker itself; locally the moto instance is
only a record, so this supervisor makes it real. It watches ``describe_instances``
(the same view a grader or the console has) and keeps exactly one worker process
per running app-tier instance: it starts one when an instance is running, sends
SIGTERM when the instance is stopping, stopped or terminated (again, then SIGKILL,
after a grace period), and replaces a worker that died while its instance runs.

Scale-out must be cheap on a 2-core host, so the model is loaded once here and
each worker is ``os.fork()``ed from this process: a new instance serves in tens of
milliseconds instead of paying the import-torch-and-load-weights cost again, and
the weights are shared copy-on-write. This process never runs multi-threaded
torch (unsafe to fork after) and never starts threads of its own. With the onnx
runtime the parent only verifies the artifact; each child creates its own ORT
session after the fork (``Classifier.open`` in the worker).
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from infra.config import Settings
from infra.observe import FleetReader, InstanceState
from infra.process import settings_and_logging

log = logging.getLogger(__name__)

DEFAULT_POLL_S = 0.25
DEFAULT_GRACE_S = 30.0
KILL_AFTER_S = 5.0  # after the second SIGTERM
CRASH_WINDOW_S = 5.0  # a worker that dies this soon after its start counts as a crash loop
MAX_BACKOFF_S = 30.0
DEFAULT_SPARES = 2


class ChildState(StrEnum):
    SERVING = "serving"
    STOPPING = "stopping"  # first SIGTERM sent
    FORCING = "forcing"  # second SIGTERM sent; SIGKILL next


@dataclass
class Child:
    instance_id: str
    pid: int
    started_at: float
    state: ChildState = ChildState.SERVING
    signalled_at: float = 0.0


@dataclass
class Backoff:
    failures: int = 0
    not_before: float = 0.0


@dataclass
class Supervisor:
    """Reconciles worker processes with the instances; ``spawn(instance_id) -> pid`` makes one."""

    settings: Settings
    ec2: object
    spawn: Callable[[str], int]
    grace_s: float = DEFAULT_GRACE_S
    kill_after_s: float = KILL_AFTER_S
    clock: Callable[[], float] = time.monotonic
    serving: dict[str, Child] = field(default_factory=dict)  # instance id -> its worker
    draining: dict[int, Child] = field(default_factory=dict)  # pid -> a worker told to stop
    backoff: dict[str, Backoff] = field(default_factory=dict)
    replaced: int = 0

    def __post_init__(self) -> None:
        self._fleet = FleetReader(self.ec2, self.settings)

    def tick(self) -> None:
        self.reap()
        try:
            fleet = self._fleet.read()
        except (ClientError, BotoCoreError) as err:
            log.warning("cannot list app-tier instances (%s); workers left as they are", err)
            fleet = None
        if fleet is not None:
            self.reconcile({i.id for i in fleet if i.state == InstanceState.RUNNING})
        self.escalate()

    def reconcile(self, running: set[str]) -> None:
        now = self.clock()
        for iid in sorted(set(self.serving) - running):
            child = self.serving.pop(iid)
            log.info("instance %s is no longer running: SIGTERM to its worker pid %d", iid, child.pid)
            self._signal(child, signal.SIGTERM, ChildState.STOPPING, now)
            self.draining[child.pid] = child
        for iid in sorted(running - set(self.serving)):
            if self.backoff.get(iid, Backoff()).not_before > now:
                continue
            started = time.monotonic()
            try:
                pid = self.spawn(iid)
            except OSError as err:
                log.error("cannot start a worker for instance %s: %s", iid, err)
                continue
            self.serving[iid] = Child(iid, pid, now)
            log.info("instance %s running: worker pid %d started in %.0f ms", iid, pid,
                     (time.monotonic() - started) * 1000)
        for iid in list(self.backoff):
            if iid not in running:
                del self.backoff[iid]

    def escalate(self) -> None:
        """Second SIGTERM after the grace period, SIGKILL a little later."""
        now = self.clock()
        for child in list(self.draining.values()):
            waited = now - child.signalled_at
            if child.state == ChildState.STOPPING and waited > self.grace_s:
                log.warning("worker pid %d (instance %s) still running %.1f s after SIGTERM: second SIGTERM",
                            child.pid, child.instance_id, waited)
                self._signal(child, signal.SIGTERM, ChildState.FORCING, now)
            elif child.state == ChildState.FORCING and waited > self.kill_after_s:
                log.error("worker pid %d (instance %s) ignored two SIGTERMs: SIGKILL", child.pid, child.instance_id)
                self._signal(child, signal.SIGKILL, ChildState.FORCING, now)

    def reap(self) -> None:
        """Collect every exited worker (no zombies) and note the ones that died while serving.

        Waits on our own pids only, never ``waitpid(-1)``: other children of this process are not ours to reap.
        """
        for pid in list(self.draining):
            code = _exited(pid)
            if code is not None:
                child = self.draining.pop(pid)
                log.info("worker pid %d (instance %s) exited with %s", pid, child.instance_id, code)
        for child in list(self.serving.values()):
            code = _exited(child.pid)
            if code is None:
                continue
            pid = child.pid
            del self.serving[child.instance_id]
            self.replaced += 1
            now = self.clock()
            back = self.backoff.setdefault(child.instance_id, Backoff())
            if now - child.started_at < CRASH_WINDOW_S:  # the first replacement is immediate, then 1, 2, 4... s
                back.failures += 1
                back.not_before = now + (0.0 if back.failures == 1 else min(MAX_BACKOFF_S, 2.0 ** (back.failures - 2)))
            else:
                back.failures, back.not_before = 0, 0.0
            log.warning("worker pid %d for running instance %s died (exit %s); replacing it%s", pid,
                        child.instance_id, code,
                        f" in {back.not_before - now:.1f} s (early death {back.failures})" if back.failures else "")

    def stop_all(self, timeout: float | None = None) -> None:
        """SIGTERM every worker, wait up to ``timeout``, SIGKILL what is left, reap all."""
        timeout = self.grace_s if timeout is None else timeout
        now = self.clock()
        for child in list(self.serving.values()):
            self._signal(child, signal.SIGTERM, ChildState.STOPPING, now)
            self.draining[child.pid] = child
        self.serving.clear()
        deadline = time.monotonic() + timeout
        while self.draining and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.05)
        for child in list(self.draining.values()):
            log.error("worker pid %d (instance %s) did not stop in %.0f s: SIGKILL", child.pid, child.instance_id,
                      timeout)
            self._signal(child, signal.SIGKILL, ChildState.FORCING, now)
        for pid in list(self.draining):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self.draining.pop(pid, None)

    @staticmethod
    def _signal(child: Child, sig: int, state: ChildState, now: float) -> None:
        child.state, child.signalled_at = state, now
        try:
            os.kill(child.pid, sig)
        except ProcessLookupError:
            pass  # already gone; reap() collects it


def _exited(pid: int) -> int | None:
    """The exit code if ``pid`` (our child) has exited (and is now reaped), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return -1  # already reaped elsewhere: gone all the same
    return os.waitstatus_to_exitcode(status) if done else None


def ready_clients(settings: Settings):
    """boto3 clients made ahead, in idle time: building them costs ~0.5 s of CPU that a new
    instance would otherwise spend before its first receive. Unused clients hold no
    connections yet, so a forked child can take them over safely."""
    from infra.clients import Clients

    clients = Clients(settings)
    for service in ("sqs", "s3", "cloudwatch"):
        getattr(clients, service)
    return clients


def fork_worker(settings: Settings, classifier, instance_id: str, clients=None, gate=None) -> int:
    """Fork a child that runs the app-tier worker as ``instance_id``; returns the child's pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: dump stacks of a stuck worker
        from app_tier.worker import run_worker  # it opens the classifier in this process (threads, session)

        options = {"clients": clients} if clients is not None else {}
        if gate is not None:
            options["inference_gate"] = gate
        code = run_worker(settings.replace(instance_id=instance_id), classifier, instance_id, **options)
    except BaseException:
        log.exception("worker for instance %s crashed", instance_id)
    finally:
        logging.shutdown()
        os._exit(code if isinstance(code, int) else 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.supervisor",
                                     description="Run one worker process per running moto app-tier instance.")
    parser.add_argument("--poll", type=float, default=DEFAULT_POLL_S, help="seconds between fleet reads (0.25)")
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE_S,
                        help="seconds a worker may drain after SIGTERM before the second SIGTERM (30)")
    parser.add_argument("--spares", type=int, default=DEFAULT_SPARES,
                        help="sets of boto3 clients kept ready for the next new workers (2)")
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)),
                        help="concurrent inferences allowed on this host (default: its cores; 0: no limit)")
    args = parser.parse_args(argv)
    settings = settings_and_logging(with_pid=True)
    if not settings.is_local:
        log.warning("AWS_ENDPOINT_URL is unset: on real AWS instances run their own worker; supervising anyway")

    stop = {"flag": False}

    def on_signal(signum, _frame):
        log.info("signal %s: stopping all workers", signal.Signals(signum).name)
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    import app_tier.worker  # noqa: F401 - imported once here, not in every forked child
    from app_tier.classifier import Runtime
    from app_tier.runtime import load_worker_classifier
    from infra.clients import local_admin_credentials, make_client

    started = time.monotonic()
    classifier = load_worker_classifier(settings.replace(torch_threads=1))  # onnx: builds the artifact if missing
    if classifier.runtime == Runtime.TORCH:
        classifier.warm_up()  # single-threaded, fork-safe; an ORT session must not exist before a fork
    log.info("model %s ready in %.1f s; supervising %s-* every %g s", settings.model, time.monotonic() - started,
             settings.app_instance_prefix, args.poll)
    # This process plays EC2 itself, so it reads the fleet as the stack's administrator; its workers
    # make their clients with the environment's credentials: the app role's, from the credential server.
    ec2 = make_client("ec2", settings, pool=2, credentials=local_admin_credentials(settings))
    spares = [ready_clients(settings) for _ in range(args.spares)]

    gate = None
    if args.cores > 0:
        from infra.local.gate import HostGate

        gate = HostGate(Path(settings.data_dir) / "inference-gate", args.cores)
        log.info("inference gate: at most %d concurrent inferences on this host", args.cores)

    def spawn(instance_id: str) -> int:
        return fork_worker(settings, classifier, instance_id, spares.pop() if spares else None, gate)

    sup = Supervisor(settings, ec2, spawn, grace_s=args.grace)
    try:
        while not stop["flag"]:
            try:
                sup.tick()
                if len(spares) < args.spares:  # one per tick, after this tick's forks
                    spares.append(ready_clients(settings))
            except Exception:  # the supervisor's death would take every worker with it
                log.exception("supervisor tick failed; trying again next tick")
            time.sleep(args.poll)
    finally:
        sup.stop_all()
        log.info("supervisor stopped; %d workers replaced during the run", sup.replaced)
    return 0


if __name__ == "__main__":
    from infra.local.supervisor import main as _main  # log under "infra.local.supervisor", not "__main__"

    sys.exit(_main())
