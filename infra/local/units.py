"""systemd unit files and EnvironmentFiles as plain data, and the rules systemd applies to them.

Pure functions only (standard library, no I/O), so the local init (``infra.local.init``)
and its tests share one reading of the fields our units use: Type (simple, oneshot),
RemainAfterExit, Requires, Wants, After, ExecStart, User, Group, WorkingDirectory, Environment,
EnvironmentFile, Restart, RestartSec, KillSignal, KillMode, TimeoutStartSec, TimeoutStopSec
(TimeoutSec), NoNewPrivileges, StartLimitIntervalSec and StartLimitBurst. Defaults are
systemd's own (systemd.service(5), systemd.kill(5), systemd.unit(5)).

A directive the init neither implements (``IMPLEMENTED``) nor lists as a documented no-op
(``NO_OPS``, each with what systemd would do instead) is refused: the unit does not load and
the console says which directive of which unit, rather than the unit running as if it had
been honoured (a hung model fetch with ``TimeoutStartSec`` ignored hung the boot for ever).
"""

from __future__ import annotations

import re
import shlex
import signal
from dataclasses import dataclass, field

# systemd's defaults (DefaultTimeoutStopSec, DefaultStartLimitIntervalSec, DefaultStartLimitBurst, RestartSec).
# TimeoutStartSec: DefaultTimeoutStartSec (90 s), "except when Type=oneshot is used, in which case the timeout is
# disabled by default" (systemd.service(5)); for a simple service the start job ends at the fork anyway.
DEFAULT_TIMEOUT_START_S = 90.0
DEFAULT_TIMEOUT_STOP_S = 90.0
DEFAULT_START_LIMIT_INTERVAL_S = 10.0
DEFAULT_START_LIMIT_BURST = 5
DEFAULT_RESTART_S = 0.1
# Exits systemd counts as clean for Restart=on-failure: code 0, or one of these signals.
CLEAN_SIGNALS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE})
RESTART_POLICIES = ("no", "on-success", "on-failure", "on-abnormal", "on-abort", "always")
SERVICE_TYPES = ("simple", "exec", "oneshot")  # exec reads as simple here: both count as started once forked
_TIME_UNITS = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "s": 1.0, "sec": 1.0, "second": 1.0,
               "seconds": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0, "h": 3600.0,
               "hr": 3600.0, "hour": 3600.0, "hours": 3600.0}


class UnitError(ValueError):
    """A unit file or EnvironmentFile we cannot honour; the message names the unit and the field."""


# Directives the local init honours, by section.
IMPLEMENTED: dict[str, frozenset[str]] = {
    "Unit": frozenset({"Description", "Requires", "Wants", "After", "StartLimitIntervalSec", "StartLimitBurst"}),
    "Service": frozenset({"Type", "RemainAfterExit", "ExecStart", "User", "Group", "WorkingDirectory", "Environment",
                          "EnvironmentFile", "Restart", "RestartSec", "KillSignal", "KillMode", "TimeoutStartSec",
                          "TimeoutStopSec", "TimeoutSec", "NoNewPrivileges"}),
    "Install": frozenset({"WantedBy"}),
}
# Directives accepted and not acted on, with what systemd does that the local init does not (the README says so).
NO_OPS: dict[tuple[str, str], str] = {
    ("Service", "PrivateTmp"): "systemd gives the unit its own /tmp; locally the instance's units share the "
                               "instance's (its own mount namespace already keeps it from the host's)",
    ("Service", "ProtectSystem"): "systemd mounts /usr, /boot (and /etc with full) read-only for the unit; locally "
                                  "they stay as the instance has them (the local image is this checkout)",
    ("Service", "AmbientCapabilities"): "systemd grants the capabilities (e.g. CAP_NET_BIND_SERVICE for port 80); "
                                        "locally none are granted and the web tier binds an unprivileged port",
}
# Wants= of a target (network-online.target): targets are not emulated; the instance's network is up before its
# init starts. Wants= of a service starts it, and its failure does not fail the wanting unit (systemd.unit(5)).


def check_directives(name: str, sections: dict[str, list[tuple[str, str]]]) -> None:
    """``UnitError`` for a section or directive that is neither implemented nor a documented no-op (pure)."""
    for section, pairs in sections.items():
        if section not in IMPLEMENTED:
            raise UnitError(f"{name}: section [{section}] is not understood by the local init (it knows "
                            f"{', '.join(f'[{s}]' for s in IMPLEMENTED)}); refusing the unit rather than ignoring it")
        for key, _ in pairs:
            if key not in IMPLEMENTED[section] and (section, key) not in NO_OPS:
                raise UnitError(f"{name}: [{section}] {key}= is neither implemented by the local init nor a "
                                f"documented no-op (infra/local/units.py); refusing the unit rather than ignoring it")


