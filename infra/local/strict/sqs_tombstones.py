"""A deleted SQS queue lingers: sends still succeed (and are lost), its name cannot be reused for a while.

AWS (DeleteQueue): "When you delete a queue, the deletion process takes up to 60 seconds. Requests you send
involving that queue during the 60 seconds might succeed. For example, a SendMessage request might succeed, but
after 60 seconds the queue and the message you sent no longer exist. When you delete a queue, you must wait at
least 60 seconds before creating a queue with the same name."
https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_DeleteQueue.html
and ``QueueDeletedRecently``: "You must wait 60 seconds after deleting a queue before you can create another
queue with the same name."
https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_CreateQueue.html

moto deletes a queue at once: a send right after answers ``QueueDoesNotExist`` (so a worker falls back to the
response queue and nothing is lost) and the name can be created again at once. Here, for ``sqs_tombstone_s``
after a DeleteQueue (``IMGREC_STRICT_SQS_TOMBSTONE``, resolved for the queue's name), SendMessage and
SendMessageBatch to it succeed and the messages go nowhere (the harsher side of "might succeed"),
CreateQueue of the name answers ``QueueDeletedRecently``, and every other call answers ``QueueDoesNotExist``
as before.
"""

from __future__ import annotations

import threading
import time

from infra.local.strict import context
from infra.local.strict.control import StrictState

KEY = "sqs_tombstone_s"
SEND_ACTIONS = frozenset({"SendMessage", "SendMessageBatch"})
_tombstones: dict[tuple[str, str, str], tuple[float, object]] = {}  # (account, region, name) -> (until, queue)
_lock = threading.Lock()


def _key(backend, name: str) -> tuple[str, str, str]:
    return (backend.account_id, backend.region_name, name)


def _buried(backend, name: str):
    """The deleted queue object while its tombstone lasts, else None."""
    with _lock:
        until, queue = _tombstones.get(_key(backend, name), (0.0, None))
        if until <= time.monotonic():
            _tombstones.pop(_key(backend, name), None)
            return None
        return queue


def apply(state: StrictState) -> None:
    from moto.sqs.exceptions import QueueDoesNotExist, SQSException
    from moto.sqs.models import SQSBackend

    class QueueDeletedRecently(SQSException):
        def __init__(self) -> None:
            super().__init__("AWS.SimpleQueueService.QueueDeletedRecently",
                             "You must wait 60 seconds after deleting a queue before you can create another queue "
                             "with the same name.")

    delete_queue, create_queue, get_queue = SQSBackend.delete_queue, SQSBackend.create_queue, SQSBackend.get_queue

    def delete_queue_buried(self, queue_name: str) -> None:
        queue = get_queue(self, queue_name)
        lag = float(state.value(KEY, (queue_name,)))
        delete_queue(self, queue_name)
        if lag > 0:
            with _lock:
                _tombstones[_key(self, queue_name)] = (time.monotonic() + lag, queue)

    def create_queue_unless_buried(self, name: str, tags=None, **kwargs):
        if name not in self.queues and _buried(self, name) is not None:
            raise QueueDeletedRecently()
        return create_queue(self, name, tags, **kwargs)

    def get_queue_or_tombstone(self, queue_name: str):
        try:
            return get_queue(self, queue_name)
        except QueueDoesNotExist:
            call = context.current()
            queue = _buried(self, queue_name) if call is not None and call.action in SEND_ACTIONS else None
            if queue is None:
                raise
            return queue  # the send lands in a queue nobody can reach any more: gone, as on AWS after 60 s

    SQSBackend.delete_queue = delete_queue_buried
    SQSBackend.create_queue = create_queue_unless_buried
    SQSBackend.get_queue = get_queue_or_tombstone
