"""A DynamoDB global secondary index lags its table: a query on it sees each write only a while later.

AWS (DynamoDB read consistency): "All reads from GSIs and streams are eventually consistent." ... "When issuing
eventually consistent reads to a DynamoDB table or an index, the responses may not reflect the results of a
recently completed write operation. If you repeat your read request after a short time, the response should
eventually return the more recent item."
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/HowItWorks.ReadConsistency.html
and ("Amazon DynamoDB Transactions: How it works"): "When a transaction completes in DynamoDB, its changes start
propagating to global secondary indexes (GSIs), streams, and backups."
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis.html

moto answers an index query from the table itself: a batch read right after its last submission lists every
job with its latest status. Here each write to a table that has a global index (PutItem, UpdateItem,
DeleteItem, and each item of TransactWriteItems and BatchWriteItem) reaches its index ``ddb_gsi_lag_s`` later
(``IMGREC_STRICT_DDB_GSI_LAG``, resolved for the table's name): a query with ``IndexName`` of a global index
sees every item as it was that long ago (not yet there, an older status, or still there after a delete).
A cancelled transaction never shows. The table itself (GetItem, BatchGetItem, a query without an index) is
read as it is.
"""

from __future__ import annotations

import copy
import functools
import threading
import time

from infra.local import moto_fixes
from infra.local.strict.control import StrictState

KEY = "ddb_gsi_lag_s"
QUERY_INDEX_ARG = 7  # moto's Table.query(hash_key, range_comparison, range_objs, limit, start_key, forward, projection,
#                      index_name, ...): the backend passes them by position
# (account, region, table) -> (hash, range) -> [version before the first unsettled write, [(at, version), ...]]
_history: dict[tuple[str, str, str], dict[tuple, list]] = {}
_journal = threading.local()  # during a transaction: what it recorded, to drop if it is cancelled


def _visible(entry: list, as_of: float):
    """The version an index shows at ``as_of``: the last one written by then, else the one before them."""
    shown = entry[0]
    for at, version in entry[1]:
        if at > as_of:
            break
        shown = version
    return shown


def _view(table, versions: dict[tuple, list], as_of: float) -> dict:
    """The table's items as its index sees them at ``as_of`` (a shallow copy; settled entries are dropped)."""
    view = copy.copy(table.items)
    for (hv, rv), entry in list(versions.items()):
        shown = _visible(entry, as_of)
        if entry[1][-1][0] <= as_of:
            del versions[(hv, rv)]  # every write of it has reached the index
        if table.range_key_attr:
            inner = dict(view.get(hv, {}))
            if shown is None:
                inner.pop(rv, None)
            else:
                inner[rv] = shown
            view[hv] = inner
        elif shown is None:
            view.pop(hv, None)
        else:
            view[hv] = shown
    return view


def apply(state: StrictState) -> None:
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    def lag_for(table) -> float:
        return float(state.value(KEY, (table.name,))) if table.global_indexes else 0.0

    def recorded(original):
        """A backend item write, with the item's version before and after it noted (under the write lock)."""
        @functools.wraps(original)
        def write(self, table_name, keys, *args, **kwargs):
            with moto_fixes.DYNAMODB_LOCK:
                table = self.get_table(table_name)
                if lag_for(table) <= 0:
                    return original(self, table_name, keys, *args, **kwargs)
                hv, rv = self.get_keys_value(table, keys)
                before = copy.deepcopy(table.get_item(hv, rv))
                result = original(self, table_name, keys, *args, **kwargs)
                table = self.get_table(table_name)
                versions = _history.setdefault((table.account_id, table.region_name, table.name), {})
                entry = versions.setdefault((hv, rv), [before, []])
                entry[1].append((time.monotonic(), copy.deepcopy(table.get_item(hv, rv))))
                journal = getattr(_journal, "entries", None)
                if journal is not None:
                    journal.append((versions, (hv, rv), entry, len(entry[1]) - 1))
                return result

        return write

    original_transact = DynamoDBBackend.transact_write_items

    def transact_write_items(self, transact_items):
        """Its items' writes are recorded one by one; a cancelled transaction (moto rolls it back) never shows."""
        with moto_fixes.DYNAMODB_LOCK:
            _journal.entries = []
            try:
                return original_transact(self, transact_items)
            except BaseException:
                for versions, key, entry, index in reversed(_journal.entries):
                    del entry[1][index:]
                    if not entry[1]:
                        versions.pop(key, None)
                raise
            finally:
                _journal.entries = None

    original_query = Table.query

    def query(self, *args, **kwargs):
        index_name = kwargs.get("index_name", args[QUERY_INDEX_ARG] if len(args) > QUERY_INDEX_ARG else None)
        versions = _history.get((self.account_id, self.region_name, self.name))
        lag = lag_for(self)
        if not versions or lag <= 0 or index_name not in {i.name for i in self.global_indexes or []}:
            return original_query(self, *args, **kwargs)
        with moto_fixes.DYNAMODB_LOCK:
            real = self.items
            self.items = _view(self, versions, time.monotonic() - lag)
            try:
                return original_query(self, *args, **kwargs)
            finally:
                self.items = real

    for name in ("put_item", "update_item", "delete_item"):
        setattr(DynamoDBBackend, name, recorded(getattr(DynamoDBBackend, name)))
    DynamoDBBackend.transact_write_items = transact_write_items
    Table.query = query
