"""The init of one local instance: runs its user data once, then stands in for systemd.

``python -S -m infra.local.init --instance-dir DIR ...`` is started by the runner
(``infra.local.runner``) when a moto instance enters ``running``. It joins the
instance's memory cgroup, enters its namespaces (``infra.local.isolation``), runs the
user data with bash as cloud-init would, and serves ``systemctl`` (the shim in the
instance's PATH, ``infra/local/systemctl.py``) over a unix socket: ``daemon-reload``,
``enable [--now]``, ``start``, ``stop``, ``restart``, ``is-active``, ``status``. Units
are honoured as systemd does (``infra.local.units``): Type=oneshot (``systemctl start``
answers when it exited) with RemainAfterExit, Requires= and After=, Restart=on-failure within
StartLimitIntervalSec/StartLimitBurst, KillSignal then SIGKILL after TimeoutStopSec,
KillMode, User, WorkingDirectory, EnvironmentFile. SIGTERM to the init is the
instance shutting down (EC2 stop or terminate): every unit is stopped that way.

The runner learns what happened from ``status.json`` (boot result, unit states),
written on every change; everything the instance prints goes to ``console.log``.
Standard library only and one thread, so an instance costs a few MB beside its units.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import pwd
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from infra.local import isolation
from infra.local.init_systemctl import UNIT_DIR, WANTS_DIR, State, SystemctlVerbs
from infra.local.spawn import EXIT_NAMES, EXIT_USER, describe_exit, spawn
from infra.local.units import (
    CLEAN_SIGNALS,
    Unit,
    UnitError,
    expand_command,
    parse_env_file,
    parse_unit,
    should_restart,
    start_allowed,
)

FIRST_BOOT_DONE = "first-boot-done"  # in the instance folder: cloud-init runs user data once per instance
TICK_S = 0.1
BOOT_KILL_S = 2.0  # a boot script still running at shutdown gets SIGTERM, then SIGKILL after this


class Boot(StrEnum):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"


@dataclass
class Service:
    unit: Unit
    state: State = State.INACTIVE
    pid: int = 0
    starts: list[float] = field(default_factory=list)
    restarts: int = 0
    restart_at: float = 0.0
    stop_deadline: float = 0.0
    start_deadline: float = float("inf")  # a oneshot's ExecStart past it is stopped and the unit fails (timeout)
    start_timed_out: bool = False
    killed: bool = False  # SIGKILL sent after TimeoutStopSec
    waiters: list[socket.socket] = field(default_factory=list)  # systemctl calls waiting for this stop
    result: str = ""


class Init(SystemctlVerbs):
    def __init__(self, instance_dir: Path, user_data: Path, console: int, *, root_prefix: Path | None,
                 run_as_user: bool, clock=time.monotonic):
        self.dir = instance_dir
        self.user_data = user_data
        self.console = console
        self.root_prefix = root_prefix  # set when paths are rewritten (no mount namespace)
        self.run_as_user = run_as_user
        self.clock = clock
        self.units: dict[str, Unit] = {}
        self.services: dict[str, Service] = {}
        self.enabled: set[str] = set()
        self.boot = Boot.RUNNING
        self.boot_exit: int | None = None
        self.boot_pid = 0
        self.boot_killed_at = 0.0
        self.shutting_down = False
        self.env = dict(os.environ)
        self._status_dirty = True
        self._deferred: list[tuple[list[str], list[str], socket.socket, bool]] = []
        self._starting: list[tuple[list[str], socket.socket]] = []  # systemctl start waiting for jobs to end

    # ------------------------------------------------------------ output

    def say(self, message: str) -> None:
        now = time.time()
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(now))}.{int(now % 1 * 1000):03d} init: {message}\n"
        with contextlib.suppress(OSError):
            os.write(self.console, line.encode())
        self._status_dirty = True

    def write_status(self) -> None:
        if not self._status_dirty:
            return
        self._status_dirty = False
        data = {"boot": self.boot.value, "boot_exit": self.boot_exit, "shutting_down": self.shutting_down,
                "units": {n: {"state": s.state.value, "pid": s.pid, "restarts": s.restarts, "result": s.result}
                          for n, s in self.services.items()}}
        tmp = self.dir / "status.json.tmp"
        tmp.write_text(json.dumps(data))
        tmp.replace(self.dir / "status.json")

    def _send(self, conn: socket.socket, code: int, out: str) -> None:
        """A systemctl answer, after status.json: whoever reads it once systemctl returned sees the new state."""
        self._status_dirty = True
        self.write_status()
        _reply(conn, code, out)

    # ------------------------------------------------------------ paths and units

    def path(self, p: str) -> str:
        """Where an instance path is on this host (moved under the instance root without namespaces)."""
        return isolation.rewrite_paths(p, self.root_prefix) if self.root_prefix else p

    def load(self, name: str) -> Unit:
        name = name if "." in name else f"{name}.service"
        text = Path(self.path(f"{UNIT_DIR}/{name}")).read_text()
        if self.root_prefix:
            text = isolation.rewrite_paths(text, self.root_prefix)
        unit = parse_unit(name, text)
        self.units[name] = unit
        if name in self.services:
            self.services[name].unit = unit
        return unit

    def daemon_reload(self) -> None:
        for path in sorted(Path(self.path(UNIT_DIR)).glob("*.service")):
            try:
                self.load(path.name)
            except (OSError, UnitError) as err:
                self.say(f"{path.name}: cannot load: {err}")
        self.say(f"Reloading: {len(self.units)} units")

    def service(self, name: str) -> Service:
        name = name if "." in name else f"{name}.service"
        if name not in self.units:
            self.load(name)  # systemd loads a unit on first reference too
        if name not in self.services:
            self.services[name] = Service(self.units[name])
        return self.services[name]

    # ------------------------------------------------------------ processes

    def start_boot(self) -> None:
        if (self.dir / FIRST_BOOT_DONE).exists():  # a stopped instance started again: units, not user data
            self.boot, self.boot_exit = Boot.OK, 0
            self.say("user data already ran on this instance's first boot; starting enabled units")
            self.daemon_reload()
            for link in sorted(Path(self.path(WANTS_DIR)).glob("*.service")):
                self.enabled.add(link.name)
                self.start(link.name)
            return
        text = self.user_data.read_bytes() if self.user_data.exists() else b""
        if not text.strip():
            self.boot, self.boot_exit = Boot.OK, 0
            self.say("no user data: nothing to run")
            return
        if not text.startswith(b"#!"):
            self.boot, self.boot_exit = Boot.FAILED, None
            self.say("user data is not a shell script (#!); cloud-init would not run it as one")
            return
        self.boot_pid = spawn(self.console, ["/bin/bash", str(self.user_data)], self.env, cwd="/", user=None)
        self.say(f"running user data (bash, pid {self.boot_pid})")

    def start(self, name: str) -> str | None:
        """Start a unit and what it Requires=; an error text (systemctl prints it) or None.

        A unit After= one whose start job is still running (a oneshot) waits in ``activating``: the worker
        never runs beside the model fetch it needs. A required unit that fails fails this one too.
        """
        svc = self.service(name)
        if svc.state in (State.ACTIVE, State.ACTIVATING, State.DEACTIVATING):
            return None
        for dep in svc.unit.requires:
            error = self.start(dep)
            if error or self.service(dep).state == State.FAILED:
                return self._dependency_failed(svc, dep)
        for dep in svc.unit.wants:  # started along; its failure is not ours (systemd.unit(5))
            try:
                self.start(dep)
            except (OSError, UnitError) as err:
                self.say(f"{svc.unit.name}: wanted unit {dep} not started: {err}")
        waiting = [d for d in svc.unit.after if d in self.services and self.services[d].state == State.ACTIVATING]
        if waiting:
            svc.state, svc.pid, svc.result = State.ACTIVATING, 0, ""
            self.say(f"{svc.unit.name}: waiting for {', '.join(waiting)} (After=)")
            return None
        return self._exec(svc)

    def _dependency_failed(self, svc: Service, dep: str) -> str:
        svc.state, svc.pid, svc.result = State.FAILED, 0, "dependency"
        self.say(f"Dependency failed for {svc.unit.name} ({dep}).")
        return f"A dependency job for {svc.unit.name} failed ({dep}). See the console for details."

    def _exec(self, svc: Service) -> str | None:
        unit, now = svc.unit, self.clock()
        if not start_allowed(svc.starts, now, unit.start_limit_interval_s, unit.start_limit_burst):
            svc.state, svc.result = State.FAILED, "start-limit-hit"
            self.say(f"{unit.name}: Start request repeated too quickly.")
            self.say(f"{unit.name}: Failed with result 'start-limit-hit'.")
            return f"Job for {unit.name} failed: start request repeated too quickly"
        svc.starts = [t for t in svc.starts if now - t < unit.start_limit_interval_s] + [now]
        env = dict(self.env)
        env.update(unit.environment)
        for path, optional in unit.environment_files:
            try:
                env.update(parse_env_file(Path(path).read_text()))
            except (OSError, UnitError) as err:
                if optional and isinstance(err, FileNotFoundError):
                    continue
                svc.state, svc.result = State.FAILED, "resources"  # systemd: no process, no restart
                self.say(f"{unit.name}: Failed to load environment files: {err}")
                self.say(f"{unit.name}: Failed with result 'resources'.")
                return f"Job for {unit.name} failed: environment file {path}"
        user = None
        if unit.user and unit.user != "root" and self.run_as_user:  # off: the runner said so at start
            user = self.lookup_user(unit.user)
            if user is None:
                return self._start_failed(svc, EXIT_USER,
                                          f"Failed to determine user credentials: No such process ({unit.user})")
            env.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
        svc.pid = spawn(self.console, expand_command(unit.exec_start, env), env, cwd=unit.working_directory or "/",
                        user=user, no_new_privs=unit.no_new_privileges)
        svc.state = State.ACTIVATING if unit.oneshot else State.ACTIVE
        svc.result, svc.killed, svc.start_timed_out = "", False, False
        svc.start_deadline = now + unit.timeout_start_s if unit.oneshot else float("inf")
        self.say(f"{'Starting' if unit.oneshot else 'Started'} {unit.name} "
                 f"(pid {svc.pid}{'' if user or not unit.user else ', as root: User= off'}).")
        if unit.no_ops:
            self.say(f"{unit.name}: {', '.join(unit.no_ops)} accepted and not enforced locally "
                     f"(documented no-ops, infra/local/units.py NO_OPS)")
        return None

    def _start_failed(self, svc: Service, code: int, why: str) -> None:
        """As systemd: the unit's process fails before exec with its own exit status (217/USER,
        203/EXEC), which Restart=on-failure and the start limit treat like any failure. The start
        job itself succeeded (Type=simple: systemctl start returns once the process is forked)."""
        self.say(f"{svc.unit.name}: {why}")
        svc.state, svc.pid = State.ACTIVE, 0
        self._ended(svc, code, None, f"code=exited, status={code}/{EXIT_NAMES.get(code, 'FAILURE')}")

    def lookup_user(self, name: str) -> pwd.struct_passwd | None:
        """The user from the instance's own /etc/passwd (read from its folder: a bind mount of a
        single file follows the host's file if the host replaces it), else the host's."""
        own = self.dir / "passwd"
        if own.exists():
            for line in own.read_text().splitlines():
                fields = line.split(":")
                if len(fields) == 7 and fields[0] == name:
                    return pwd.struct_passwd((fields[0], fields[1], int(fields[2]), int(fields[3]), fields[4],
                                              fields[5], fields[6]))
            return None
        try:
            return pwd.getpwnam(name)
        except KeyError:
            return None

    def stop(self, name: str, waiter: socket.socket | None = None) -> None:
        svc = self.service(name)
        if svc.state == State.AUTO_RESTART:
            svc.state = State.INACTIVE
            self.say(f"{svc.unit.name}: pending restart cancelled by stop")
        if svc.pid == 0 and svc.state in (State.ACTIVE, State.ACTIVATING):  # no process: RemainAfterExit, waiting
            svc.state = State.INACTIVE
            self.say(f"Stopped {svc.unit.name}.")
        if svc.state not in (State.ACTIVE, State.DEACTIVATING):
            if waiter is not None:
                self._send(waiter, 0, "")
            return
        if waiter is not None:
            svc.waiters.append(waiter)
        if svc.state == State.DEACTIVATING:
            return
        unit = svc.unit
        svc.state, svc.stop_deadline = State.DEACTIVATING, self.clock() + unit.timeout_stop_s
        self.say(f"Stopping {unit.name}: {signal.Signals(unit.kill_signal).name} to "
                 f"{'pid ' + str(svc.pid) if unit.kill_mode in ('mixed', 'process') else 'its process group'}, "
                 f"SIGKILL after {unit.timeout_stop_s:g} s")
        self._signal_stop(svc)

    def _signal_stop(self, svc: Service) -> None:
        """The unit's KillSignal, to its main process (KillMode=mixed or process) or its whole process group."""
        self._kill(svc, svc.unit.kill_signal, whole_group=svc.unit.kill_mode not in ("mixed", "process"))

    @staticmethod
    def _kill(svc: Service, sig: int, *, whole_group: bool) -> None:
        if svc.pid <= 0:  # kill(0) would signal the init's own group
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if whole_group:
                os.killpg(svc.pid, sig)
            else:
                os.kill(svc.pid, sig)
        if sig != signal.SIGKILL:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(svc.pid, signal.SIGCONT)  # as systemd does, so a stopped process sees the signal

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.exited(pid, status)

    def exited(self, pid: int, status: int) -> None:
        code, sig, words = describe_exit(status)
        if pid == self.boot_pid:
            self.boot_pid = 0
            self.boot_exit = code if code is not None else 128 + (sig or 0)
            self.boot = Boot.OK if code == 0 else Boot.FAILED
            if code == 0:
                (self.dir / FIRST_BOOT_DONE).touch()
            self.say(f"user data finished: {words}" + ("" if code == 0 else " - BOOT FAILED"))
            return
        svc = next((s for s in self.services.values() if s.pid == pid and s.state in
                    (State.ACTIVE, State.ACTIVATING, State.DEACTIVATING)), None)
        if svc is None:
            return  # an orphan reparented to us; reaped
        unit = svc.unit
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # what is left of the unit's processes goes with it
        if svc.start_timed_out:  # its start job timed out (TimeoutStartSec): failed, whatever its exit
            svc.pid, svc.start_timed_out = 0, False
            self.say(f"{unit.name}: Main process exited, {words}")
            self.say(f"{unit.name}: Failed with result 'timeout'.")
            self.say(f"Failed to start {unit.name}.")
            if should_restart(unit.restart, code, sig, timed_out=True) and not self.shutting_down:
                svc.state, svc.restart_at, svc.result = State.AUTO_RESTART, self.clock() + unit.restart_s, "timeout"
            else:
                svc.state, svc.result = State.FAILED, "timeout"
            return
        if svc.state == State.DEACTIVATING:
            svc.state, svc.pid = State.INACTIVE, 0
            svc.result = "timeout" if svc.killed else "success"
            self.say(f"{unit.name}: Main process exited, {words}")
            self.say(f"Stopped {unit.name}." + (" (killed after TimeoutStopSec)" if svc.killed else ""))
            for w in svc.waiters:
                self._send(w, 0, "")
            svc.waiters.clear()
            return
        svc.pid = 0
        if unit.oneshot and code == 0:
            svc.state = State.ACTIVE if unit.remain_after_exit else State.INACTIVE
            svc.result = "success"
            self.say(f"{unit.name}: Main process exited, {words}")
            self.say(f"Finished {unit.name}.")
            return
        self._ended(svc, code, sig, words)
        if unit.oneshot:
            self.say(f"Failed to start {unit.name}.")

    def _ended(self, svc: Service, code: int | None, sig: int | None, words: str) -> None:
        """A unit's main process ended by itself: restart it or mark it inactive/failed, as systemd does."""
        unit = svc.unit
        self.say(f"{unit.name}: Main process exited, {words}")
        if should_restart(unit.restart, code, sig) and not self.shutting_down:
            svc.state, svc.restart_at, svc.result = State.AUTO_RESTART, self.clock() + unit.restart_s, "exit-code"
            self.say(f"{unit.name}: Failed with result '{'signal' if sig else 'exit-code'}'; "
                     f"restart in {unit.restart_s:g} s (Restart={unit.restart})")
        else:
            clean = code == 0 or sig in CLEAN_SIGNALS
            svc.state = State.INACTIVE if clean else State.FAILED
            svc.result = "success" if clean else ("signal" if sig else "exit-code")
            if not clean:
                self.say(f"{unit.name}: Failed with result '{svc.result}'.")

    def tick(self) -> None:
        now = self.clock()
        for svc in self.services.values():
            if svc.state == State.AUTO_RESTART and now >= svc.restart_at:
                svc.restarts += 1
                self.say(f"{svc.unit.name}: Scheduled restart job, restart counter is at {svc.restarts}.")
                self.start(svc.unit.name)
            elif svc.state == State.ACTIVATING and not svc.pid:
                self._after_ready(svc)
            elif svc.state == State.ACTIVATING and not svc.start_timed_out and now >= svc.start_deadline:
                self._start_timed_out(svc, now)
            elif ((svc.start_timed_out or svc.state == State.DEACTIVATING) and not svc.killed
                  and now >= svc.stop_deadline):  # a stop, or a timed-out start, past TimeoutStopSec
                self.say(f"{svc.unit.name}: State 'stop-sigterm' timed out. Killing.")
                svc.killed = True
                self._kill(svc, signal.SIGKILL, whole_group=True)
        if self.shutting_down and self.boot_pid and now - self.boot_killed_at > BOOT_KILL_S:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.boot_pid, signal.SIGKILL)

    def _start_timed_out(self, svc: Service, now: float) -> None:
        """TimeoutStartSec passed with the oneshot's ExecStart still running: stop it as systemd does (KillSignal,
        SIGKILL after TimeoutStopSec); when it has gone the unit fails with result 'timeout'."""
        unit = svc.unit
        svc.start_timed_out, svc.stop_deadline = True, now + unit.timeout_stop_s
        self.say(f"{unit.name}: start operation timed out after {unit.timeout_start_s:g} s (TimeoutStartSec). "
                 f"Terminating.")
        self._signal_stop(svc)

    def _after_ready(self, svc: Service) -> None:
        """A unit waiting on After= starts once those jobs ended, or fails if one it Requires= did not start."""
        deps = [self.services[d] for d in svc.unit.after if d in self.services]
        if any(d.state == State.ACTIVATING for d in deps):
            return
        failed = next((d for d in deps if d.unit.name in svc.unit.requires and d.state != State.ACTIVE
                       and not (d.unit.oneshot and d.result == "success")), None)
        if failed is not None:
            self._dependency_failed(svc, failed.unit.name)
        else:
            self._exec(svc)

    def shutdown(self) -> None:
        if self.shutting_down:
            return
        self.shutting_down = True
        self.say("shutdown: stopping all units")
        if self.boot_pid:
            self.boot_killed_at = self.clock()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.boot_pid, signal.SIGTERM)
        for name in list(self.services):
            self.stop(name)

    def done(self) -> bool:
        return self.shutting_down and not self.boot_pid and all(
            s.state not in (State.ACTIVE, State.ACTIVATING, State.DEACTIVATING) for s in self.services.values())

