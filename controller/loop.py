"""The control loop: hold the lease, observe queue and fleet, decide, actuate the difference, report.

One tick every ``poll_interval_s``: the stack's controller lease (only its holder
acts, so several web instances may each run a controller), two cheap reads (queue
attributes, describe instances), the pure ``decide``, then launches or removals for
the difference, and every ``IMGREC_REPLY_HEARTBEAT`` seconds a pass of the
reply-queue reaper. A failed read or actuation skips to the next tick; a
CloudWatch failure is only logged. Nothing here is specific to moto or AWS.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from enum import StrEnum

from botocore.exceptions import BotoCoreError, ClientError

from controller.actuator import Ec2Actuator
from controller.lease import Lease
from controller.policy import Decision, Observation, PolicySettings, PolicyState, decide
from controller.reaper import Reaper
from infra.config import Settings
from infra.jobstore import JobStore
from infra.metrics import Metric, stack_dimensions
from infra.observe import LEAVING_STATES, Instance, InstanceState, count_by_state, queue_depth, queue_url

log = logging.getLogger(__name__)

AWS_ERRORS = (ClientError, BotoCoreError)
UNSEEN_LAUNCH_GRACE_S = 30.0  # describe_instances on AWS may lag a fresh run_instances
HEARTBEAT_S = 60.0  # an unchanged decision is logged at INFO at most this often
DEFAULT_METRICS_INTERVAL_S = 10.0


class Action(StrEnum):
    NONE = "none"
    LAUNCH = "launch"
    REMOVE = "remove"
    FAILED = "failed"


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
        self.actuator = Ec2Actuator(clients.ec2, settings, cloudwatch=clients.cloudwatch, warm_pool=warm_pool)
        self.state = PolicyState()
        self.metrics_interval_s = metrics_interval_s
        self.clock = clock
        self._queue_url: str | None = None
        self._launched: dict[str, float] = {}  # id -> when, until describe_instances shows it
        self._last_metrics = float("-inf")
        self._last_logged: tuple | None = None
        self._last_logged_at = float("-inf")

    # ------------------------------------------------------------ observe
    def observe(self, now: float) -> tuple[Observation, list[Instance]]:
        if self._queue_url is None:
            self._queue_url = queue_url(self.clients.sqs, self.settings.req_queue)
        depth = queue_depth(self.clients.sqs, self._queue_url)
        fleet = self.actuator.fleet()
        counts = count_by_state(fleet)
        seen = {i.id for i in fleet}
        self._launched = {i: t for i, t in self._launched.items() if i not in seen and now - t < UNSEEN_LAUNCH_GRACE_S}
        for gone in self.actuator.ended(list(self._launched)):
            del self._launched[gone]
        obs = Observation(
            visible=depth.visible, in_flight=depth.in_flight,
            pending=counts[InstanceState.PENDING] + len(self._launched),
            running=counts[InstanceState.RUNNING],
            stopping=sum(counts[s] for s in LEAVING_STATES),
            stopped=counts[InstanceState.STOPPED],
            now=now,
        )
        return obs, fleet

    # ------------------------------------------------------------ one tick
    def step(self) -> Tick | None:
        """One tick; None when this controller does not hold the lease or could not observe."""
        if not self.lease.tick():
            return None
        now = self.clock()
        self._reap(now)
        try:
            obs, fleet = self.observe(now)
        except AWS_ERRORS as err:
            log.error("cannot observe queue %s / fleet: %s; skipping this tick", self.settings.req_queue, err)
            self._queue_url = None
            return None
        decision = decide(obs, self.state, self.cfg)
        self.state = decision.new_state
        action, changed = self._actuate(decision, obs, fleet, now)
        tick = Tick(now, obs.backlog, obs.running, obs.pending, decision.desired, action, changed, decision.reason)
        self._log(tick, obs)
        self._publish(tick, obs, force=action != Action.NONE)
        return tick

    def _reap(self, now: float) -> None:
        if now < self._next_reap:
            return
        self._next_reap = now + self.settings.reply_heartbeat_s
        try:
            self.reaper.run_once(self.wall_clock(), now)
        except AWS_ERRORS as err:
            log.error("reply-queue reaper pass for %s failed: %s; trying again next pass", self.settings.prefix, err)

    def _actuate(self, decision: Decision, obs: Observation, fleet: list[Instance], now: float):
        delta = decision.desired - obs.active
        try:
            if delta > 0:
                ids = self.actuator.launch(delta, fleet)
                self._launched.update((i, now) for i in ids)
                return Action.LAUNCH, ids
            if delta < 0:
                unseen = list(self._launched)[: -delta]  # launched but not yet listed: remove those first
                ids = self.actuator.remove(unseen) if unseen else []
                for i in unseen:
                    self._launched.pop(i, None)
                ids += self.actuator.scale_in(-delta - len(unseen), fleet)
                return Action.REMOVE, ids
        except AWS_ERRORS as err:
            log.error("actuation towards %d instances failed: %s; retrying next tick", decision.desired, err)
            return Action.FAILED, []
        return Action.NONE, []

    def _log(self, tick: Tick, obs: Observation) -> None:
        key = (tick.backlog, tick.running, tick.pending, tick.desired, tick.action)
        level = logging.DEBUG
        if key != self._last_logged or tick.action != Action.NONE or tick.at - self._last_logged_at >= HEARTBEAT_S:
            level = logging.INFO
            self._last_logged, self._last_logged_at = key, tick.at
        log.log(level, "backlog=%d (visible %d, in-flight %d) running=%d pending=%d desired=%d action=%s%s | %s",
                tick.backlog, obs.visible, obs.in_flight, tick.running, tick.pending, tick.desired, tick.action,
                f" {','.join(tick.changed)}" if tick.changed else "", tick.reason)

    def _publish(self, tick: Tick, obs: Observation, *, force: bool) -> None:
        if not force and tick.at - self._last_metrics < self.metrics_interval_s:
            return
        self._last_metrics = tick.at
        dims = stack_dimensions(self.settings.prefix)
        per = tick.backlog / obs.running if obs.running else float(tick.backlog)
        data = [
            (Metric.BACKLOG, tick.backlog), (Metric.BACKLOG_PER_INSTANCE, per),
            (Metric.DESIRED_INSTANCES, tick.desired), (Metric.RUNNING_INSTANCES, obs.running),
        ]
        try:
            self.clients.cloudwatch.put_metric_data(
                Namespace=self.settings.metrics_namespace,
                MetricData=[{"MetricName": str(n), "Dimensions": dims, "Value": float(v), "Unit": "Count"} for n, v in data],
            )
        except Exception as err:  # noqa: BLE001 - metrics are best effort; the loop must go on
            log.warning("put_metric_data to %s failed: %s", self.settings.metrics_namespace, err)

    # ------------------------------------------------------------ run
    def run(self, stop: threading.Event) -> int:
        """Tick on a fixed schedule until ``stop`` is set."""
        period = self.settings.poll_interval_s
        log.info("controller for %s: min %d, max %d, target %d/instance, window %g s, poll %g s, warm pool %s",
                 self.settings.prefix, self.cfg.min_instances, self.cfg.max_instances,
                 self.cfg.target_backlog_per_instance, self.cfg.scale_in_window_s, period, self.actuator.warm_pool)
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
