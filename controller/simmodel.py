"""A discrete-event model of the system around the controller, for ``python -m controller.simulate``.

What it models, and nothing more: the request queue (FIFO; workers take batches of up to
``batch`` and hold at most ``hold`` messages, as the worker's pipeline does), app instances
(launch, a boot time drawn from a lognormal distribution, then a worker that does ``rate``
images/s on its own core; optionally t3 CPU credits in standard mode; or, in shared-CPU mode,
every instance, booting ones included, sharing ``cores`` with the emulated AWS as on this
machine), EC2's billing minimum, and the lags the controller reads through: queue counts from a
snapshot refreshed every ``count_lag_s``, new instances invisible to describe for ``ec2_lag_s``,
worker metrics published every ``flush_s`` (per second, as ``app_tier/metrics.py`` does) and
readable ``ingest_s`` later. The controller is the real one: ``controller/brain.py`` with the
real facts and policy, ticking every ``poll_s``. Seeded: the same inputs give the same run.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field, replace

from controller.actuator import IDLE_LOOKBACK_S, free_names
from controller.brain import Brain, Launch, plan_actuation
from controller.policy import PolicySettings
from controller.signals import LOOKBACK_S as READ_LOOKBACK_S
from infra.observe import Instance, InstanceState, QueueDepth
from infra.prices import billed_seconds, usd

AT_REST_LAUNCHED = -3600.0  # instances of the at-rest fleet were launched long before t = 0


@dataclass(frozen=True)
class World:
    """The figures the model runs on; ``controller/simulate.py`` has the cited defaults."""

    name: str
    rate: float  # images/s one worker does on its own core
    boot_median_s: float  # launch -> worker ready
    boot_sigma: float = 0.15  # lognormal shape of the boot time
    pending_s: float = 6.0  # launch -> EC2 'running' (billing starts)
    billing_minimum_s: float = 60.0
    count_lag_s: float = 60.0  # SQS count snapshot interval
    ec2_lag_s: float = 2.0
    ingest_s: float = 2.0  # CloudWatch: put -> readable
    flush_s: float = 5.0  # worker metrics flush
    poll_s: float = 1.0  # controller tick
    read_s: float = 5.0  # controller metrics read
    batch: int = 10
    hold: int = 20  # messages a worker holds: two batches in its pipeline
    instance_type: str = "t3.micro"
    # shared-CPU mode: every instance shares these cores (None: one core per instance, as on EC2)
    cores: float | None = None
    cpu_per_image: float = 0.0  # CPU-s per image over every process (worker, emulated AWS, web tier)
    boot_cpu_s: float = 0.0  # CPU-s one boot costs
    idle_cpu: float = 0.0  # cores a live, idle instance costs
    # t3 standard mode: vCPU-seconds of credit an instance starts with and earns per second; 0/None: unlimited
    credits_start: float | None = None
    credits_per_s: float = 0.2  # t3.micro: 12 credits (vCPU-minutes) an hour
    baseline_rate_factor: float = 0.2  # a t3.micro out of credits: 2 vCPUs at 10 %


@dataclass
class SimInstance:
    id: str
    name: str
    launched: float
    boot_s: float
    at_rest: bool = False
    ready_at: float | None = None
    terminated_at: float | None = None
    held: deque = field(default_factory=deque)  # arrival times of messages held
    working: bool = False  # an image in progress
    work_left: float = 0.0  # of the image in progress, in images
    rate_now: float = 0.0
    since: float = 0.0  # when work_left was last brought up to date
    version: int = 0  # completion events of older versions are stale
    done_times: list = field(default_factory=list)
    flush_phase: float = 0.0
    credits: float = math.inf
    credits_at: float = 0.0
    credit_check: float | None = None  # a pending event for when its credits run out
    fresh: bool = False  # started an image since its completion was last scheduled
    boot_cpu_left: float = 0.0  # shared-CPU mode: CPU-seconds of boot still to run (0: waiting, or done)
    boot_cpu_rate: float = 0.0  # cores its boot gets now
    boot_version: int = 0


@dataclass
class Result:
    policy: str
    workload: str
    images: int
    drain_s: float
    p50_s: float
    p95_s: float
    launches: int
    peak: int
    instance_s: float
    usd: float | None
    unanswered: int = 0
    rest_after_s: float | None = None  # last answer -> the fleet back at its at-rest size
    timeline: list = field(default_factory=list)  # (t, active, backlog) once a second


class Simulation:
    """One run: a world, a controller (``brain``; ``at_rest`` instances running from the start) and arrivals."""

    def __init__(self, world: World, brain: Brain, arrivals: list[float], *, at_rest: int, seed: int = 1,
                 horizon_s: float = 7200.0, policy_name: str = "", workload_name: str = ""):
        self.w, self.brain = world, brain
        self.rng = random.Random(seed)
        self.arrivals = sorted(arrivals)
        self.horizon = horizon_s
        self.names = (policy_name, workload_name)
        self.t = 0.0
        self.events: list = []
        self.seq = 0
        self.queue: deque = deque()  # arrival times of visible messages
        self.in_flight = 0
        self.snapshot = QueueDepth(0, 0)
        self.instances: dict[str, SimInstance] = {}
        self.latencies: list[float] = []
        self.last_done = 0.0
        self.launches = 0
        self.peak = 0
        self.timeline: list = []
        self.trace: list = []  # (t, seen backlog, active, desired, reason) whenever the decision moved
        self.n = 0
        self.at_rest = at_rest
        for _ in range(at_rest):
            inst = self._new_instance(AT_REST_LAUNCHED, at_rest=True)
            inst.ready_at = AT_REST_LAUNCHED + inst.boot_s
            self.brain.learner.record_ready(inst.id, inst.launched, inst.ready_at)
        phase = self.rng.random()
        self._push(phase * world.count_lag_s, "snapshot")
        self._push(self.rng.random() * world.poll_s, "tick")
        self._push(self.rng.random() * world.read_s, "read")
        for i, at in enumerate(self.arrivals):
            if i == 0 or at != self.arrivals[i - 1]:
                self._push(at, "arrive")

    # ------------------------------------------------------------ engine
    def _push(self, at: float, kind: str, *args) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, kind, args))

    def run(self) -> Result:
        pending_arrivals = deque(self.arrivals)
        while self.events:
            at, _, kind, args = heapq.heappop(self.events)
            if at > self.horizon:
                break
            self._advance(at)
            if kind == "arrive":
                while pending_arrivals and pending_arrivals[0] <= at:
                    self.queue.append(pending_arrivals.popleft())
                self._feed_all()
            elif kind == "complete":
                self._complete(*args)
            elif kind == "ready":
                self._ready(*args)
            elif kind == "boot_cpu":
                self._boot_cpu(*args)
            elif kind == "gone":
                self._gone(*args)
            elif kind == "credit":
                self.instances[args[0]].credit_check = None
                self._rates()
            elif kind == "snapshot":
                self.snapshot = QueueDepth(len(self.queue), self.in_flight)
                self._push(at + self.w.count_lag_s, "snapshot")
            elif kind == "tick":
                self._tick()
                if self._finished():
                    break
                self._push(at + self.w.poll_s, "tick")
            elif kind == "read":
                self._read()
                self._push(at + self.w.read_s, "read")
        return self._result()

    def _advance(self, at: float) -> None:
        if self.w.cores is None and self.w.credits_start is None:
            self.t = at
            return
        for inst in self.instances.values():  # bring work in progress up to date before rates change
            if inst.working:
                inst.work_left -= (at - inst.since) * inst.rate_now
                inst.since = at
            if inst.boot_cpu_left > 0:
                inst.boot_cpu_left -= (at - self.t) * inst.boot_cpu_rate
        self.t = at

    def _finished(self) -> bool:
        if self.queue or self.in_flight or len(self.latencies) < len(self.arrivals):
            return False
        live = sum(1 for i in self.instances.values() if i.terminated_at is None)
        return live <= self.at_rest and not self.brain.unseen

    # ------------------------------------------------------------ instances
    def _new_instance(self, at: float, *, at_rest: bool = False) -> SimInstance:
        self.n += 1
        boot = self.w.boot_median_s * math.exp(self.w.boot_sigma * self.rng.gauss(0, 1))
        inst = SimInstance(id=f"i-{self.n:06d}", name=f"sim-{self.n}", launched=at, boot_s=boot, at_rest=at_rest,
                           flush_phase=self.rng.random() * self.w.flush_s,
                           credits=math.inf if self.w.credits_start is None else self.w.credits_start,
                           credits_at=max(0.0, at))
        self.instances[inst.id] = inst
        return inst

    def _launch(self, name: str) -> str:
        inst = self._new_instance(self.t)
        inst.name = name
        self.launches += 1
        if self.w.cores is None:  # its own machine: the boot takes its time, whatever else runs
            self._push(self.t + inst.boot_s, "ready", inst.id)
        else:  # shared cores: a wait, then CPU work that competes with everything else running
            cpu = min(self.w.boot_cpu_s, inst.boot_s)
            self._push(self.t + inst.boot_s - cpu, "boot_cpu", inst.id)
        return inst.id

    def _boot_cpu(self, iid: str) -> None:
        inst = self.instances[iid]
        if inst.terminated_at is None:
            inst.boot_cpu_left = min(self.w.boot_cpu_s, inst.boot_s)
            self._rates()

    def _ready(self, iid: str, version: int | None = None) -> None:
        inst = self.instances[iid]
        if inst.terminated_at is not None or inst.ready_at is not None:
            return
        if version is not None and version != inst.boot_version:
            return
        inst.boot_cpu_left, inst.boot_cpu_rate = 0.0, 0.0
        inst.ready_at = self.t
        self._rates()
        self._feed(inst)

    def _terminate(self, iid: str) -> None:
        inst = self.instances.get(iid)
        if inst is None or inst.terminated_at is not None:
            return
        inst.terminated_at = self.t  # stops receiving now; its worker finishes what it holds (two-stage stop)
        self._push(self.t, "gone", iid)

    def _gone(self, iid: str) -> None:
        inst = self.instances[iid]
        if inst.held or inst.working:  # still draining its held messages: look again shortly
            self._push(self.t + 0.5, "gone", iid)
        self._rates()

    def _serving(self, inst: SimInstance) -> bool:
        return inst.ready_at is not None and inst.ready_at <= self.t and inst.terminated_at is None

    def _feed_all(self) -> None:
        idle = [i for i in self.instances.values() if self._serving(i) and not i.working]
        self.rng.shuffle(idle)  # long-polling workers: SQS answers one of them
        for inst in idle:
            self._feed(inst)
        for inst in self.instances.values():
            if self._serving(inst) and inst.working:
                self._feed(inst)

    def _feed(self, inst: SimInstance) -> None:
        """Receive a batch while there is room for one, then start work if idle."""
        if not self._serving(inst):
            return
        while self.queue and len(inst.held) <= self.w.hold - self.w.batch:
            for _ in range(min(self.w.batch, len(self.queue))):
                inst.held.append(self.queue.popleft())
                self.in_flight += 1
        if inst.held and not inst.working:
            self._start(inst)
            self._rates()

    def _start(self, inst: SimInstance) -> None:
        inst.working, inst.work_left, inst.since, inst.fresh = True, 1.0, self.t, True

    def _complete(self, iid: str, version: int) -> None:
        inst = self.instances[iid]
        if version != inst.version or not inst.working:
            return
        arrived = inst.held.popleft()
        self.in_flight -= 1
        self.latencies.append(self.t - arrived)
        self.last_done = self.t
        inst.done_times.append(self.t)
        inst.working = False
        if inst.terminated_at is None:
            self._feed(inst)
        if inst.held and not inst.working:  # terminating: drain what is held
            self._start(inst)
        self._rates()

    # ------------------------------------------------------------ rates (shared CPU, credits)
    def _rate_for(self, inst: SimInstance, cpu: float | None) -> float:
        rate = self.w.rate
        if cpu is not None:
            rate = min(rate, cpu / max(1e-9, self.w.cpu_per_image))
        if self.w.credits_start is not None:
            inst.credits += (self.t - inst.credits_at) * (self.w.credits_per_s - (1.0 if inst.working else 0.0))
            inst.credits = min(inst.credits, 86400 * self.w.credits_per_s)
            inst.credits_at = self.t
            if inst.credits <= 0:
                inst.credits = 0.0
                rate *= self.w.baseline_rate_factor
        return rate

    def _shares(self, busy: list[SimInstance], booting: list[SimInstance], live: int) -> dict[str, float]:
        """Shared-CPU mode: cores per consumer, processor sharing with caps (water-filling). A worker wants at most
        what its own ceiling makes it do (images/s x CPU per image, the emulated AWS's share included), a boot
        one core."""
        demand = {i.id: self.w.rate * self.w.cpu_per_image for i in busy}
        demand.update({i.id: 1.0 for i in booting})
        left = max(0.05 * self.w.cores, self.w.cores - self.w.idle_cpu * live)
        out: dict[str, float] = {}
        for iid, want in sorted(demand.items(), key=lambda kv: kv[1]):
            share = left / (len(demand) - len(out))
            out[iid] = min(want, share)
            left -= out[iid]
        return out

    def _rates(self) -> None:
        live = [i for i in self.instances.values() if i.terminated_at is None or i.working]
        busy = [i for i in live if i.working]
        shares: dict[str, float] | None = None
        if self.w.cores is not None:
            booting = [i for i in live if i.boot_cpu_left > 0 and i.terminated_at is None]
            shares = self._shares(busy, booting, len(live))
            for inst in booting:
                rate = shares[inst.id]
                if rate != inst.boot_cpu_rate:
                    inst.boot_cpu_rate = rate
                    inst.boot_version += 1
                    self._push(self.t + inst.boot_cpu_left / max(rate, 1e-9), "ready", inst.id, inst.boot_version)
        for inst in busy:
            rate = self._rate_for(inst, None if shares is None else shares[inst.id])
            if inst.fresh or rate != inst.rate_now:
                inst.fresh, inst.rate_now = False, rate
                inst.version += 1
                self._push(self.t + max(0.0, inst.work_left) / rate, "complete", inst.id, inst.version)
            if self.w.credits_start is not None and inst.credits > 0:
                out_at = self.t + inst.credits / (1.0 - self.w.credits_per_s)
                if inst.credit_check is None or out_at < inst.credit_check:
                    inst.credit_check = out_at
                    self._push(out_at, "credit", inst.id)
        self.peak = max(self.peak, sum(1 for i in self.instances.values() if i.terminated_at is None))

    # ------------------------------------------------------------ what the controller reads
    def _visible_fleet(self) -> list[Instance]:
        out = []
        for inst in self.instances.values():
            if inst.launched + self.w.ec2_lag_s > self.t:
                continue
            if inst.terminated_at is not None:
                continue  # app_instances lists live states only
            state = InstanceState.RUNNING if self.t >= inst.launched + self.w.pending_s else InstanceState.PENDING
            out.append(Instance(id=inst.id, name=inst.name, state=state, launch_time=inst.launched))
        return out

    def _published_until(self, inst: SimInstance, at: float) -> float:
        """The latest time whose images ``inst`` had published and CloudWatch serves at ``at``."""
        cut = at - self.w.ingest_s
        k = math.floor((cut - inst.flush_phase) / self.w.flush_s)
        regular = inst.flush_phase + k * self.w.flush_s
        first = inst.done_times[0] if inst.done_times else math.inf  # the first image is published at once
        return max(regular, first if first <= cut else -math.inf)

    def _read(self) -> None:
        learner = self.brain.learner
        now = self.t
        lo = math.floor(now) - READ_LOOKBACK_S
        per_second: dict[int, float] = {}
        for inst in self.instances.values():
            until = self._published_until(inst, now)
            times = inst.done_times
            j = bisect_right(times, until) - 1
            while j >= 0 and times[j] >= lo:
                s = math.floor(times[j])
                per_second[s] = per_second.get(s, 0.0) + 1
                j -= 1
            if inst.ready_at is not None and inst.ready_at + self.w.ingest_s <= now:
                learner.record_ready(inst.id, inst.launched, inst.ready_at)
        learner.record_images(lo, math.floor(now) + 1, per_second)
        learner.update(now)

    def _activity(self) -> dict[str, float]:
        out = {}
        for inst in self.instances.values():
            until = min(self._published_until(inst, self.t), self.t)
            times = inst.done_times
            out[inst.id] = float(bisect_right(times, until) - bisect_right(times, self.t - IDLE_LOOKBACK_S))
        return out

    def _tick(self) -> None:
        brain, now = self.brain, self.t
        fleet = self._visible_fleet()
        ended = [i.id for i in self.instances.values() if i.terminated_at is not None]
        brain.reconcile(fleet, now, ended)
        obs = brain.observe(now, now, self.snapshot, fleet)
        decision = brain.step(obs)
        act = plan_actuation(decision, obs, fleet, brain, self._activity(), now)
        if act.launch or act.removals or not self.trace or self.trace[-1][3] != decision.desired:
            self.trace.append((round(now, 1), obs.backlog, obs.active, decision.desired, decision.reason))
        for name in free_names(brain.names_in_use(fleet), "sim-app-{}".format, act.launch):
            iid = self._launch(name)
            brain.launched(Launch(iid, name, now))
        for iid in act.removals:
            brain.forget_launch(iid)
            self._terminate(iid)
        active = sum(1 for i in self.instances.values() if i.terminated_at is None)
        self.timeline.append((round(now, 1), active, len(self.queue) + self.in_flight))

    # ------------------------------------------------------------ result
    def _result(self) -> Result:
        lat = sorted(self.latencies)
        end = self.last_done
        seconds = 0.0
        for inst in self.instances.values():
            # The fleet left at rest runs on whatever happens: counted until the last answer, like the one
            # that was there at the start. Launches are billed from 'running' until terminated, a minute at least.
            start = 0.0 if inst.at_rest else inst.launched + self.w.pending_s
            stop = inst.terminated_at if inst.terminated_at is not None else end
            if inst.at_rest:
                seconds += max(0.0, min(stop, end) - start)
            elif stop > start or inst.terminated_at is None:
                seconds += billed_seconds(stop - start, self.w.billing_minimum_s)
        rest = next((t - end for t, active, _ in self.timeline if t >= end and active <= self.at_rest), None)
        return Result(
            policy=self.names[0], workload=self.names[1], images=len(self.arrivals),
            drain_s=end - (self.arrivals[0] if self.arrivals else 0.0),
            p50_s=_quantile(lat, 0.50), p95_s=_quantile(lat, 0.95), launches=self.launches, peak=self.peak,
            instance_s=seconds, usd=usd(self.w.instance_type, seconds),
            unanswered=len(self.arrivals) - len(lat), rest_after_s=rest, timeline=self.timeline)


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def with_policy(world: World, cfg: PolicySettings) -> PolicySettings:
    """The policy settings as this world bills them."""
    return replace(cfg, billing_minimum_s=world.billing_minimum_s)
