"""What the controller has measured about its own fleet: bookkeeping over plain data, no AWS and no clock.

The work policy sizes the fleet from four facts, each measured here from what the loop reads
through the AWS API (``controller/signals.py``), never from anything local:

- **service rate**: images/s the fleet does while every serving instance has work waiting, by
  the number of serving instances (the *scaling curve*). Samples are whole windows of
  ``WINDOW_S`` seconds of the stack's per-second ``ImagesProcessed`` in which the serving count
  held and the queue never ran dry, fitted to a scalability law (``Facts``). Where more instances
  did not raise the rate (instances sharing a few cores, as on a laptop), the fit says so and the
  policy stops launching.
- **boot time**: launch (EC2 ``LaunchTime``) to the worker's ``WorkerStarts`` datum, the median
  of the last ``BOOT_SAMPLES`` instances.
- **arrival rate**: images done plus the change in backlog between queue counts at least a
  window apart, the median of the last ``ARRIVAL_WINDOWS`` spans (one burst does not make a stream).
- **recent rate**: images/s done in the newest complete window, to correct a stale queue count.

Until a fact is measured the settings' estimates stand in (``IMGREC_RATE_ESTIMATE``,
``IMGREC_BOOT_ESTIMATE``). Metrics for the newest ``SETTLE_S`` seconds are still on their way
(a worker publishes every 5 s, CloudWatch takes a moment to serve a datum), so windows end before that.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

WINDOW_S = 10
SETTLE_S = 8.0
PIPELINE_S = 2.0  # an image done at t was received up to this long before: conditions must hold from then
CURVE_ALPHA = 0.3  # weight of a new sample in the curve's running average
CURVE_MAX_AGE_S = 3600.0  # a scaling-curve point not confirmed for an hour is forgotten
BOOT_SAMPLES = 10
ARRIVAL_WINDOWS = 3
FLOOR_MAX_AGE_S = 300.0
HISTORY_S = 900.0
HELD_PER_INSTANCE = 20  # a worker holds up to two batches of 10 (app_tier/worker.py): more than that waits for it
CONTENTION_STEPS = 200
READY_FALLBACK_FACTOR = 3.0  # an instance with no WorkerStarts datum counts as serving after 3 boot times
READY_FALLBACK_MIN_S = 120.0


@dataclass(frozen=True)
class Facts:
    """The measured (or assumed) facts the work policy decides from; plain data.

    Throughput with ``n`` serving instances follows ``n * rate / (1 + contention * (n - 1))``: Gunther's
    universal scalability law without its coherency term. ``contention`` 0: each instance adds its own
    ``rate`` (EC2, one machine each); towards 1: instances share a fixed amount of CPU and more of them add
    nothing (a laptop). Both are fitted to the measured points; with nothing measured above one instance
    the fleet is assumed to scale (contention 0) until it shows otherwise.
    """

    rate: float  # images/s one serving instance does with work waiting
    boot_s: float  # launch -> worker ready
    curve: tuple[tuple[int, float], ...] = ()  # (serving instances, images/s with work waiting), measured
    arrival: float = 0.0  # sustained images/s arriving
    recent: float = 0.0  # images/s done in the newest complete window
    rate_measured: bool = False
    boot_measured: bool = False
    contention: float = 0.0

    def capacity(self, n: int) -> float:
        """Images/s ``n`` serving instances do with work waiting."""
        if n <= 0:
            return 0.0
        return n * self.rate / (1 + self.contention * (n - 1))

    def describe(self) -> str:
        rate = f"{self.rate:.1f}/s each" + ("" if self.rate_measured else " (assumed)")
        boot = f"boot {self.boot_s:.0f} s" + ("" if self.boot_measured else " (assumed)")
        curve = ", ".join(f"{n}:{x:.0f}" for n, x in self.curve)
        shared = f", contention {self.contention:.2f}" if self.contention >= 0.005 else ""
        return f"{rate}, {boot}" + (f", measured {{{curve}}}/s{shared}" if curve else "") + (
            f", arrivals {self.arrival:.1f}/s" if self.arrival > 0.05 else "")


def fit_scaling(points: Sequence[tuple[int, float]], rate_estimate: float) -> tuple[float, float]:
    """(rate, contention) from measured (n, images/s) points (pure), least relative squared error.
    Points at two or more fleet sizes fix both; one point at one instance fixes the rate (contention 0
    until more are measured); one point at n > 1 fixes contention against the larger of the estimate and
    the per-instance rate it shows."""
    points = [(n, x) for n, x in points if n >= 1 and x > 0]
    if not points:
        return rate_estimate, 0.0
    grid = [i / CONTENTION_STEPS for i in range(CONTENTION_STEPS + 1)]
    if len({n for n, _ in points}) >= 2:
        def best_rate(c: float) -> float:
            g = [(n / (1 + c * (n - 1)), x) for n, x in points]
            return sum(gi / x for gi, x in g) / sum(gi * gi / (x * x) for gi, x in g)

        def error(c: float) -> float:
            r = best_rate(c)
            return sum((n * r / (1 + c * (n - 1)) - x) ** 2 / x ** 2 for n, x in points)

        contention = min(grid, key=error)
        return best_rate(contention), contention
    ((n, x),) = points
    if n == 1:
        return x, 0.0
    rate = max(rate_estimate, x / n)
    return rate, min(grid, key=lambda c: abs(n * rate / (1 + c * (n - 1)) - x))


@dataclass(frozen=True)
class TickRecord:
    """What the controller saw at one tick (epoch seconds)."""

    t: float
    visible: int
    backlog: int
    running: tuple[tuple[str, float], ...]  # (instance id, launch time) of every running instance
    since: float  # when these counts were first seen (a stale snapshot keeps its counts)


@dataclass
class _CurvePoint:
    rate: float
    at: float
    samples: int = 1


@dataclass
class Learner:
    """Accumulates ticks and metric reads into ``Facts``. Deterministic: every time is passed in."""

    rate_estimate: float
    boot_estimate: float
    window_s: int = WINDOW_S
    settle_s: float = SETTLE_S
    ticks: deque = field(default_factory=deque)
    images: dict[int, float] = field(default_factory=dict)  # epoch second -> images done by the fleet
    covered: tuple[int, int] | None = None  # seconds [lo, hi) the image reads have covered, contiguous
    ready: dict[str, float] = field(default_factory=dict)  # instance id -> when its worker started
    boots: deque = field(default_factory=lambda: deque(maxlen=BOOT_SAMPLES))
    curve: dict[int, _CurvePoint] = field(default_factory=dict)
    arrivals: deque = field(default_factory=lambda: deque(maxlen=ARRIVAL_WINDOWS))
    arrivals_to: float | None = None  # arrival spans ending before this are done
    floor: dict[int, tuple[float, float]] = field(default_factory=dict)  # n -> (most images/s seen, when)
    recent: float = 0.0
    evaluated_to: int | None = None  # windows ending at or before this second are done

    # ------------------------------------------------------------ inputs
    def record_tick(self, t: float, visible: int, backlog: int, running: Iterable[tuple[str, float]]) -> TickRecord:
        visible, backlog = max(0, visible), max(0, backlog)
        prev = self.ticks[-1] if self.ticks else None
        since = prev.since if prev is not None and (prev.visible, prev.backlog) == (visible, backlog) else t
        running = tuple(sorted(running))
        if prev is not None and running == prev.running:
            running = prev.running  # one tuple shared while the fleet holds
        tick = TickRecord(t, visible, backlog, running, since)
        self.ticks.append(tick)
        while self.ticks and self.ticks[0].t < t - HISTORY_S:
            self.ticks.popleft()
        return tick

    def record_images(self, start: int, end: int, per_second: Mapping[int, float]) -> None:
        """The stack's ImagesProcessed for every second in [start, end) (seconds absent: none done)."""
        if end <= start:
            return
        for second in range(start, end):
            self.images[second] = float(per_second.get(second, 0.0))
        if self.covered is None or start > self.covered[1]:
            self.covered = (start, end)
        else:
            self.covered = (min(self.covered[0], start), max(self.covered[1], end))
        horizon = end - int(HISTORY_S)
        for second in [s for s in self.images if s < horizon]:
            del self.images[second]
        if self.covered[0] < horizon:
            self.covered = (horizon, self.covered[1])

    def record_ready(self, instance_id: str, launch_t: float, ready_t: float) -> None:
        """When ``instance_id``'s worker started; its boot time is a sample once (the first start only)."""
        if instance_id in self.ready:
            return
        self.ready[instance_id] = ready_t
        boot = ready_t - launch_t
        if 0 <= boot <= 3600:
            self.boots.append(boot)

    def forget(self, keep: Iterable[str]) -> None:
        """Drop ready times of instances that are gone."""
        keep = set(keep)
        for iid in [i for i in self.ready if i not in keep]:
            del self.ready[iid]

    # ------------------------------------------------------------ derived
    @property
    def boot_s(self) -> float:
        return statistics.median(self.boots) if self.boots else self.boot_estimate

    def ready_at(self, instance_id: str, launch_t: float) -> float:
        """When the instance's worker started: measured, else assumed long after its launch."""
        if instance_id in self.ready:
            return self.ready[instance_id]
        return launch_t + max(READY_FALLBACK_MIN_S, READY_FALLBACK_FACTOR * self.boot_s)

    def serving(self, tick: TickRecord) -> int:
        """Instances running at ``tick`` whose worker had started by then."""
        return sum(1 for iid, launched in tick.running if self.ready_at(iid, launched) <= tick.t)

    def measured_ready(self, instance_id: str) -> bool:
        return instance_id in self.ready

    def update(self, now: float) -> None:
        """Evaluate every complete window not yet evaluated (call after each metrics read)."""
        if self.covered is None or not self.ticks:
            return
        w = self.window_s
        last_end = min(self.covered[1], math.floor(now - self.settle_s))
        last_end -= last_end % w
        first_end = self.covered[0] + w
        first_end += (-first_end) % w
        if self.evaluated_to is not None:
            first_end = max(first_end, self.evaluated_to + w)
        for end in range(first_end, last_end + 1, w):
            self._evaluate(end - w, end)
            self.evaluated_to = end
        self._arrivals(min(self.covered[1], now - self.settle_s))
        for n in [n for n, p in self.curve.items() if now - p.at > CURVE_MAX_AGE_S]:
            del self.curve[n]
        for n in [n for n, (_, at) in self.floor.items() if now - at > FLOOR_MAX_AGE_S]:
            del self.floor[n]

    def _done(self, start: float, end: float) -> float:
        return sum(self.images.get(s, 0.0) for s in range(math.ceil(start), math.ceil(end)))

    def _evaluate(self, start: int, end: int) -> None:
        done = self._done(start, end)
        ticks = [k for k in self.ticks if start - PIPELINE_S <= k.t < end]
        if not ticks:
            return
        w = end - start
        self.recent = done / w
        serving = {self.serving(k) for k in ticks}
        if len(serving) != 1 or len(ticks) < w / 2:
            return
        (n,) = serving
        if n < 1 or done <= 0:
            return
        best, _ = self.floor.get(n, (0.0, 0.0))
        self.floor[n] = (max(best, done / w), end)  # whatever the queue did, n instances did at least this
        if any(self.backlog_at(k) <= n * HELD_PER_INSTANCE for k in ticks):
            return  # some instance may have waited for work: not a rate sample
        self._sample(n, done / w, end)

    def _arrivals(self, until: float) -> None:
        """Arrival samples between queue counts that changed at least ``window_s`` apart: images done plus
        the change in backlog, over that span. Spans end where a count was first seen, so a snapshot
        refreshed once a minute gives one sample a minute, and an unchanged (stale) count gives none."""
        runs = []  # (first seen, backlog) of each distinct count, oldest first
        for k in self.ticks:
            if not runs or runs[-1][0] != k.since:
                runs.append((k.since, k.backlog))
        lo = self.covered[0] if self.covered else until
        start = None
        for since, backlog in runs:
            if since < lo or since > until:
                continue
            if self.arrivals_to is not None and since < self.arrivals_to:
                continue
            if start is None:
                start = (since, backlog)
                continue
            if since - start[0] >= self.window_s:
                span = since - start[0]
                self.arrivals.append(max(0.0, (self._done(start[0], since) + backlog - start[1]) / span))
                self.arrivals_to = since
                start = (since, backlog)

    def _sample(self, n: int, rate: float, at: float) -> None:
        point = self.curve.get(n)
        if point is None:
            self.curve[n] = _CurvePoint(rate, at)
        else:
            point.rate += CURVE_ALPHA * (rate - point.rate)
            point.at, point.samples = at, point.samples + 1

    def backlog_at(self, tick: TickRecord) -> float:
        """The backlog count at ``tick`` less the images done since that count was first seen: a queue's
        count may be a snapshot up to a minute old on AWS, and a stale one must not pass for work waiting."""
        return tick.backlog - self._done(tick.since, tick.t)

    def backlog_estimate(self, now: float) -> float:
        """The latest backlog count less what the fleet has done since it last changed (see visible_estimate)."""
        if not self.ticks:
            return 0.0
        tick = self.ticks[-1]
        if tick.backlog > 0 and self._idle_under(tick):
            return 0.0  # workers that long-poll would have taken visible messages: the count is stale
        known_to = self.covered[1] if self.covered else tick.since
        known_to = max(tick.since, min(known_to, now - self.settle_s))  # metrics are complete up to here
        unknown = max(0.0, now - known_to)  # ... and for the rest, the latest rate
        return max(0.0, tick.backlog - self._done(tick.since, known_to) - self.recent * unknown)

    def arrival_rate(self, now: float | None = None) -> float:
        """The median of the last spans, too few counting as nothing arriving: one burst is not a stream.
        Unless the newest span is borne out: since the latest count the fleet has done clearly more than
        that count held, so images have kept arriving (a stream seen through a stale count)."""
        if self.ticks and self.ticks[-1].backlog == 0 and self.recent == 0:
            return 0.0  # nothing queued and nothing done lately: nothing is arriving now (a stream has ended)
        samples = list(self.arrivals) + [0.0] * (ARRIVAL_WINDOWS - len(self.arrivals))
        median = statistics.median(samples)
        if self.arrivals and self.arrivals[-1] > median and now is not None and self.hidden_work(now) > 0:
            return self.arrivals[-1]
        return median

    def hidden_work(self, now: float) -> float:
        """Images done since the latest queue count was first seen beyond what it held (and a pipeline's
        worth per instance): work that arrived after the count was taken."""
        if not self.ticks or self.covered is None:
            return 0.0
        tick = self.ticks[-1]
        known_to = max(tick.since, min(self.covered[1], now - self.settle_s))
        held = HELD_PER_INSTANCE * max(1, len(tick.running))
        return max(0.0, self._done(tick.since, known_to) - tick.backlog - held)

    def _idle_under(self, tick: TickRecord) -> bool:
        """Whether the newest measured window had serving instances throughout that did nothing, while the
        queue count now seen was already the count then."""
        if self.evaluated_to is None or self.recent > 0 or tick.since > self.evaluated_to - self.window_s:
            return False
        window = [k for k in self.ticks if self.evaluated_to - self.window_s <= k.t < self.evaluated_to]
        return bool(window) and all(self.serving(k) >= 1 for k in window)

    def facts(self, now: float | None = None) -> Facts:
        measured = {n: p.rate for n, p in self.curve.items()}
        for n, (seen, _) in self.floor.items():  # the fleet has shown it does at least this
            if seen > measured.get(n, 0.0) and (n in measured or seen > n * self.rate_estimate):
                measured[n] = seen
        points = sorted(measured.items())
        rate, contention = fit_scaling(points, self.rate_estimate)
        return Facts(rate=rate, boot_s=self.boot_s, curve=tuple(points), contention=contention,
                     arrival=self.arrival_rate(now),
                     recent=self.recent, rate_measured=bool(measured), boot_measured=bool(self.boots))
