"""One background sampler per web process, so the AWS cost of the dashboard does not grow
with the number of browsers: every browser reads the same ring buffer.

The thread starts on the first dashboard request (or ``start()``), is a daemon
with a stop event (``stop()`` joins it), and never dies on a failed read: the
source turns failures into gaps and error badges. When no browser has asked for
``idle_after_s`` it stops reading AWS (GetMetricData is billed per metric) and
resumes on the next request; the pause shows as a gap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from web_tier.metrics_source import SERIES, Reading

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 1.0
DEFAULT_WINDOW_S = 600.0  # ten minutes of history
DEFAULT_IDLE_AFTER_S = 300.0


def columns(readings: list[Reading]) -> dict[str, list]:
    """Column-per-series form: what the chart library takes, and half the JSON of row form."""
    out: dict[str, list] = {"t": [r.t for r in readings]}
    for name in SERIES:
        out[name] = [r.values.get(name) for r in readings]
    return out


class Sampler:
    def __init__(self, source, *, interval_s: float = DEFAULT_INTERVAL_S, window_s: float = DEFAULT_WINDOW_S,
                 idle_after_s: float = DEFAULT_IDLE_AFTER_S):
        self.source = source
        self.interval_s = interval_s
        self.window_s = window_s
        self.idle_after_s = idle_after_s
        self._last_wanted = time.monotonic()
        self._wake = threading.Event()
        self._buf: deque[Reading] = deque(maxlen=int(window_s / interval_s) + 1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def idle(self) -> bool:
        return time.monotonic() - self._last_wanted > self.idle_after_s

    def start(self) -> None:
        """Start the thread unless it runs already (and wake it if idle); safe to call from every request."""
        self._last_wanted = time.monotonic()
        self._wake.set()
        if self.running:
            return
        with self._lock:
            if self.running:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="dashboard-sampler", daemon=True)
            self._thread.start()
            log.info("dashboard sampler started (every %.1f s, %d s kept)", self.interval_s, self.window_s)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("dashboard sampler did not stop within %.0f s (an AWS call is still waiting)", timeout)
            else:
                log.info("dashboard sampler stopped")

    def sample_once(self) -> Reading:
        reading = self.source.read()
        with self._lock:
            self._buf.append(reading)
        return reading

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            if self.idle:
                log.info("dashboard sampler idle: no browser for %.0f s, pausing AWS reads", self.idle_after_s)
                self._wake.clear()
                while self.idle and not self._stop.is_set():
                    self._wake.wait(self.idle_after_s)
                    self._wake.clear()
                if self._stop.is_set():
                    break
                log.info("dashboard sampler resumed")
                next_at = time.monotonic()
            try:
                self.sample_once()
            except Exception:  # the sampler must outlive any bug in one reading
                log.exception("dashboard sample failed")
            next_at += self.interval_s
            delay = next_at - time.monotonic()
            if delay < 0:  # a slow read: skip the missed ticks instead of bursting to catch up
                next_at, delay = time.monotonic(), 0.0
            self._stop.wait(delay)

    def since(self, t: float | None) -> tuple[list[Reading], Reading | None]:
        """Readings newer than ``t`` (all kept ones when None), oldest first, and the latest reading."""
        with self._lock:
            if not self._buf:
                return [], None
            latest = self._buf[-1]
            if t is None:
                return list(self._buf), latest
            newer = []
            for reading in reversed(self._buf):
                if reading.t <= t:
                    break
                newer.append(reading)
        newer.reverse()
        return newer, latest
