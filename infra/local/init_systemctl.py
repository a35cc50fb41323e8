"""The local init's ``systemctl`` verbs: what each call does to the units, and when it is answered.

A mixin of ``infra.local.init.Init`` (kept apart so each file reads on its own): ``start`` answers when the
start jobs ended (a oneshot's ExecStart has exited), ``stop`` and ``restart`` when the units have stopped, as
systemd's do. Standard library only, as the init is.
"""

from __future__ import annotations

import contextlib
import socket
from enum import StrEnum
from pathlib import Path

from infra.local.units import UnitError

UNIT_DIR = "/etc/systemd/system"
WANTS_DIR = f"{UNIT_DIR}/multi-user.target.wants"


class State(StrEnum):
    """systemd's ActiveState, with the sub-state that matters here."""

    INACTIVE = "inactive"
    ACTIVATING = "activating"  # a oneshot's ExecStart running, or waiting for a unit it is After=
    ACTIVE = "active"
    DEACTIVATING = "deactivating"
    AUTO_RESTART = "auto-restart"  # activating (auto-restart) in systemd's terms
    FAILED = "failed"



class SystemctlVerbs:
    """Needs from its host class: ``service``, ``start``, ``stop``, ``daemon_reload``, ``say``, ``path``,
    ``_send``, ``services``, ``enabled``, ``_starting`` and ``_deferred``."""

    def command(self, args: list[str], conn: socket.socket) -> None:
        """One systemctl call; replies at once except for stop/restart, which answer when stopped."""
        flags = {a for a in args if a.startswith("-")}
        words = [a for a in args if not a.startswith("-")]
        if not words:
            return self._send(conn, 1, "systemctl: no command")
        verb, names = words[0], [n if "." in n else f"{n}.service" for n in words[1:]]
        try:
            if verb == "daemon-reload":
                self.daemon_reload()
                return self._send(conn, 0, "")
            if verb in ("enable", "disable"):
                for n in names:
                    self.service(n)
                    self._wants(n, verb == "enable")
                    self.say(f"{verb}d {n}")
                if "--now" in flags and verb == "enable":
                    return self._start_all(names, conn)
                if "--now" in flags:
                    return self._stop_all(names, conn)
                return self._send(conn, 0, "")
            if verb == "start":
                return self._start_all(names, conn)
            if verb == "stop":
                return self._stop_all(names, conn)
            if verb == "restart":
                for n in names:
                    self.stop(n)
                return self._after_stop(names, conn, then_start=True)
            if verb in ("is-active", "is-failed", "is-enabled", "status"):
                states = [self.service(n).state for n in names]
                if verb == "is-enabled":
                    out = ["enabled" if n in self.enabled else "disabled" for n in names]
                    return self._send(conn, 0 if all(n in self.enabled for n in names) else 1, "\n".join(out))
                out = [s.value if s != State.AUTO_RESTART else "activating" for s in states]
                ok = {"is-failed": all(s == State.FAILED for s in states)}.get(verb, all(s == State.ACTIVE
                                                                                         for s in states))
                if verb == "status":
                    out = [f"{n}: {s.value} (pid {self.services[n].pid}, restarts {self.services[n].restarts})"
                           for n, s in zip(names, states, strict=True)]
                return self._send(conn, 0 if ok else 3, "\n".join(out))
            if verb == "reset-failed":
                for n in names:
                    svc = self.service(n)
                    svc.starts.clear()
                    if svc.state == State.FAILED:
                        svc.state = State.INACTIVE
                return self._send(conn, 0, "")
        except (OSError, UnitError) as err:
            return self._send(conn, 5, f"Failed: {err}")
        return self._send(conn, 1, f"systemctl (local init): unknown command {verb!r}")

    def _wants(self, name: str, enable: bool) -> None:
        """systemctl enable's symlink in multi-user.target.wants, which the next boot starts."""
        wants = Path(self.path(WANTS_DIR))
        link = wants / name
        if enable:
            self.enabled.add(name)
            wants.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(f"{UNIT_DIR}/{name}")
        else:
            self.enabled.discard(name)
            with contextlib.suppress(FileNotFoundError):
                link.unlink()

    def _start_all(self, names: list[str], conn: socket.socket) -> None:
        """As ``systemctl start``: answers when the start jobs ended (a oneshot's ExecStart has exited)."""
        errors = [e for e in (self.start(n) for n in names) if e]
        if errors:
            return self._send(conn, 1, "\n".join(errors))
        self._starting.append((names, conn))
        return self._answer_starts()

    def _answer_starts(self) -> None:
        keep = []
        for names, conn in self._starting:
            states = {n: self.services[n] for n in names}
            if any(s.state == State.ACTIVATING for s in states.values()):
                keep.append((names, conn))
                continue
            errors = [f"Job for {n} failed because "
                      f"{'a dependency job failed' if s.result == 'dependency' else 'its process exited with an error'}"
                      for n, s in states.items() if s.state in (State.FAILED, State.AUTO_RESTART)]
            self._send(conn, 1 if errors else 0, "\n".join(errors))
        self._starting = keep

    def _stop_all(self, names: list[str], conn: socket.socket) -> None:
        for n in names:
            self.stop(n)
        self._after_stop(names, conn, then_start=False)

    def _after_stop(self, names: list[str], conn: socket.socket, *, then_start: bool) -> None:
        pending = [n for n in names if self.services[n].state == State.DEACTIVATING]
        if not pending:
            return self._start_all(names, conn) if then_start else self._send(conn, 0, "")
        self._deferred.append((pending, names, conn, then_start))
        return None

    def run_deferred(self) -> None:
        self._answer_starts()
        keep = []
        for pending, names, conn, then_start in self._deferred:
            if all(self.services[n].state != State.DEACTIVATING for n in pending):
                if then_start:
                    self._start_all(names, conn)
                else:
                    self._send(conn, 0, "")
            else:
                keep.append((pending, names, conn, then_start))
        self._deferred = keep
