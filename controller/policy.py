"""The scaling policy: observed backlog and fleet in, desired app-tier size out.

Pure and clock-free (the caller passes ``now``), so every rule is unit-tested
without AWS. The rules follow AWS's "backlog per instance" advice for SQS workers
and Kubernetes HPA's downscale stabilization:

- backlog = visible + in-flight request messages (what KEDA's SQS scaler reads);
- raw need = ceil(backlog / target backlog per instance), clamped to [min, max];
- desired = the largest raw need seen within the last ``scale_in_window_s``.

So scale-out happens at once (a higher need wins immediately), scale-in only
after the need has stayed lower for a whole window, and a steady backlog can
never make the size go down and up again (no flapping). With min 0 the first
message gives a need of 1 at once: a prompt wake-up from zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from infra.config import Settings


@dataclass(frozen=True)
class Observation:
    """One reading of the request queue and the app-tier fleet at time ``now`` (seconds, monotonic)."""

    visible: int
    in_flight: int
    pending: int = 0
    running: int = 0
    stopping: int = 0
    stopped: int = 0
    now: float = 0.0

    @property
    def backlog(self) -> int:
        return max(0, self.visible) + max(0, self.in_flight)

    @property
    def active(self) -> int:
        """Instances that are, or are about to be, serving: what ``desired`` is compared with."""
        return max(0, self.pending) + max(0, self.running)


@dataclass(frozen=True)
class PolicySettings:
    min_instances: int
    max_instances: int
    target_backlog_per_instance: int
    scale_in_window_s: float

    def __post_init__(self) -> None:
        if self.min_instances < 0:
            raise ValueError(f"min_instances must be >= 0, got {self.min_instances}")
        if self.max_instances < max(1, self.min_instances):
            raise ValueError(f"max_instances must be >= max(1, min_instances), got {self.max_instances}")
        if self.target_backlog_per_instance < 1:
            raise ValueError(f"target_backlog_per_instance must be >= 1, got {self.target_backlog_per_instance}")
        if self.scale_in_window_s < 0:
            raise ValueError(f"scale_in_window_s must be >= 0, got {self.scale_in_window_s}")

    @classmethod
    def from_settings(cls, settings: Settings) -> PolicySettings:
        return cls(
            min_instances=settings.min_instances,
            max_instances=settings.max_instances,
            target_backlog_per_instance=settings.target_backlog_per_instance,
            scale_in_window_s=settings.scale_in_window_s,
        )

    def clamp(self, n: int) -> int:
        return min(self.max_instances, max(self.min_instances, n))


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between calls; start with ``PolicyState()``."""

    last_change_at: float | None = None
    low_since: float | None = None  # when the raw need first fell below the desired size
    last_desired: int | None = None
    recent: tuple[tuple[float, int], ...] = field(default=())  # (time, raw need) inside the window


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str
    new_state: PolicyState
    need: int = 0  # the raw need from this observation alone


def need_for(backlog: int, cfg: PolicySettings) -> int:
    """Instances needed for ``backlog`` messages alone, within [min, max]."""
    return cfg.clamp(math.ceil(max(0, backlog) / cfg.target_backlog_per_instance))


def decide(obs: Observation, state: PolicyState, cfg: PolicySettings) -> Decision:
    need = need_for(obs.backlog, cfg)
    recent = tuple((t, n) for t, n in state.recent if obs.now - t < cfg.scale_in_window_s)
    if state.last_desired is None and not recent:
        # A (re)started controller adopts the fleet it finds as a recent need, so a
        # restart never drops busy instances before a whole window has passed.
        recent = ((obs.now, cfg.clamp(obs.active)),)
    recent += ((obs.now, need),)
    desired = max(n for _, n in recent)

    low_since = None
    if need < desired:
        low_since = state.low_since if state.low_since is not None else obs.now
    previous = state.last_desired
    changed = previous is not None and desired != previous
    last_change_at = obs.now if changed or previous is None else state.last_change_at

    per = cfg.target_backlog_per_instance
    if previous is None:
        reason = f"start: backlog {obs.backlog} needs {need} (target {per}/instance), fleet {obs.active}"
    elif desired > previous:
        reason = f"scale-out: backlog {obs.backlog} needs {desired} (target {per}/instance)"
    elif desired < previous:
        reason = f"scale-in: backlog {obs.backlog} needs {need}, low for {cfg.scale_in_window_s:g} s window"
    elif need < desired:
        reason = (f"hold: backlog {obs.backlog} needs {need}, low for {obs.now - low_since:.1f} s "
                  f"of {cfg.scale_in_window_s:g} s window")
    else:
        reason = f"steady: backlog {obs.backlog} needs {need}"
    if need == cfg.max_instances and math.ceil(obs.backlog / per) > cfg.max_instances:
        reason += " (capped at max)"

    new_state = PolicyState(last_change_at=last_change_at, low_since=low_since, last_desired=desired, recent=recent)
    return Decision(desired=desired, reason=reason, new_state=new_state, need=need)