def _reply(conn: socket.socket, code: int, out: str) -> None:
    with contextlib.suppress(OSError):
        conn.setblocking(True)
        conn.sendall(json.dumps({"code": code, "out": out}).encode() + b"\n")
    with contextlib.suppress(OSError):
        conn.close()


def serve(init: Init, sock_name: str) -> int:
    """The event loop: systemctl requests, child exits (SIGCHLD), SIGTERM = shutdown."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0" + sock_name)  # abstract: no file, no path-length limit, gone with the process
    server.listen(64)
    server.setblocking(False)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    flags = {"term": False}

    def on_term(_signum, _frame):
        flags["term"] = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_term)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the selector through the wakeup fd
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ, "accept")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    buffers: dict[socket.socket, bytes] = {}
    init.start_boot()
    while not init.done():
        if flags["term"]:
            init.shutdown()
        for key, _ in sel.select(TICK_S):
            if key.data == "accept":
                with contextlib.suppress(BlockingIOError):
                    conn, _ = server.accept()
                    conn.setblocking(False)
                    buffers[conn] = b""
                    sel.register(conn, selectors.EVENT_READ, "conn")
            elif key.data == "wake":
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
            else:
                conn = key.fileobj
                try:
                    chunk = conn.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                buffers[conn] += chunk
                if chunk and b"\n" not in buffers[conn]:
                    continue
                sel.unregister(conn)
                data = buffers.pop(conn)
                try:
                    args = json.loads(data.split(b"\n", 1)[0] or b"{}").get("args", [])
                except ValueError:
                    args = []
                if init.shutting_down and args[:1] not in (["stop"], ["is-active"], ["status"]):
                    _reply(conn, 1, "instance is shutting down")
                else:
                    init.command([str(a) for a in args], conn)
        init.reap()
        init.tick()
        init.run_deferred()
        init.write_status()
    init.say("all units stopped; instance halted")
    init.write_status()
    return 0


def _wrapper(child: int) -> int:
    """The parent outside the PID namespace: relays SIGTERM/SIGINT to the init (PID 1 inside)."""
    def relay(signum, _frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, relay)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            return os.waitstatus_to_exitcode(status)
        except InterruptedError:
            continue
        except ChildProcessError:
            return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.init", description=__doc__.splitlines()[0])
    parser.add_argument("--instance-dir", type=Path, required=True)
    parser.add_argument("--socket", required=True, help="abstract unix socket name for systemctl")
    parser.add_argument("--cgroup-procs", type=Path, default=None, help="join this cgroup before anything runs")
    parser.add_argument("--namespaces", action="store_true", help="private mount + PID namespace")
    parser.add_argument("--run-as-user", action="store_true", help="honour User= in units")
    parser.add_argument("--src", type=Path, default=None, help="baked AMI: the checkout for /opt/imgrec/src")
    parser.add_argument("--venv", type=Path, default=None, help="baked AMI: the venv for /opt/imgrec/venv")
    parser.add_argument("--hide", type=Path, default=None, help="a folder inside --src to hide (the data dir)")
    args = parser.parse_args(argv)
    instance_dir = args.instance_dir.resolve()
    console = os.open(instance_dir / "console.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    if args.cgroup_procs is not None:
        args.cgroup_procs.write_text(str(os.getpid()))
    isolation.set_parent_death_signal()  # the runner gone: this instance goes too
    if args.namespaces:
        isolation.unshare(isolation.CLONE_NEWNS | isolation.CLONE_NEWPID)
        isolation.enter_private_mounts(instance_dir, src=args.src, venv=args.venv, hide=args.hide)
        child = os.fork()
        if child:
            return _wrapper(child)
        isolation.set_parent_death_signal()
        try:
            isolation.mount_proc()
        except OSError as err:
            os.write(console, f"init: /proc of the PID namespace not mounted: {err}\n".encode())
        root_prefix = None
    else:
        isolation.become_subreaper()
        root_prefix = isolation.instance_root(instance_dir)
    init = Init(instance_dir, instance_dir / "user-data", console, root_prefix=root_prefix,
                run_as_user=args.run_as_user)
    try:
        return serve(init, args.socket)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            init.say(f"socket {args.socket} in use: another init for this instance?")
            return 1
        raise
    finally:
        if not args.namespaces:
            isolation.finish_children()


if __name__ == "__main__":
    sys.exit(main())
