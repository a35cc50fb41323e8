"""Sample the memory of every process of a running stack, to show it stays flat under load.

Reads ``/proc/<pid>/smaps_rollup`` (one cheap read per process, unlike a full
smaps walk) for RSS, PSS and USS. PSS splits the copy-on-write model pages the
forked workers share, so the sum over processes is the stack's real footprint.
Growth is judged on USS (private pages): a forked worker's RSS rises for a while
as it touches more of the parent's shared pages (model weights, torch code), which
costs nothing; a leak shows up as private memory.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import psutil


def role(p: psutil.Process) -> str:
    cmd = " ".join(p.cmdline())
    if "moto.server" in cmd or "moto" in cmd.split(" -m ")[-1][:12]:
        return "moto"
    if "-m infra up" in cmd:
        return "orchestrator (infra up)"
    if "-m app_tier" in cmd:
        return "worker"
    if "infra.local.runner" in cmd:
        return "runner"
    if "infra.local.init" in cmd:
        return "instance init"
    if "-m controller" in cmd:
        return "controller"
    if "-m web_tier" in cmd:
        return "web tier"
    return cmd[:40]


def rollup(pid: int) -> tuple[float, float, float] | None:
    """(RSS, PSS, USS) in MB, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            values = {}
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                    values[key] = int(rest.split()[0]) / 1024
        uss = values.get("Private_Clean", 0.0) + values.get("Private_Dirty", 0.0)
        return values.get("Rss", 0.0), values.get("Pss", 0.0), uss
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


@dataclass
class MemWatch:
    """``with MemWatch(stack.processes) as watch:`` samples every ``interval_s`` in a thread."""

    processes: callable
    interval_s: float = 2.0
    samples: dict[int, list[tuple[float, float, float, float]]] = field(  # (t, rss, pss, uss)
        default_factory=lambda: defaultdict(list))
    roles: dict[int, str] = field(default_factory=dict)
    totals: list[tuple[float, float]] = field(default_factory=list)  # (t, sum of PSS)

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memwatch", daemon=True)

    def __enter__(self) -> MemWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        now, total = time.monotonic(), 0.0
        for p in self.processes():
            if p.pid not in self.roles:
                try:
                    self.roles[p.pid] = role(p)
                except psutil.Error:
                    continue
            mem = rollup(p.pid)
            if mem is not None:
                self.samples[p.pid].append((now, *mem))
                total += mem[1]
        self.totals.append((now, total))

    def peak_pss(self) -> dict[str, float]:
        """Peak PSS per role (workers: the largest single worker), plus the peak sum."""
        out: dict[str, float] = {}
        for pid, series in self.samples.items():
            name = self.roles[pid]
            out[name] = max(out.get(name, 0.0), max(s[2] for s in series))
        out["all processes (sum of PSS)"] = max((t for _, t in self.totals), default=0.0)
        out["worker processes seen"] = float(sum(1 for r in self.roles.values() if r == "worker"))
        return out

    def peak_uss(self, role_name: str) -> dict[int, float]:
        """Peak private memory of each process with this role, by pid."""
        return {pid: max(s[3] for s in series) for pid, series in self.samples.items()
                if self.roles[pid] == role_name and series}

    def growth(self, start: float, end: float, min_life_s: float = 60.0) -> dict[str, tuple[float, float]]:
        """Per process: (max USS in the second quarter, max USS in the last quarter) of its life within [start, end].

        The first quarter is warm-up (pools, caches, inherited pages touched for the first time).
        Processes that lived less than ``min_life_s`` of the run (scale-in, late scale-out) are left out."""
        out = {}
        for pid, series in self.samples.items():
            inside = [s for s in series if start <= s[0] <= end]
            if len(inside) < 8 or inside[-1][0] - inside[0][0] < min_life_s:
                continue
            t0, t1 = inside[0][0], inside[-1][0]
            q = (t1 - t0) / 4
            early = [s[3] for s in inside if t0 + q <= s[0] < t0 + 2 * q]
            late = [s[3] for s in inside if t1 - q <= s[0]]
            if early and late:
                out[f"{self.roles[pid]} pid {pid}"] = (max(early), max(late))
        return out

    def dump(self, path) -> None:
        """Every sample as JSON, for a plot or a second look: {pid: {role, samples: [[t, rss, pss, uss]]}}."""
        import json

        t0 = min((s[0][0] for s in self.samples.values() if s), default=0.0)
        data = {str(pid): {"role": self.roles[pid], "samples": [[round(t - t0, 1), *map(round, v)] for t, *v in s]}
                for pid, s in self.samples.items()}
        with open(path, "w") as f:
            json.dump(data, f)
