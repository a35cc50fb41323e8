"""Speed-ups for moto 5.2 in server mode, applied by our launcher (`python -m infra.local.moto_server`).

moto emulates AWS on the same two cores the workers need, so its cost per call is
part of the local pipeline's cost. Measured with 100 messages in the request
queue (moto CPU per call, plain moto -> with these, `tests/bench/bench_moto.py`,
2026-11-23 on the 2-core machine): receive_message(10) 159 -> 7 ms,
get_queue_attributes(All) 8.5 -> 3.5 ms; and every request paid a directory scan
of moto's package. Each patch keeps moto's
behaviour (same results, same errors) and only removes repeated work:

- the server routed every request by listing and stat-ing ~150 folders of moto's
  package, under a global lock: the list is cached;
- SQS re-derived the whole attribute map (an O(messages) scan) three times per
  requested attribute, and once per message received (to read the retention
  period): computed once, and the retention period read directly;
- SQS took "now" through naive-datetime arithmetic for every message it looked at:
  plain ``time.time()`` gives the same number;
- CloudFormation parsed every template body with PyYAML's pure-Python loader, JSON too: the stack's
  40 kB JSON template took 140-440 ms per change set, ``json.loads`` takes about 1 ms (a YAML body still
  goes to the YAML loader).
- DynamoDB's TransactWriteItems deep-copied every table it touches before each
  transaction, to roll back on a cancel: 36 ms for a 1000-job table, so the job store's
  two transactions per job grew quadratically with the table. It now keeps a copy of
  only the items the transaction names and puts those back on a cancel (the same
  all-or-nothing result; writes are serialised by ``moto_fixes``).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import time

log = logging.getLogger(__name__)
_applied = False


def _fast_unix_time(original):
    @functools.wraps(original)
    def unix_time(dt=None):
        return time.time() if dt is None else original(dt)

    return unix_time


def _fast_unix_time_millis(original):
    @functools.wraps(original)
    def unix_time_millis(dt=None):
        return time.time() * 1000.0 if dt is None else original(dt)

    return unix_time_millis


def _json_first(parse):
    @functools.wraps(parse)
    def parse_template(template):
        if isinstance(template, str) and template.lstrip().startswith("{"):
            try:
                return json.loads(template)
            except ValueError:
                pass
        return parse(template)

    return parse_template


_cloudformation_applied = False


def cloudformation() -> None:
    """JSON template bodies parsed as JSON (applied when moto loads CloudFormation: ``moto_server.ON_LOAD``)."""
    global _cloudformation_applied
    if _cloudformation_applied:
        return
    from moto.cloudformation.models import ChangeSet, Stack

    Stack.parse_template = staticmethod(_json_first(Stack.parse_template))

    def _parse_template(self) -> None:
        self.template_dict = Stack.parse_template(self.template)

    ChangeSet._parse_template = _parse_template
    _cloudformation_applied = True
class _TablesNotCopied:
    """What ``copy`` is inside moto's DynamoDB models during one transaction: tables are not copied (their
    touched items are, by ``_item_backups``); anything else is, as before."""

    def __init__(self, table_cls: type):
        self.table_cls = table_cls

    def deepcopy(self, value, memo=None):
        return value if isinstance(value, self.table_cls) else copy.deepcopy(value, memo)

    def __getattr__(self, name):
        return getattr(copy, name)


def _transaction_keys(backend, transact_items) -> dict:
    """(table name, hash, range) -> (table, hash value, range value) for each item a transaction names."""
    out = {}
    for entry in transact_items:
        try:
            op_type, op = next(iter(entry.items()))
            table = backend.get_table(op["TableName"])
            attrs = op["Item"] if op_type == "Put" else op["Key"]
            hv, rv = backend.get_keys_value(table, attrs)
        except Exception:  # noqa: BLE001 - moto's own code answers it with the right error
            continue
        out.setdefault((table.name, str(hv), str(rv)), (table, hv, rv))
    return out


def _item_backups(original, models, table_cls):
    @functools.wraps(original)
    def transact_write_items(self, transact_items):
        keys = _transaction_keys(self, transact_items)
        saved = [(table, hv, rv, copy.deepcopy(table.get_item(hv, rv))) for table, hv, rv in keys.values()]
        models.copy = _TablesNotCopied(table_cls)
        try:
            return original(self, transact_items)
        except BaseException:
            for table, hv, rv, item in saved:
                if table.range_key_attr:
                    if item is None:
                        table.items[hv].pop(rv, None)
                    else:
                        table.items[hv][rv] = item
                elif item is None:
                    table.items.pop(hv, None)
                else:
                    table.items[hv] = item
            raise
        finally:
            models.copy = copy

    return transact_write_items


def apply() -> None:
    global _applied
    if _applied:
        return
    from moto import backends
    from moto.dynamodb import models as dynamodb_models
    from moto.dynamodb.models.table import Table
    from moto.sqs import models as sqs_models
    from moto.sqs.exceptions import InvalidAttributeName

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules

    sqs_models.unix_time = _fast_unix_time(sqs_models.unix_time)
    sqs_models.unix_time_millis = _fast_unix_time_millis(sqs_models.unix_time_millis)

    def get_queue_attributes(self, queue_name, attribute_names):
        queue = self.get_queue(queue_name)
        if not attribute_names:
            return {}
        valid = ["All"] + queue.BASE_ATTRIBUTES + queue.FIFO_ATTRIBUTES + queue.KMS_ATTRIBUTES
        invalid = next((name for name in attribute_names if name not in valid), None)
        if invalid or invalid == "":
            raise InvalidAttributeName(invalid)
        attributes = queue.attributes  # one scan instead of three per name
        if "All" in attribute_names:
            return attributes
        return {name: attributes[name] for name in attribute_names if attributes.get(name) is not None}

    def is_message_valid_based_on_retention_period(self, queue_name, message):
        queue = self.get_queue(queue_name)
        retain_until = int(queue.message_retention_period) + message.sent_timestamp / 1000
        return retain_until > time.time()

    sqs_models.SQSBackend.get_queue_attributes = get_queue_attributes
    sqs_models.SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period
    backend = dynamodb_models.DynamoDBBackend
    backend.transact_write_items = _item_backups(backend.transact_write_items, dynamodb_models, Table)
    _applied = True
    log.debug("moto speed-ups applied")
