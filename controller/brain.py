"""The controller's memory and judgement between AWS reads: plain data in, a decision out, no AWS.

``controller/loop.py`` feeds it what it read (queue counts, the fleet, CloudWatch signals) and
acts on the decision; ``controller/simulate.py`` feeds it a simulated world. Both drive the same
code: the facts (``controller/facts.py``), the policy (``controller/policy.py``) and the
bookkeeping of launches that EC2 does not list yet (its API is eventually consistent: "the
results of an API command you run might not be immediately visible to all subsequent commands",
https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from controller.facts import Learner
from controller.policy import Decision, Observation, PolicySettings, PolicyState, Profile, decide
from infra.observe import (
    ACTIVE_STATES,
    LEAVING_STATES,
    LIVE_STATES,
    Instance,
    InstanceState,
    QueueDepth,
    count_by_state,
)

UNSEEN_LAUNCH_GRACE_S = 30.0  # a launch EC2 has not listed after this long is presumed gone


@dataclass(frozen=True)
class Launch:
    """A launch this controller made: its id, Name tag and when (epoch seconds)."""

    id: str
    name: str
    at: float


@dataclass
class Brain:
    cfg: PolicySettings
    decide: Callable[[Observation, PolicyState, PolicySettings], Decision] = decide
    state: PolicyState = field(default_factory=PolicyState)
    learner: Learner | None = None
    unseen: dict[str, Launch] = field(default_factory=dict)  # launched, not yet listed by describe

    def __post_init__(self) -> None:
        if self.learner is None:
            self.learner = Learner(rate_estimate=self.cfg.rate_estimate, boot_estimate=self.cfg.boot_estimate_s)

    # ------------------------------------------------------------ launches
    def launched(self, launch: Launch) -> None:
        """Record a launch the moment RunInstances answers, before anything else can fail."""
        self.unseen[launch.id] = launch

    def forget_launch(self, instance_id: str) -> None:
        self.unseen.pop(instance_id, None)

    def reconcile(self, fleet: Iterable[Instance], wall: float, ended: Iterable[str] = ()) -> None:
        """Drop launches that describe now lists, that EC2 lists as ended, or that are too old to wait for."""
        seen = {i.id for i in fleet} | set(ended)
        self.unseen = {i: lx for i, lx in self.unseen.items()
                       if i not in seen and wall - lx.at < UNSEEN_LAUNCH_GRACE_S}

    def names_in_use(self, fleet: Iterable[Instance]) -> set[str]:
        """Names held by live instances and by launches EC2 does not list yet: a new name must avoid both."""
        return {i.name for i in fleet if i.state in LIVE_STATES} | {lx.name for lx in self.unseen.values()}

    # ------------------------------------------------------------ observe + decide
    def observe(self, now: float, wall: float, depth: QueueDepth, fleet: list[Instance]) -> Observation:
        counts = count_by_state(fleet)
        learner = self.learner
        running = [(i.id, i.launch_time) for i in fleet if i.state == InstanceState.RUNNING]
        serving = learner.serving(learner.record_tick(wall, depth.visible, depth.backlog, running))
        booting = [wall - launched for iid, launched in running if learner.ready_at(iid, launched) > wall]
        booting += [wall - i.launch_time for i in fleet if i.state == InstanceState.PENDING]
        booting += [wall - lx.at for lx in self.unseen.values()]
        return Observation(
            visible=depth.visible, in_flight=depth.in_flight,
            pending=counts[InstanceState.PENDING] + len(self.unseen),
            running=counts[InstanceState.RUNNING],
            stopping=sum(counts[s] for s in LEAVING_STATES),
            stopped=counts[InstanceState.STOPPED],
            now=now, serving=serving, booting_ages=tuple(sorted(booting)),
            prepaid=len(self.prepaid_ids(fleet, wall)),
            backlog_estimate=learner.backlog_estimate(wall), facts=learner.facts(wall),
        )

    def step(self, obs: Observation) -> Decision:
        decision = self.decide(obs, self.state, self.cfg)
        self.state = decision.new_state
        return decision

    def prepaid_ids(self, fleet: Iterable[Instance], wall: float) -> set[str]:
        """Running instances still inside their billed first minute (the work profile keeps them)."""
        return {i.id for i in fleet if i.state == InstanceState.RUNNING
                and wall - i.launch_time < self.cfg.billing_minimum_s}


def choose_removals(instances: Iterable[Instance], count: int, activity: dict[str, float] | None = None,
                    protect: Iterable[str] = ()) -> list[str]:
    """Ids of the ``count`` instances to remove: pending (they hold no work and are not billed yet), then
    idle (no ``ImagesProcessed`` lately), then the newest; never one in ``protect``."""
    activity = activity or {}
    protect = set(protect)
    candidates = [i for i in instances if i.state in ACTIVE_STATES and i.id not in protect]

    def rank(inst: Instance):
        busy = activity.get(inst.id, 0.0) > 0
        return (inst.state != InstanceState.PENDING, busy, -inst.launch_time, inst.id)

    return [i.id for i in sorted(candidates, key=rank)[: max(0, count)]]


@dataclass(frozen=True)
class Actuation:
    """What one tick does about a decision: launch ``launch`` more, or terminate these ids."""

    launch: int = 0
    drop_unseen: tuple[str, ...] = ()  # our launches EC2 does not list yet: cheapest to take back
    remove: tuple[str, ...] = ()

    @property
    def removals(self) -> tuple[str, ...]:
        return self.drop_unseen + self.remove


def plan_actuation(decision: Decision, obs: Observation, fleet: list[Instance], brain: Brain,
                   activity: dict[str, float] | None, wall: float) -> Actuation:
    """The difference between the desired and the active fleet, as launches or chosen removals (pure)."""
    delta = decision.desired - obs.active
    if delta > 0:
        return Actuation(launch=delta)
    if delta == 0:
        return Actuation()
    unseen = [lx.id for lx in sorted(brain.unseen.values(), key=lambda lx: (-lx.at, lx.id))][: -delta]
    protect = brain.prepaid_ids(fleet, wall) if brain.cfg.profile is Profile.WORK else set()
    remove = choose_removals(fleet, -delta - len(unseen), activity, protect)
    return Actuation(drop_unseen=tuple(unseen), remove=tuple(remove))