@dataclass(frozen=True)
class Unit:
    name: str
    exec_start: tuple[str, ...]
    user: str = ""
    group: str = ""
    working_directory: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    environment_files: tuple[tuple[str, bool], ...] = ()  # (path, optional)
    restart: str = "no"
    restart_s: float = DEFAULT_RESTART_S
    kill_signal: int = signal.SIGTERM
    kill_mode: str = "control-group"
    timeout_stop_s: float = DEFAULT_TIMEOUT_STOP_S
    start_limit_interval_s: float = DEFAULT_START_LIMIT_INTERVAL_S
    start_limit_burst: int = DEFAULT_START_LIMIT_BURST
    wanted_by: tuple[str, ...] = ()
    type: str = "simple"
    remain_after_exit: bool = False
    requires: tuple[str, ...] = ()  # services only: targets are not emulated
    wants: tuple[str, ...] = ()  # services only, started along; their failure is not ours
    after: tuple[str, ...] = ()
    timeout_start_s: float = float("inf")  # a oneshot's ExecStart is killed and the unit failed after this
    no_new_privileges: bool = False
    no_ops: tuple[str, ...] = ()  # documented no-op directives the unit carries (said when it starts)

    @property
    def oneshot(self) -> bool:
        return self.type == "oneshot"


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "yes", "true", "on"):
        return True
    if value in ("0", "no", "false", "off"):
        return False
    raise UnitError(f"not a boolean: {text!r}")


def _services(words: str) -> tuple[str, ...]:
    return tuple(w for w in words.split() if w.endswith(".service"))


def parse_timespan(text: str) -> float:
    """systemd time span: ``90``, ``5s``, ``1min 30s``, ``500ms``, ``infinity`` -> seconds."""
    text = text.strip()
    if text == "infinity":
        return float("inf")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    total, pos = 0.0, 0
    for m in re.finditer(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)", text):
        if m.start() != pos or m.group(2) not in _TIME_UNITS:
            raise UnitError(f"not a time span: {text!r}")
        total += float(m.group(1)) * _TIME_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise UnitError(f"not a time span: {text!r}")
    return total


def parse_signal(text: str) -> int:
    name = text.strip().upper()
    if name.isdigit():
        return int(name)
    name = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise UnitError(f"unknown signal {text!r}") from None


def _sections(text: str) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        while line.endswith("\\") and i + 1 < len(lines):  # continuation lines
            i += 1
            line = line[:-1] + " " + lines[i].strip()
        i += 1
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        if current is None or "=" not in line:
            raise UnitError(f"line outside a section or without '=': {line!r}")
        key, value = line.split("=", 1)
        current.append((key.strip(), value.strip()))
    return sections


