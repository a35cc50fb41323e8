"""The scaling policy: observed backlog, fleet and measured facts in, desired app-tier size out.

Pure and clock-free (the caller passes ``now``), so every rule is unit-tested without AWS
and the simulator (``controller/simulate.py``) drives this very module. Two profiles
(``IMGREC_SCALING``):

**work** (default) sizes the fleet by work. From the measured facts (``controller/facts.py``:
what one instance does per second, what more instances have actually added, how long a launch
takes to serve, the arrival rate) it predicts when the backlog would be gone
(``drain_time``) and launches the fewest instances that get it done within
``IMGREC_LATENCY_TARGET``. An instance is launched only where it pays its way: it must be ready
before the backlog is gone and add enough throughput to be busy for at least
``MIN_BUSY_FRACTION`` of the time it is billed (EC2 bills at least a minute, ``infra/prices.py``);
when no fleet meets the target, the fastest fleet whose instances all pay their way. When fewer
instances would do as well, it keeps the fewest (never below what a stream of arrivals needs),
one scale-in window behind, and never removes an instance inside its paid first minute.

**course** keeps the course's rule: ``ceil(backlog / IMGREC_TARGET_BACKLOG)`` instances,
0 to 15: AWS's "backlog per instance" advice for SQS workers.

Both scale out at once and scale in only after the need has stayed lower for
``scale_in_window_s`` (the largest need in the window wins, as in Kubernetes HPA's downscale
stabilization), so a steady backlog never makes the size go down and up again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from controller.facts import Facts
from infra.config import Settings
from infra.prices import BILLING_MINIMUM_S

MIN_BUSY_FRACTION = 0.25  # a launch must keep the new instance this busy over its billed time
MIN_GAIN = 0.10  # ... and, when the target is out of reach, cut the drain time by at least this much
NEAR_BEST = 0.05  # of the fleets that pay their way, the smallest within this of the fastest
KEEP_SHARE = 0.25  # an instance that adds less than this share of one instance's rate is surplus
MAX_UTILISATION = 0.9  # a stream of arrivals gets capacity for arrivals / this


class Profile(StrEnum):
    WORK = "work"
    COURSE = "course"


@dataclass(frozen=True)
class Observation:
    """One reading of the request queue and the app-tier fleet at time ``now`` (seconds)."""

    visible: int
    in_flight: int
    pending: int = 0
    running: int = 0
    stopping: int = 0
    stopped: int = 0
    now: float = 0.0
    # What the work profile needs besides; the course profile reads none of it.
    serving: int | None = None  # instances whose worker is ready (None: every running one)
    booting_ages: tuple[float, ...] = ()  # seconds since launch of each active instance not yet serving
    prepaid: int = 0  # running instances still inside their billed first minute
    backlog_estimate: float | None = None  # the backlog less what was done since a stale count was taken
    facts: Facts | None = None

    @property
    def backlog(self) -> int:
        return max(0, self.visible) + max(0, self.in_flight)

    @property
    def active(self) -> int:
        """Instances that are, or are about to be, serving: what ``desired`` is compared with."""
        return max(0, self.pending) + max(0, self.running)

    @property
    def work_backlog(self) -> float:
        """The backlog the work profile drains: the estimate where there is one, else the count."""
        return self.backlog if self.backlog_estimate is None else self.backlog_estimate

    @property
    def serving_now(self) -> int:
        """Active instances whose worker is ready (every running one when ``serving`` is unknown)."""
        return min(self.active, self.running if self.serving is None else self.serving)


@dataclass(frozen=True)
class PolicySettings:
    min_instances: int
    max_instances: int
    target_backlog_per_instance: int = 5
    scale_in_window_s: float = 2.0
    profile: Profile = Profile.COURSE
    latency_target_s: float = 60.0
    boot_estimate_s: float = 40.0
    rate_estimate: float = 25.0
    billing_minimum_s: float = BILLING_MINIMUM_S

    def __post_init__(self) -> None:
        if self.min_instances < 0:
            raise ValueError(f"min_instances must be >= 0, got {self.min_instances}")
        if self.max_instances < max(1, self.min_instances):
            raise ValueError(f"max_instances must be >= max(1, min_instances), got {self.max_instances}")
        if self.target_backlog_per_instance < 1:
            raise ValueError(f"target_backlog_per_instance must be >= 1, got {self.target_backlog_per_instance}")
        if self.scale_in_window_s < 0:
            raise ValueError(f"scale_in_window_s must be >= 0, got {self.scale_in_window_s}")
        if self.latency_target_s <= 0 or self.rate_estimate <= 0 or self.boot_estimate_s < 0:
            raise ValueError("latency target and rate estimate must be > 0, boot estimate >= 0")

    @classmethod
    def from_settings(cls, settings: Settings) -> PolicySettings:
        return cls(
            min_instances=settings.min_instances,
            max_instances=settings.max_instances,
            target_backlog_per_instance=settings.target_backlog_per_instance,
            scale_in_window_s=settings.scale_in_window_s,
            profile=Profile(settings.scaling),
            latency_target_s=settings.latency_target_s,
            boot_estimate_s=settings.boot_estimate_s,
            rate_estimate=settings.rate_estimate,
        )

    def clamp(self, n: int) -> int:
        return min(self.max_instances, max(self.min_instances, n))

    def prior(self) -> Facts:
        """The facts before anything is measured: the settings' estimates."""
        return Facts(rate=self.rate_estimate, boot_s=self.boot_estimate_s)


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


