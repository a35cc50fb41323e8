"""SQS's approximate counts come from a snapshot that is refreshed on an interval, not from the queue itself.

AWS (GetQueueAttributes, ``AttributeNames``): "The ApproximateNumberOfMessagesDelayed,
ApproximateNumberOfMessagesNotVisible, and ApproximateNumberOfMessages metrics may not achieve consistency
until at least 1 minute after the producers stop sending messages. This period is required for the queue
metadata to reach eventual consistency."
https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_GetQueueAttributes.html

moto computes the three counts from the queue's messages on every call, so a controller that reads
"empty" right after the last delete, or a reaper that trusts one zero, is never caught locally. Here each
queue's three counts are read from a snapshot taken at most ``sqs_count_lag_s`` ago (setting
``IMGREC_STRICT_SQS_COUNT_LAG``; a test sets 60 for AWS's worst case): the first read takes it, later reads
within the interval get the same numbers, the first read after it takes a fresh one.
"""

from __future__ import annotations

import threading
import time

from infra.local.strict.control import StrictState

KEY = "sqs_count_lag_s"
COUNTS = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed")


def apply(state: StrictState) -> None:
    from moto.sqs.models import SQSBackend

    snapshots: dict[tuple, tuple[float, dict[str, object]]] = {}
    lock = threading.Lock()
    original = SQSBackend.get_queue_attributes

    def get_queue_attributes(self, queue_name, attribute_names):
        attributes = original(self, queue_name, attribute_names)
        wanted = [name for name in COUNTS if name in attributes]
        if not wanted:
            return attributes
        queue = self.get_queue(queue_name)
        lag = float(state.value(KEY, (queue.name,)))
        key = (queue.queue_arn, queue.created_timestamp)
        now = time.monotonic()
        with lock:
            taken_at, counts = snapshots.get(key, (float("-inf"), {}))
            if now - taken_at >= lag or not counts:
                true = queue.attributes
                counts = {name: true[name] for name in COUNTS}
                snapshots[key] = (now, counts)
        return {**attributes, **{name: counts[name] for name in wanted}}

    SQSBackend.get_queue_attributes = get_queue_attributes
