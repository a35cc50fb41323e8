"""Watch the app-tier fleet as a grader would: ``describe_instances`` every 0.2 s in a thread."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from infra.config import Settings
from infra.observe import InstanceState, app_instances


@dataclass
class FleetSample:
    at: float  # wall clock, comparable with ImageResult.done_at
    running: int
    pending: int


@dataclass
class FleetSampler:
    """Samples the app tier through describe_instances every ``interval`` s in a thread."""

    ec2: object
    settings: Settings
    interval: float = 0.2
    samples: list[FleetSample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        while not self._stop.is_set():
            fleet = app_instances(self.ec2, self.settings)
            self.samples.append(FleetSample(time.time(),
                                            sum(i.state == InstanceState.RUNNING for i in fleet),
                                            sum(i.state == InstanceState.PENDING for i in fleet)))
            self._stop.wait(self.interval)

    @contextmanager
    def running(self):
        thread = threading.Thread(target=self._run, name="fleet-sampler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(5)

    @property
    def peak(self) -> int:
        return max((s.running + s.pending for s in self.samples), default=0)

    @property
    def peak_running(self) -> int:
        return max((s.running for s in self.samples), default=0)