# ---------------------------------------------------------------- course profile

def need_for(backlog: int, cfg: PolicySettings) -> int:
    """Course profile: instances needed for ``backlog`` messages alone, within [min, max]."""
    return cfg.clamp(math.ceil(max(0, backlog) / cfg.target_backlog_per_instance))


def course_need(obs: Observation, cfg: PolicySettings) -> tuple[int, str]:
    need = need_for(obs.backlog, cfg)
    per = cfg.target_backlog_per_instance
    why = f"backlog {obs.backlog} needs {need} (target {per}/instance)"
    if need == cfg.max_instances and math.ceil(obs.backlog / per) > cfg.max_instances:
        why += " (capped at max)"
    return need, why


# ---------------------------------------------------------------- work profile

def drain_time(backlog: float, serving: int, boot_left: Sequence[float], capacity: Callable[[int], float],
               arrival: float = 0.0) -> float:
    """Seconds until ``backlog`` is gone with ``serving`` instances now and one more as each of
    ``boot_left`` elapses, while ``arrival`` images/s keep coming; ``math.inf``: never."""
    t, left, n = 0.0, float(max(0.0, backlog)), max(0, serving)
    for at in [*sorted(max(0.0, b) for b in boot_left), math.inf]:
        net = capacity(n) - arrival
        if left <= 0 and net >= 0:
            return t
        if net > 0 and left <= net * (at - t):
            return t + left / net
        if at == math.inf:
            return math.inf
        left = max(0.0, left - net * (at - t))
        t, n = at, n + 1
    return math.inf


def fewest_for(rate: float, facts: Facts, cfg: PolicySettings) -> int:
    """The fewest serving instances that do ``rate`` images/s, or nearly all the fleet can if it cannot."""
    if rate <= 0:
        return 0
    rate = min(rate, facts.capacity(cfg.max_instances) * (1 - NEAR_BEST))
    return next((n for n in range(1, cfg.max_instances + 1) if facts.capacity(n) >= rate), cfg.max_instances)


def steady_need(facts: Facts, cfg: PolicySettings) -> int:
    """The fewest serving instances that keep up with the arrivals (with headroom)."""
    return fewest_for(facts.arrival / MAX_UTILISATION, facts, cfg)


@dataclass(frozen=True)
class Plan:
    """One candidate: ``add`` more instances and the drain time it gives."""

    add: int
    drain_s: float
    busy: float  # the least busy new instance's share of its billed time (1.0: needed for the stream)


def plans(obs: Observation, facts: Facts, cfg: PolicySettings, steady: int) -> list[Plan]:
    """Drain time for 0..room more instances (pure; the table the decision reads); ``steady``: ``steady_need``."""
    backlog, active, serving = obs.work_backlog, obs.active, obs.serving_now
    boot_left = [facts.boot_s - age for age in obs.booting_ages][: max(0, active - serving)]
    boot_left += [facts.boot_s] * (active - serving - len(boot_left))  # booting ones we hold no age for
    out = []
    for add in range(0, max(0, cfg.max_instances - active) + 1):
        drain = drain_time(backlog, serving, boot_left + [facts.boot_s] * add, facts.capacity, facts.arrival)
        if add == 0 or active + add <= steady:
            busy = 1.0
        else:
            gain = (facts.capacity(active + add) - facts.capacity(active + add - 1)) / facts.rate
            work_s = max(0.0, min(drain, 10 * cfg.billing_minimum_s) - facts.boot_s)
            busy = gain * work_s / max(cfg.billing_minimum_s, min(drain, 10 * cfg.billing_minimum_s))
        out.append(Plan(add, drain, busy))
    return out


def choose_launch(table: list[Plan], obs: Observation, cfg: PolicySettings, steady: int) -> Plan:
    """The fewest launches that drain within the target and pay their way; failing that, the fastest
    drain whose launches all pay their way, if it is clearly faster than launching nothing."""
    now = table[0]
    must = max(0, steady - obs.active)
    if obs.active == 0 and obs.work_backlog > 0:
        must = max(must, 1)  # from zero, a backlog needs one instance whatever the sums say
    if now.drain_s <= cfg.latency_target_s and must == 0:
        return now
    paying = [p for p in table[1:] if p.busy >= MIN_BUSY_FRACTION or p.add <= must]
    paying = paying[: next((i for i, p in enumerate(paying) if p.add != i + 1), len(paying))]  # a prefix
    meets = [p for p in paying if p.drain_s <= cfg.latency_target_s and p.add >= must]
    if meets:
        return meets[0]
    if not paying:
        return now
    best = min(p.drain_s for p in paying)
    if best >= now.drain_s * (1 - MIN_GAIN) and must == 0:
        return now
    return next(p for p in paying if p.drain_s <= best * (1 + NEAR_BEST) and p.add >= min(must, paying[-1].add))


