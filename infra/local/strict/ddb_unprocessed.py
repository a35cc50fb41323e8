"""DynamoDB's BatchGetItem may leave keys unprocessed; on demand here, for the keys of a test's tables.

AWS (BatchGetItem): "BatchGetItem returns a partial result if the response size limit is exceeded, the table's
provisioned throughput is exceeded, more than 1MB per partition is requested, or an internal processing failure
occurs. If a partial result is returned, the operation returns a value for UnprocessedKeys. You can use this value
to retry the operation starting with the next item to get." ... "If none of the items can be processed due to
insufficient provisioned throughput on all of the tables in the request, then BatchGetItem returns a
ProvisionedThroughputExceededException." ... "If DynamoDB returns any unprocessed items, you should retry the
batch operation on those items. However, we strongly recommend that you use an exponential backoff algorithm."
https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchGetItem.html

moto leaves keys unprocessed only past 16 MB, so code that retries leftovers without backoff, or answers "not
found" for them, passes every local test. Here a fraction ``ddb_unprocessed`` (``IMGREC_STRICT_DDB_UNPROCESSED``,
resolved for the table's name; default 0: on demand only) of each table's requested keys, rounded down, the last
ones, comes back in ``UnprocessedKeys`` with the table's request options, as a throttled table answers (retries
of the leftovers get through); 1 processes none, which AWS answers ``ProvisionedThroughputExceededException``
(400), for as long as the setting stays.
"""

from __future__ import annotations

import math

from infra.local.strict.control import StrictState

KEY = "ddb_unprocessed"


def held_back(keys: list, fraction: float) -> int:
    """How many of ``keys`` a call leaves unprocessed (pure): the fraction, rounded down, so that retries of the
    leftovers finish below 1; at 1, all of them, every time."""
    if fraction <= 0 or not keys:
        return 0
    return len(keys) if fraction >= 1 else math.floor(len(keys) * fraction)


def apply(state: StrictState) -> None:
    from moto.dynamodb.exceptions import DynamodbException
    from moto.dynamodb.responses import DynamoHandler, DynamoResult

    class ProvisionedThroughputExceeded(DynamodbException):
        def __init__(self) -> None:
            super().__init__("com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                             "The level of configured provisioned throughput for the table was exceeded. Consider "
                             "increasing your provisioning level with the UpdateTable API.")

    original = DynamoHandler.batch_get_item

    def batch_get_item(self):
        requested = self.body.get("RequestItems", {})
        unprocessed = {}
        for table, request in requested.items():
            keys = request.get("Keys", [])
            n = held_back(keys, float(state.value(KEY, (table,))))
            if n:
                unprocessed[table] = {**request, "Keys": keys[len(keys) - n:]}
                request["Keys"] = keys[:len(keys) - n]
        if not unprocessed:
            return original(self)
        processed = {t: r for t, r in requested.items() if r.get("Keys")}
        if processed:
            self.body["RequestItems"] = processed
            result = dict(original(self).result)
        else:
            raise ProvisionedThroughputExceeded()  # "none of the items can be processed"
        for table in requested:
            result.setdefault("Responses", {}).setdefault(table, [])
        result["UnprocessedKeys"] = {**result.get("UnprocessedKeys", {}), **unprocessed}
        return DynamoResult(result)

    DynamoHandler.batch_get_item = batch_get_item
