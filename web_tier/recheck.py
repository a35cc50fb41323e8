"""The job store re-read every second for the results synchronous requests wait on.

A ``POST /`` waits for its result on this process's reply queue, but the result may be
recorded elsewhere first: by the worker itself (the reply queue was gone or being deleted),
by another web process after a reply-queue fallback, by the controller's reaper, or as
"failed" when the request reached the dead-letter queue. One thread per process looks every
waiting id up in the job store each ``RECHECK_S`` (one ``BatchGetItem`` per 100 ids, whatever
the number of waiters) and hands each finished job to its waiters through the router, so a
request answers from whichever has the result first.
"""

from __future__ import annotations

import logging
import threading

from infra.jobstore import STORE_ERRORS, JobStore
from web_tier.dispatcher import Router

log = logging.getLogger(__name__)

RECHECK_S = 1.0


class StoreRecheck(threading.Thread):
    """Until ``stop()``: every ``RECHECK_S``, the waiting ids' jobs from the store; finished ones are delivered."""

    def __init__(self, store: JobStore, router: Router, interval_s: float = RECHECK_S):
        super().__init__(name="store-recheck", daemon=True)
        self.store = store
        self.router = router
        self.interval_s = interval_s
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(self.interval_s + 5)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            try:
                self.check_once()
            except STORE_ERRORS as err:
                log.warning("re-reading %d waited-for jobs from the store failed: %s; again in %.0f s",
                            len(self.router.recheck_ids()), err, self.interval_s)
            except Exception:  # the thread must not die: waiting requests would lose their second path
                log.exception("store recheck failed; again in %.0f s", self.interval_s)

    def check_once(self) -> None:
        ids = self.router.recheck_ids()
        if not ids:
            return
        for job in self.store.get_many(ids).values():
            if job.finished and job.result is not None and self.router.deliver(job.result):
                log.info("job %s (%s): result found in the job store for its waiting request", job.id, job.name)
