"""What the reliability run did, for the summary printed at its end (conftest's terminal summary)."""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field


@dataclass
class Tally:
    faults: list[str] = field(default_factory=list)  # "SIGKILL worker pid 123", "http503 6 s", ...
    sent: int = 0
    answered: int = 0
    lost: int = 0
    mismatched: int = 0
    client_errors: int = 0  # requests that saw an error while a fault was on (then retried or re-read)
    bad_inputs: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, endpoint, outcome)
    peak_mb: dict[str, float] = field(default_factory=dict)  # process -> peak memory
    growth: dict[str, str] = field(default_factory=dict)  # process -> "baseline -> late (+x MB)"
    upload_bytes: list[str] = field(default_factory=list)  # oversize streams: bytes sent before the 413
    sync_waits: list[str] = field(default_factory=list)  # per fault case: synchronous clients' longest wait
    notes: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fault(self, what: str) -> None:
        with self._lock:
            self.faults.append(what)

    def requests(self, sent: int, answered: int, lost: int, mismatched: int = 0, client_errors: int = 0) -> None:
        with self._lock:
            self.sent += sent
            self.answered += answered
            self.lost += lost
            self.mismatched += mismatched
            self.client_errors += client_errors

    def peak(self, name: str, mb: float) -> None:
        with self._lock:
            self.peak_mb[name] = max(mb, self.peak_mb.get(name, 0.0))

    def lines(self) -> list[str]:
        out = [f"faults injected: {len(self.faults)}"]
        kinds = collections.Counter(f.split(" pid ")[0].split(" for ")[0] for f in self.faults)
        out += [f"  {n} x {kind}" for kind, n in sorted(kinds.items())]
        out.append(f"requests: sent {self.sent}, answered {self.answered}, lost {self.lost}, "
                   f"mismatched {self.mismatched}, errors seen by clients during faults {self.client_errors}")
        if self.bad_inputs:
            outcomes = collections.Counter(o for _, _, o in self.bad_inputs)
            kinds_tried = len({k for k, _, _ in self.bad_inputs})
            out.append(f"bad inputs: {kinds_tried} kinds, {len(self.bad_inputs)} tries; outcomes "
                       + ", ".join(f"{o}: {n}" for o, n in sorted(outcomes.items())))
            by_kind: dict[str, list[str]] = collections.defaultdict(list)
            for kind, endpoint, outcome in self.bad_inputs:
                by_kind[kind].append(f"{endpoint} {outcome}")
            out += [f"  {kind:<34} {' | '.join(v)}" for kind, v in by_kind.items()]
        out += [f"oversize upload: {u}" for u in self.upload_bytes]
        out += [f"synchronous clients, {w}" for w in self.sync_waits]
        if self.peak_mb:
            out.append("peak memory per process (PSS, MB):")
            out += [f"  {name:<28} {mb:8.0f}" for name, mb in sorted(self.peak_mb.items())]
        if self.growth:
            out.append("private memory (USS, MB), 2nd quarter of the load -> last quarter:")
            out += [f"  {name:<28} {g}" for name, g in sorted(self.growth.items())]
        out += self.notes
        return out


TALLY = Tally()
