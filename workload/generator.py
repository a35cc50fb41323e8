"""Send the requests: a burst through a pool of threads, or open-loop Poisson arrivals.

Each thread keeps its own ``requests.Session`` (a session is not guaranteed
thread-safe) so connections are reused without being shared.
"""

from __future__ import annotations

import logging
import mimetypes
import random
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import requests
from requests.adapters import HTTPAdapter
from tqdm import tqdm

from workload.inputs import short_reason
from workload.model import Outcome, RequestRecord, Target

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0


class Progress:
    """Live counters the monitor samples while requests are under way."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight = 0
        self.completed = 0

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def finished(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.completed += 1

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.in_flight, self.completed


def judge_answer(target: Target, status_code: int, body: str) -> tuple[Outcome, str | None, str]:
    """(outcome, label, error detail) for one HTTP answer; the course format is ``<name>:<label>``."""
    if status_code != 200:
        return Outcome.HTTP, None, body.strip().splitlines()[0][:200] if body.strip() else ""
    text = body.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    name, sep, label = text.partition(":")
    name, label = name.strip(), label.strip()
    if not sep or not label:
        return Outcome.BAD_BODY, None, f"not <name>:<label>: {text[:80]!r}"
    if name not in (target.stem, target.name):
        return Outcome.BAD_BODY, label, f"answer names {name!r}, sent {target.name!r}"
    if label.lower().startswith("error"):
        return Outcome.APP_ERROR, None, label[:200]
    return Outcome.OK, label, ""


class Sender:
    """Posts one image per call, from whichever pool thread calls it."""

    def __init__(self, url: str, timeout_s: float, payloads: dict, t0: float, progress: Progress):
        self.url = url
        self.timeout = (min(CONNECT_TIMEOUT_S, timeout_s), timeout_s)
        self.payloads = payloads
        self.t0 = t0
        self.progress = progress
        self.stop = threading.Event()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0))
            session.mount("https://", HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0))
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def send(self, target: Target, scheduled_s: float | None = None) -> RequestRecord:
        now = time.monotonic() - self.t0
        if self.stop.is_set():
            return RequestRecord(target.index, target.name, Outcome.CANCELLED, now, now,
                                 expected=target.expected, scheduled_s=scheduled_s, error="run interrupted")
        mime = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        files = {"myfile": (target.name, self.payloads[target.path], mime)}
        status, label, error, code = Outcome.OK, None, "", None
        self.progress.started()
        start = time.monotonic()
        try:
            response = self._session().post(self.url, files=files, timeout=self.timeout)
            code = response.status_code
            status, label, error = judge_answer(target, code, response.text)
        except requests.exceptions.Timeout:
            status, error = Outcome.TIMEOUT, f"no answer within {self.timeout[1]:g} s"
        except requests.exceptions.RequestException as err:
            status, error = Outcome.CONNECTION, short_reason(err)
        end = time.monotonic()
        self.progress.finished()
        if status is not Outcome.OK:
            log.debug("request %s (%s) failed: %s %s", target.index, target.name, status, error)
        return RequestRecord(target.index, target.name, status, start - self.t0, end - self.t0, code, label,
                             target.expected, scheduled_s, error)

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()


def poisson_arrivals(count: int, rate: float, seed: int | None) -> list[float]:
    """Open-loop arrival times (s from start): exponential gaps with mean 1/rate, the first at 0."""
    rng = random.Random(seed)
    times, t = [], 0.0
    for i in range(count):
        if i:
            t += rng.expovariate(rate)
        times.append(t)
    return times


def send_all(targets: list[Target], sender: Sender, *, concurrency: int, rate: float | None = None,
             seed: int | None = None, show_progress: bool = True) -> tuple[list[RequestRecord], bool]:
    """Send every target; returns (records in index order, interrupted)."""
    records: list[RequestRecord] = []
    bar = tqdm(total=len(targets), unit="req", file=sys.stderr, disable=not show_progress, dynamic_ncols=True,
               desc="requests")
    futures: dict[Future, Target] = {}
    interrupted = False
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="workload")
    try:
        if rate is None:
            futures = {pool.submit(sender.send, t): t for t in targets}
        else:
            arrivals = poisson_arrivals(len(targets), rate, seed)
            for target, at in zip(targets, arrivals, strict=True):
                while (remaining := sender.t0 + at - time.monotonic()) > 0:
                    _collect(futures, records, bar, timeout=remaining)
                futures[pool.submit(sender.send, target, at)] = target
        while futures:
            _collect(futures, records, bar, timeout=None)
    except KeyboardInterrupt:
        interrupted = True
        sender.stop.set()
        log.warning("interrupted: cancelling requests not yet sent, waiting for those in flight")
        pool.shutdown(wait=True, cancel_futures=True)
        for future, target in futures.items():
            if future.cancelled():
                now = time.monotonic() - sender.t0
                records.append(RequestRecord(target.index, target.name, Outcome.CANCELLED, now, now,
                                             expected=target.expected, error="run interrupted"))
            else:
                records.append(future.result())
        sent = {r.index for r in records}
        for target in targets:
            if target.index not in sent:
                records.append(RequestRecord(target.index, target.name, Outcome.CANCELLED, 0.0, 0.0,
                                             expected=target.expected, error="run interrupted"))
    finally:
        pool.shutdown(wait=True)
        bar.close()
        sender.close()
    return sorted(records, key=lambda r: r.index), interrupted


def _collect(futures: dict, records: list, bar, timeout: float | None) -> None:
    """Wait up to ``timeout`` for answers and move them from ``futures`` into ``records``."""
    if not futures:
        if timeout:
            time.sleep(timeout)
        return
    done, _ = wait(list(futures), timeout=timeout, return_when=FIRST_COMPLETED)
    for future in done:
        futures.pop(future)
        record = future.result()
        records.append(record)
        bar.update(1)
