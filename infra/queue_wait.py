"""Wait out SQS's ``QueueDeletedRecently``: a queue name is free again only 60 s after its queue was deleted.

AWS (DeleteQueue): "When you delete a queue, you must wait at least 60 seconds before creating a queue with
the same name." (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_DeleteQueue.html);
CreateQueue then fails with ``QueueDeletedRecently``. A stack deleted (or rolled back) and put up again meets
it: its queues' create fails and the stack rolls back. ``create_when_free`` retries the creation until the
name is free, saying so every few seconds (the person watching sees why it pauses), up to a limit past AWS's
60 s. ``changes.apply`` puts every stack up through it (provision, deploy, the local stack).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_EVERY_S = 2.0
SAY_EVERY_S = 10.0
LIMIT_S = 75.0  # AWS says 60; a little more for clocks and the last try


def create_when_free(create: Callable[[], T], name: str, *, errors: tuple[type[Exception], ...],
                     recent: Callable[[Exception], bool], say: Callable[[str], None] = print,
                     limit_s: float = LIMIT_S, clock=time.monotonic, sleep=time.sleep) -> T:
    """``create()`` (a stack create that makes queues), retried while the name is not free yet: while it raises
    one of ``errors`` that ``recent`` says is QueueDeletedRecently."""
    started = clock()
    next_say = started
    while True:
        try:
            return create()
        except errors as err:
            if not recent(err):
                raise
            waited = clock() - started
            if waited >= limit_s:
                log.error("queue %s: still QueueDeletedRecently after %.0f s", name, waited)
                raise
            if clock() >= next_say:
                say(f"{name}: a queue of that name was deleted less than 60 s ago and AWS keeps the name that "
                    f"long: waiting to create it again ({waited:.0f} s so far, at most {limit_s:.0f} s)")
                next_say = clock() + SAY_EVERY_S
            sleep(RETRY_EVERY_S)
