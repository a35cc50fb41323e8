"""The control loop: hold the lease, observe queue, fleet and metrics, decide, actuate the difference, report.

One tick every ``poll_interval_s``: the stack's controller lease (only its holder acts, so
several web instances may each run a controller), every ``IMGREC_REPLY_HEARTBEAT`` seconds a
pass of the reply-queue reaper, two cheap reads (queue attributes, describe instances), every
few seconds the work policy's CloudWatch read (``controller/signals.py``), the decision
(``controller/brain.py``: the pure policy and its memory), then launches or removals for the
difference. Nothing here is specific to moto or AWS, and everything AWS does to a controller is
expected:

- EC2 lists a new instance late: each launch is recorded the moment RunInstances answers
  (before the next one is tried), counted as pending and its Name kept taken until listed;
- a launch whose answer never came is retried with the same ``ClientToken`` (no second instance);
- capacity refusals and throttling back off (2, 4, 8 ... 60 s), are published as metrics
  (the status line and the dashboard show them) and logged;
- terminating a not-yet-listed instance may answer NotFound: it is tried again next tick;
- the lease (and its version) is confirmed immediately before every EC2 call, after the reaper's
  pass: a controller that lost it mid-actuation stops there.

A failed read or actuation skips to the next tick; a CloudWatch failure is only logged.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum

from botocore.exceptions import BotoCoreError, ClientError

from controller import signals
from controller.actuator import NOT_FOUND, Ec2Actuator, Refusal, error_code, free_names, new_token, refusal
from controller.brain import Brain, Launch, plan_actuation
from controller.lease import Lease
from controller.policy import Decision, Observation, PolicySettings, Profile
from controller.reaper import Reaper
from infra.config import Settings
from infra.jobstore import JobStore
from infra.metrics import HIGH_RESOLUTION, Metric, stack_dimensions
from infra.observe import Instance, InstanceState, queue_depth, queue_url

log = logging.getLogger(__name__)

AWS_ERRORS = (ClientError, BotoCoreError)
HEARTBEAT_S = 60.0  # an unchanged decision is logged at INFO at most this often
DEFAULT_METRICS_INTERVAL_S = 10.0
BACKOFF_BASE_S, BACKOFF_MAX_S = 2.0, 60.0
LEARN_AFTER_WORK_S = 120.0  # keep reading metrics this long after the last sign of work


class Action(StrEnum):
    NONE = "none"
    LAUNCH = "launch"
    REMOVE = "remove"
    FAILED = "failed"
    BACKOFF = "backoff"  # launches held back after a capacity refusal or throttling
    LOST_LEASE = "lost-lease"


@dataclass(frozen=True)
class Tick:
    """What one tick saw and did (for logs, tests and the benchmark)."""

    at: float
    backlog: int
    running: int
    pending: int
    desired: int
    action: Action
    changed: list[str]
    reason: str


@dataclass
class Backoff:
    """After a refusal, no launch before ``until``; the wait doubles with each refusal in a row (pure)."""

    until: float = float("-inf")
    failures: int = 0
    kind: Refusal | None = None
    code: str = ""

    def refused(self, now: float, kind: Refusal, code: str) -> float:
        self.failures += 1
        self.kind, self.code = kind, code
        delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (self.failures - 1))
        self.until = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures, self.kind, self.code, self.until = 0, None, "", float("-inf")

    def holding(self, now: float) -> bool:
        return now < self.until


@dataclass
class Outcome:
    action: Action = Action.NONE
    changed: list[str] = field(default_factory=list)
    note: str = ""


class Controller:
    def __init__(self, settings: Settings, clients, *, warm_pool: bool = False,
                 metrics_interval_s: float = DEFAULT_METRICS_INTERVAL_S, clock=time.monotonic,
                 lease: Lease | None = None, wall_clock=time.time):
        self.settings = settings
        self.clients = clients
        self.lease = lease or Lease(clients.dynamodb, settings.jobs_table, settings.controller_lease_s, clock=clock)
        self.reaper = Reaper(settings, clients.sqs, JobStore(clients.dynamodb, settings.jobs_table))
        self.wall_clock = wall_clock
        self._next_reap = float("-inf")
        self.cfg = PolicySettings.from_settings(settings)
        self.brain = Brain(self.cfg)
        self.actuator = Ec2Actuator(clients.ec2, settings, cloudwatch=clients.cloudwatch, warm_pool=warm_pool)
        self.metrics_interval_s = metrics_interval_s
        self.clock = clock
        self.backoff = Backoff()
        self._tokens: dict[str, str] = {}  # Name -> ClientToken of a launch whose answer never came
        self._queue_url: str | None = None
        self._last_metrics = float("-inf")
        self._next_read = float("-inf")
        self._learn_until = float("-inf")
        self._last_logged: tuple | None = None
        self._last_logged_at = float("-inf")

    # ------------------------------------------------------------ observe
    def observe(self, now: float, wall: float) -> tuple[Observation, list[Instance]]:
        if self._queue_url is None:
            self._queue_url = queue_url(self.clients.sqs, self.settings.req_queue)
        depth = queue_depth(self.clients.sqs, self._queue_url)
        fleet = self.actuator.fleet()
        ended = self.actuator.ended(list(self.brain.unseen)) if self.brain.unseen else set()
        self.brain.reconcile(fleet, wall, ended)
        if self.cfg.profile is Profile.WORK:
            self._learn(now, wall, depth.backlog, fleet)
        return self.brain.observe(now, wall, depth, fleet), fleet

    def _learn(self, now: float, wall: float, backlog: int, fleet: list[Instance]) -> None:
        learner = self.brain.learner
        booting = signals.young(fleet, learner, wall)
        if backlog > 0 or booting or self.brain.unseen or learner.recent > 0:
            self._learn_until = now + LEARN_AFTER_WORK_S
        if now >= self._next_read and now < self._learn_until:
            self._next_read = now + signals.READ_EVERY_S
            signals.read(self.clients.cloudwatch, self.settings, fleet, learner, wall)

    # ------------------------------------------------------------ one tick
    def step(self) -> Tick | None:
        """One tick; None when this controller does not hold the lease or could not observe."""
        if not self.lease.tick():
            return None
        now, wall = self.clock(), self.wall_clock()
        self._reap(now)
        try:
            obs, fleet = self.observe(now, wall)
        except AWS_ERRORS as err:
            log.error("cannot observe queue %s / fleet: %s; skipping this tick", self.settings.req_queue, err)
            self._queue_url = None
            return None
        decision = self.brain.step(obs)
        out = self._actuate(decision, obs, fleet, now, wall)
        reason = decision.reason + (f" [{out.note}]" if out.note else "")
        tick = Tick(now, obs.backlog, obs.running, obs.pending, decision.desired, out.action, out.changed, reason)
        self._log(tick, obs)
        self._publish(tick, obs, force=out.action in (Action.LAUNCH, Action.REMOVE))
        return tick

    def _reap(self, now: float) -> None:
        if now < self._next_reap:
            return
        self._next_reap = now + self.settings.reply_heartbeat_s
        try:
            self.reaper.run_once(self.wall_clock(), now)
        except AWS_ERRORS as err:
            log.error("reply-queue reaper pass for %s failed: %s; trying again next pass", self.settings.prefix, err)

    def _actuate(self, decision: Decision, obs: Observation, fleet: list[Instance], now: float, wall: float) -> Outcome:
        delta = decision.desired - obs.active
        activity = None
        try:
            if -delta > len(self.brain.unseen):  # removals beyond our unlisted launches pick listed ones, idle first
                activity = self.actuator.activity(fleet)
            plan = plan_actuation(decision, obs, fleet, self.brain, activity, wall)
            if plan.launch:
                return self._launch(plan.launch, fleet, now, wall)
            if plan.removals:
                return self._remove(plan.drop_unseen, plan.remove)
        except AWS_ERRORS as err:
            log.error("actuation towards %d instances failed: %s; retrying next tick", decision.desired, err)
            return Outcome(Action.FAILED, note=error_code(err))
        return Outcome()

    def _launch(self, n: int, fleet: list[Instance], now: float, wall: float) -> Outcome:
        if self.backoff.holding(now):
            return Outcome(Action.BACKOFF, note=f"launches held back {self.backoff.until - now:.0f} s more after "
                                                f"{self.backoff.code}")
        out = Outcome(Action.LAUNCH)
        stopped = [i.id for i in fleet if i.state == InstanceState.STOPPED][:n] if self.actuator.warm_pool else []
        if stopped:
            if not self.lease.confirm():
                return Outcome(Action.LOST_LEASE, note="lease lost before start_instances")
            out.changed += self.actuator.start_stopped(stopped)
        listed = {i.name for i in fleet}
        for name in [n for n in self._tokens if n in listed]:  # the unanswered launch did happen: EC2 lists it
            del self._tokens[name]
        used = self.brain.names_in_use(fleet) | set(self._tokens)
        retry = list(self._tokens)
        names = (retry + free_names(used, self.settings.app_instance_name, n))[: n - len(out.changed)]
        for name in names:
            if not self.lease.confirm():
                out.action = Action.LOST_LEASE if not out.changed else Action.LAUNCH
                out.note = "lease lost: stopped launching"
                break
            token = self._tokens.get(name) or new_token()
            try:
                iid = self.actuator.run_one(name, token)
            except AWS_ERRORS as err:
                kind = refusal(err)
                if kind is None:  # no answer, or an unexpected one: retry this name with this token next tick
                    self._tokens[name] = token
                    raise
                delay = self.backoff.refused(now, kind, error_code(err))
                self._count(Metric.CAPACITY_ERRORS if kind is Refusal.CAPACITY else Metric.THROTTLED_CALLS)
                log.warning("RunInstances %s (%s) after %d launches this tick; holding launches for %.0f s",
                            "refused for capacity" if kind is Refusal.CAPACITY else "throttled", error_code(err),
                            len(out.changed), delay)
                out.note = f"{error_code(err)}: launches held back {delay:.0f} s"
                if not out.changed:
                    out.action = Action.BACKOFF
                break
            self._tokens.pop(name, None)
            self.brain.launched(Launch(iid, name, wall))  # recorded at once: a later failure cannot lose it
            self.backoff.succeeded()
            out.changed.append(iid)
        return out

    def _remove(self, unseen: tuple[str, ...], visible: tuple[str, ...]) -> Outcome:
        out = Outcome(Action.REMOVE)
        for iid in unseen:  # launched, not listed yet: terminate may answer NotFound; then try again next tick
            if not self.lease.confirm():
                return Outcome(Action.LOST_LEASE if not out.changed else Action.REMOVE, out.changed,
                               "lease lost: stopped removing")
            try:
                self.actuator.remove([iid])
            except ClientError as err:
                if error_code(err) != NOT_FOUND:
                    raise
                log.info("terminate %s: not listed by EC2 yet; trying again next tick", iid)
                continue
            self.brain.forget_launch(iid)
            out.changed.append(iid)
        if visible:
            if not self.lease.confirm():
                return Outcome(Action.LOST_LEASE if not out.changed else Action.REMOVE, out.changed,
                               "lease lost: stopped removing")
            out.changed += self.actuator.remove(list(visible))
        if not out.changed:
            out.action = Action.NONE
        return out

    # ------------------------------------------------------------ report
    def _log(self, tick: Tick, obs: Observation) -> None:
        key = (tick.backlog, tick.running, tick.pending, tick.desired, tick.action)
        level = logging.DEBUG
        if key != self._last_logged or tick.action != Action.NONE or tick.at - self._last_logged_at >= HEARTBEAT_S:
            level = logging.INFO
            self._last_logged, self._last_logged_at = key, tick.at
        log.log(level, "backlog=%d (visible %d, in-flight %d) running=%d pending=%d desired=%d action=%s%s | %s",
                tick.backlog, obs.visible, obs.in_flight, tick.running, tick.pending, tick.desired, tick.action,
                f" {','.join(tick.changed)}" if tick.changed else "", tick.reason)

    def _put(self, data: list[tuple[Metric, float]]) -> None:
        dims = stack_dimensions(self.settings.prefix)
        try:
            self.clients.cloudwatch.put_metric_data(
                Namespace=self.settings.metrics_namespace,
                MetricData=[{"MetricName": str(n), "Dimensions": dims, "Value": float(v), "Unit": "Count",
                             "StorageResolution": HIGH_RESOLUTION} for n, v in data],
            )
        except Exception as err:  # noqa: BLE001 - metrics are best effort; the loop must go on
            log.warning("put_metric_data to %s failed: %s", self.settings.metrics_namespace, err)

    def _count(self, metric: Metric) -> None:
        self._put([(metric, 1.0)])

    def _publish(self, tick: Tick, obs: Observation, *, force: bool) -> None:
        if not force and tick.at - self._last_metrics < self.metrics_interval_s:
            return
        self._last_metrics = tick.at
        per = tick.backlog / obs.running if obs.running else float(tick.backlog)
        self._put([(Metric.BACKLOG, tick.backlog), (Metric.BACKLOG_PER_INSTANCE, per),
                   (Metric.DESIRED_INSTANCES, tick.desired), (Metric.RUNNING_INSTANCES, obs.running)])

    # ------------------------------------------------------------ run
    def run(self, stop: threading.Event) -> int:
        """Tick on a fixed schedule until ``stop`` is set."""
        period = self.settings.poll_interval_s
        cfg = self.cfg
        log.info("controller for %s: profile %s, min %d, max %d, %s, window %g s, poll %g s, warm pool %s",
                 self.settings.prefix, cfg.profile, cfg.min_instances, cfg.max_instances,
                 f"latency target {cfg.latency_target_s:g} s" if cfg.profile is Profile.WORK
                 else f"target {cfg.target_backlog_per_instance}/instance", cfg.scale_in_window_s, period,
                 self.actuator.warm_pool)
        next_at = time.monotonic()
        while not stop.is_set():
            try:
                self.step()
            except Exception:  # an unforeseen failure costs one tick, never the controller
                log.exception("controller tick failed for %s; trying again next tick", self.settings.prefix)
            next_at += period
            delay = next_at - time.monotonic()
            if delay < 0:  # overran: start again from now rather than bursting to catch up
                next_at, delay = time.monotonic(), 0
            stop.wait(delay)
        self.lease.release()
        log.info("controller for %s stopped", self.settings.prefix)
        return 0
