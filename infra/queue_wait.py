"""Wait out SQS's ``QueueDeletedRecently``: a queue name is free again only 60 s after its queue was deleted.

AWS (DeleteQueue): "When you delete a queue, you must wait at least 60 seconds before creating a queue with
the same name." (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_DeleteQueue.html);
CreateQueue then fails with ``QueueDeletedRecently``. A teardown followed by a provision, or a stack deleted
and deployed again, meets it. ``create_when_free`` retries the creation until the name is free, saying so
every few seconds (the person watching sees why it pauses), up to a limit past AWS's 60 s. Whoever creates
queues uses it: provisioning today, the CloudFormation deploy (around its create) tomorrow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from botocore.exceptions import ClientError

log = logging.getLogger(__name__)

T = TypeVar("T")
DELETED_RECENTLY = ("AWS.SimpleQueueService.QueueDeletedRecently", "QueueDeletedRecently")
RETRY_EVERY_S = 2.0
SAY_EVERY_S = 10.0
LIMIT_S = 75.0  # AWS says 60; a little more for clocks and the last try


def deleted_recently(err: ClientError) -> bool:
    return err.response.get("Error", {}).get("Code") in DELETED_RECENTLY


def create_when_free(create: Callable[[], T], name: str, *, say: Callable[[str], None] = print,
                     limit_s: float = LIMIT_S, clock=time.monotonic, sleep=time.sleep,
                     errors: tuple[type[Exception], ...] = (ClientError,),
                     recent: Callable[[Exception], bool] = deleted_recently) -> T:
    """``create()`` (a CreateQueue call for ``name``, or a stack create that makes queues: then ``errors`` and
    ``recent`` say how its failure names QueueDeletedRecently), retried while the name is not free yet."""
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