def keep_for(obs: Observation, facts: Facts, cfg: PolicySettings, drain_now: float, steady: int) -> int:
    """The fewest instances worth keeping: those still booting only if they will be ready before the
    backlog is gone, and no more than still add ``KEEP_SHARE`` of an instance's rate each (instances on
    EC2 all do; instances sharing a laptop's cores do not); never fewer than lately did work or a stream
    of arrivals needs. Removing an instance that adds its share mid-drain would save no instance-time
    (the same work is done by fewer, for longer) and only delay the last image: so it goes when it idles."""
    floor = max(steady, busy_need(facts, cfg))
    if drain_now <= max(1.0, cfg.scale_in_window_s):
        return min(obs.active, floor)  # the backlog is about gone: what works lately, or a stream, needs
    useful = obs.serving_now + sum(1 for age in obs.booting_ages if facts.boot_s - age < drain_now)
    adds = next((k for k in range(1, cfg.max_instances + 1)
                 if facts.capacity(k + 1) - facts.capacity(k) < KEEP_SHARE * facts.rate), cfg.max_instances)
    return min(obs.active, max(floor, min(useful, adds)))


def busy_need(facts: Facts, cfg: PolicySettings) -> int:
    """The fewest instances that do what the fleet did in the newest measured window."""
    return fewest_for(facts.recent * (1 - NEAR_BEST), facts, cfg)


def work_need(obs: Observation, cfg: PolicySettings) -> tuple[int, str]:
    """The work profile's need now, and why."""
    facts = obs.facts or cfg.prior()
    steady = steady_need(facts, cfg)
    table = plans(obs, facts, cfg, steady)
    plan = choose_launch(table, obs, cfg, steady)
    backlog = round(obs.work_backlog)
    now = table[0]
    drain = "never" if math.isinf(now.drain_s) else f"{now.drain_s:.0f} s"
    if plan.add:
        after = "never" if math.isinf(plan.drain_s) else f"{plan.drain_s:.0f} s"
        why = (f"backlog {backlog} drains in {drain} with {obs.active}; with {obs.active + plan.add}: {after} "
               f"(target {cfg.latency_target_s:g} s; {facts.describe()})")
        return cfg.clamp(obs.active + plan.add), why
    keep = keep_for(obs, facts, cfg, now.drain_s, steady)
    why = f"backlog {backlog} drains in {drain} with {obs.active}, {keep} would do ({facts.describe()})"
    return cfg.clamp(keep), why


# ---------------------------------------------------------------- both

def decide(obs: Observation, state: PolicyState, cfg: PolicySettings) -> Decision:
    need, why = work_need(obs, cfg) if cfg.profile is Profile.WORK else course_need(obs, cfg)
    recent = tuple((t, n) for t, n in state.recent if obs.now - t < cfg.scale_in_window_s)
    if state.last_desired is None and not recent:
        # A (re)started controller adopts the fleet it finds as a recent need, so a
        # restart never drops busy instances before a whole window has passed.
        recent = ((obs.now, cfg.clamp(obs.active)),)
    recent += ((obs.now, need),)
    desired = max(n for _, n in recent)
    if cfg.profile is Profile.WORK and desired < obs.active and obs.prepaid > desired:
        desired = cfg.clamp(min(obs.active, obs.prepaid))  # paid for until their first minute is out: keep them
        why += f"; {obs.prepaid} inside their paid first minute"

    low_since = None
    if need < desired:
        low_since = state.low_since if state.low_since is not None else obs.now
    previous = state.last_desired
    changed = previous is not None and desired != previous
    last_change_at = obs.now if changed or previous is None else state.last_change_at

    if previous is None:
        reason = f"start: {why}, fleet {obs.active}"
    elif desired > previous:
        reason = f"scale-out: {why}"
    elif desired < previous:
        reason = f"scale-in: {why}, low for {cfg.scale_in_window_s:g} s window"
    elif need < desired:
        reason = f"hold: {why}, low for {obs.now - low_since:.1f} s of {cfg.scale_in_window_s:g} s window"
    else:
        reason = f"steady: {why}"

    new_state = PolicyState(last_change_at=last_change_at, low_since=low_since, last_desired=desired, recent=recent)
    return Decision(desired=desired, reason=reason, new_state=new_state, need=need)