def parse_unit(name: str, text: str) -> Unit:
    """The fields of ``name`` (e.g. ``imgrec-worker.service``); an unknown directive, an unknown Restart= or a
    missing ExecStart fails."""
    sec = _sections(text)
    check_directives(name, sec)
    unit_sec = dict(sec.get("Unit", []))
    service = sec.get("Service", [])
    values: dict[str, str] = {}
    env: dict[str, str] = {}
    env_files: list[tuple[str, bool]] = []
    for key, value in service:
        if key == "Environment":
            for word in shlex.split(value):
                k, _, v = word.partition("=")
                env[k] = v
        elif key == "EnvironmentFile":
            env_files.append((value[1:], True) if value.startswith("-") else (value, False))
        else:
            values[key] = value  # later assignments win, as in systemd
    exec_start = values.get("ExecStart", "").lstrip("-@+!:")
    if not exec_start:
        raise UnitError(f"{name}: no ExecStart")
    restart = values.get("Restart", "no")
    if restart not in RESTART_POLICIES:
        raise UnitError(f"{name}: Restart={restart} is not one of {', '.join(RESTART_POLICIES)}")
    kind = values.get("Type", "simple")
    if kind not in SERVICE_TYPES:
        raise UnitError(f"{name}: Type={kind} is not one of {', '.join(SERVICE_TYPES)}")
    deps = {key: " ".join(v for k, v in sec.get("Unit", []) if k == key) for key in ("Requires", "Wants", "After")}
    default_start = "infinity" if kind == "oneshot" else str(DEFAULT_TIMEOUT_START_S)
    no_ops = tuple(f"{key}=" for section, pairs in sec.items() for key, _ in pairs if (section, key) in NO_OPS)
    try:
        return Unit(
            name=name, exec_start=tuple(shlex.split(exec_start)), user=values.get("User", ""),
            group=values.get("Group", ""), working_directory=values.get("WorkingDirectory", "").lstrip("-"),
            environment=env, environment_files=tuple(env_files), restart=restart,
            restart_s=parse_timespan(values.get("RestartSec", str(DEFAULT_RESTART_S))),
            kill_signal=parse_signal(values.get("KillSignal", "SIGTERM")),
            kill_mode=values.get("KillMode", "control-group"),
            timeout_stop_s=parse_timespan(values.get("TimeoutStopSec", values.get("TimeoutSec",
                                                                                  str(DEFAULT_TIMEOUT_STOP_S)))),
            start_limit_interval_s=parse_timespan(unit_sec.get("StartLimitIntervalSec",
                                                               str(DEFAULT_START_LIMIT_INTERVAL_S))),
            start_limit_burst=int(unit_sec.get("StartLimitBurst", DEFAULT_START_LIMIT_BURST)),
            wanted_by=tuple(dict(sec.get("Install", [])).get("WantedBy", "").split()),
            type=kind, remain_after_exit=parse_bool(values.get("RemainAfterExit", "no")),
            requires=_services(deps["Requires"]), wants=_services(deps["Wants"]), after=_services(deps["After"]),
            timeout_start_s=_no_zero(parse_timespan(values.get("TimeoutStartSec", values.get("TimeoutSec",
                                                                                           default_start)))),
            no_new_privileges=parse_bool(values.get("NoNewPrivileges", "no")), no_ops=no_ops,
        )
    except (UnitError, ValueError) as err:
        raise UnitError(f"{name}: {err}") from None


def _no_zero(seconds: float) -> float:
    """systemd: "Pass 0 to disable the timeout logic"."""
    return float("inf") if seconds == 0 else seconds


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=value lines as systemd reads an EnvironmentFile: comments, double or single quotes, backslashes."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise UnitError(f"EnvironmentFile line is not KEY=value: {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r'\\(["\\$`])', r"\1", value[1:-1])
        elif len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        out[key] = value
    return out


def should_restart(policy: str, exit_code: int | None, killed_by: int | None, *, timed_out: bool = False) -> bool:
    """Whether systemd restarts a service that ended by itself (not by ``systemctl stop``).

    ``exit_code`` is set for a normal exit, ``killed_by`` for death by a signal; ``timed_out`` when systemd
    stopped it for a timeout (TimeoutStartSec), whatever its exit then: systemd.service(5)'s table of exit
    causes restarts a timeout under always, on-failure and on-abnormal only.
    https://www.freedesktop.org/software/systemd/man/latest/systemd.service.html#Restart=
    """
    if timed_out:
        return policy in ("always", "on-failure", "on-abnormal")
    clean = exit_code == 0 or (killed_by is not None and killed_by in CLEAN_SIGNALS)
    if policy == "always":
        return True
    if policy == "on-success":
        return clean
    if policy == "on-failure":
        return not clean
    if policy == "on-abnormal":
        return killed_by is not None and killed_by not in CLEAN_SIGNALS
    if policy == "on-abort":
        return killed_by is not None and killed_by not in CLEAN_SIGNALS
    return False


def start_allowed(recent_starts: list[float], now: float, interval_s: float, burst: int) -> bool:
    """systemd's start rate limit: at most ``burst`` starts within ``interval_s``; 0 turns it off."""
    if interval_s <= 0 or burst <= 0:
        return True
    return sum(1 for t in recent_starts if now - t < interval_s) < burst


_BRACED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WHOLE_WORD = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")


def expand_command(argv: tuple[str, ...] | list[str], env: dict[str, str]) -> list[str]:
    """systemd's ExecStart substitution from the unit's environment (its EnvironmentFile): ``${NAME}``
    anywhere in a word, and ``$NAME`` as a word of its own, split at whitespace; an unset name is empty.
    A ``$NAME`` inside a longer word is left alone (for a shell the unit runs to expand)."""
    out: list[str] = []
    for word in argv:
        whole = _WHOLE_WORD.match(word)
        if whole:
            out.extend(env.get(whole.group(1), "").split())
        else:
            out.append(_BRACED.sub(lambda m: env.get(m.group(1), ""), word))
    return out
