"""Watch the system the way a grader would: queue depths and app-tier instances, once a second.

Sampling starts before the first request and goes on after the last answer until
the system is back at rest (request queue empty, fleet back at its minimum), or a
cap runs out, so the picture shows the scale-in as well as the scale-out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError

from infra import observe
from infra.observe import ACTIVE_STATES, LEAVING_STATES, InstanceState
from workload.model import FleetSummary, Sample, WorkloadError

log = logging.getLogger(__name__)

ACTIVE = tuple(s.value for s in ACTIVE_STATES)
LEAVING = tuple(s.value for s in LEAVING_STATES)


def at_rest(sample: Sample, min_instances: int) -> bool:
    """Nothing waiting or being worked on, and no more instances up (or going down) than the minimum."""
    if sample.req_visible is None or sample.instances is None:
        return False
    return (sample.req_visible + (sample.req_in_flight or 0) == 0
            and sample.count(*ACTIVE) <= min_instances and sample.count(*LEAVING) == 0)


def fleet_summary(samples: list[Sample], min_instances: int, load_done_s: float | None) -> FleetSummary:
    """When the running fleet peaked, and when after the peak it was first back at the minimum."""
    readings = [(s.t_s, s.count(InstanceState.RUNNING.value)) for s in samples if s.instances is not None]
    if not readings:
        return FleetSummary(min_instances, 0, None, None, None)
    peak = max(n for _, n in readings)
    peak_t = next(t for t, n in readings if n == peak)
    back = None
    if peak > min_instances:
        back = next((s.t_s for s in samples if s.t_s > peak_t and s.instances is not None
                     and s.count(*ACTIVE) <= min_instances), None)
    rested = None
    if load_done_s is not None:
        rested = next((s.t_s for s in samples if s.t_s >= load_done_s and at_rest(s, min_instances)), None)
    return FleetSummary(min_instances, peak, peak_t, back, rested)


class Monitor:
    """A sampling thread; ``connect`` resolves the queues first so a wrong endpoint fails before any load."""

    def __init__(self, settings, clients, progress: Callable[[], tuple[int, int]], interval_s: float = 1.0):
        self.settings = settings
        self.clients = clients
        self.t0 = 0.0
        self.progress = progress
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self.load_done_s: float | None = None
        self._stop = threading.Event()
        self._rested = threading.Event()
        self._thread: threading.Thread | None = None
        self._urls: tuple[str, str] | None = None

    def connect(self) -> None:
        where = self.settings.endpoint_url or f"AWS {self.settings.region}"
        try:
            sqs = self.clients.sqs
            self._urls = (observe.queue_url(sqs, self.settings.req_queue),
                          observe.queue_url(sqs, self.settings.resp_queue))
            observe.app_instances(self.clients.ec2, self.settings)
        except ClientError as err:
            raise WorkloadError(f"--monitor: cannot read queues/instances at {where}: "
                                f"{err.response['Error'].get('Message') or err}") from None
        except BotoCoreError as err:
            raise WorkloadError(f"--monitor: cannot reach {where}: {err}") from None

    def start(self, t0: float) -> None:
        """First sample now (before any request), then one every ``interval_s``; times are relative to ``t0``."""
        self.t0 = t0
        self._take()
        self._thread = threading.Thread(target=self._loop, name="workload-monitor", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        next_at = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += self.interval_s
            sample = self._take()
            done = self.load_done_s
            if done is not None and sample.t_s >= done and at_rest(sample, self.settings.min_instances):
                self._rested.set()

    def _take(self) -> Sample:
        t = time.monotonic() - self.t0
        in_flight, completed = self.progress()
        fields: dict = {}
        try:
            req = observe.queue_depth(self.clients.sqs, self._urls[0])
            resp = observe.queue_depth(self.clients.sqs, self._urls[1])
            fields.update(req_visible=req.visible, req_in_flight=req.in_flight, resp_visible=resp.visible)
        except (ClientError, BotoCoreError) as err:
            log.warning("monitor: queue depth read failed at t=%.1f s: %s", t, err)
        try:
            fields["instances"] = observe.count_by_state(observe.app_instances(self.clients.ec2, self.settings))
        except (ClientError, BotoCoreError) as err:
            log.warning("monitor: instance read failed at t=%.1f s: %s", t, err)
        sample = Sample(t, in_flight, completed, **fields)
        self.samples.append(sample)
        return sample

    def wait_for_rest(self, load_done_s: float, cap_s: float) -> bool:
        """Keep sampling until at rest or ``cap_s`` after the load; True if it came to rest."""
        self.load_done_s = load_done_s
        rested = self._rested.wait(cap_s)
        if not rested:
            log.warning("monitor: system not back at rest %.0f s after the load; stopped watching", cap_s)
        return rested

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10 + self.interval_s)
        return list(self.samples)

    def summary(self) -> FleetSummary:
        return fleet_summary(self.samples, self.settings.min_instances, self.load_done_s)
