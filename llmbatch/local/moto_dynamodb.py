"""moto's DynamoDB TransactWriteItems, rolled back item by item instead of table by table.

moto 5 backs up every table a transaction names with ``copy.deepcopy`` before it starts
(once per *action*: a 99-item transaction copies the results table 99 times) and puts the
copies back if the transaction is cancelled. The cost grows with the table: a 50-put
transaction takes 6 ms on an empty table and 68 ms at 8,000 items (issue 12), so every
write of a ``local up`` gets dearer as jobs accumulate, and the whole table is briefly held
twice in memory. Real DynamoDB's cost does not depend on the table's size.

Here the transaction runs as moto runs it (same validation, same conditions, same
cancellation reasons), but before it starts only the items it names are backed up (a
deep copy of an item an Update changes in place; the item object itself for a Put, a
Delete or a ConditionCheck, which replace or leave it), and if it fails those items alone
are put back, and any stream records it added are dropped. The outcome is moto's: all of
the transaction or none of it.

Callers hold the local stack's DynamoDB lock (``llmbatch.local.moto_server``): moto is not
thread-safe, and nothing may see a half-applied transaction.
"""

from __future__ import annotations

import copy
from enum import Enum
from typing import Any

_applied = False

#: Marks "no item under this key" in a backup.
_ABSENT = object()


def _key_values(table: Any, op_type: str, op: dict[str, Any]) -> tuple[Any, Any] | None:
    """The (hash, range) DynamoTypes of the item an action names, or None if it names none
    validly (moto then refuses the action before it changes anything)."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    attrs = op.get("Item") if op_type == "Put" else op.get("Key")
    if not isinstance(attrs, dict) or table.hash_key_attr not in attrs:
        return None
    try:
        hash_value = DynamoType(attrs[table.hash_key_attr])
        if table.range_key_attr is None:
            return hash_value, None
        if table.range_key_attr not in attrs:
            return None
        return hash_value, DynamoType(attrs[table.range_key_attr])
    except Exception:  # a malformed value: moto refuses it the same way
        return None


class _Backup:
    """The items a transaction names, as they were before it, and each table's stream length."""

    def __init__(self, backend: Any, transact_items: list[dict[str, Any]]) -> None:
        self._items: list[tuple[Any, Any, Any, Any]] = []
        self._streams: dict[int, tuple[Any, int]] = {}
        for entry in transact_items:
            if not isinstance(entry, dict) or len(entry) != 1:
                continue
            op_type, op = next(iter(entry.items()))
            table = backend.tables.get(op.get("TableName")) if isinstance(op, dict) else None
            if table is None:
                continue
            keys = _key_values(table, op_type, op)
            if keys is None:
                continue
            hash_value, range_value = keys
            current = table.get_item(hash_value, range_value)
            saved = _ABSENT if current is None else (copy.deepcopy(current) if op_type == "Update" else current)
            self._items.append((table, hash_value, range_value, saved))
            if table.stream_shard is not None and id(table) not in self._streams:
                self._streams[id(table)] = (table.stream_shard, len(table.stream_shard.items))

    def restore(self) -> None:
        for table, hash_value, range_value, saved in reversed(self._items):
            if saved is _ABSENT:
                table.delete_item(hash_value, range_value)
            elif range_value is not None:
                table.items[hash_value][range_value] = saved
            else:
                table.items[hash_value] = saved
        for shard, length in self._streams.values():
            del shard.items[length:]


def parse_each_condition_once() -> None:
    """Remember moto's parsed condition expressions (once per process).

    moto parses a ConditionExpression from its text at every use, three times per Put of
    a transaction (to validate the request, to check it, and once more inside
    ``put_item``), and again for every conditional update: a third of a result write's
    cost in the local stack's profile, the same few expressions every time. The parsed
    tree depends only on the expression and its names and values, and evaluating it
    changes nothing in it, so the tree made for the same three is reused (and the names it
    found, which moto checks against the request's). A parse that fails raises as before,
    at ``parse()``. Calls are serialized by the DynamoDB lock; the cache is bounded.
    """
    import functools
    import json

    from moto.dynamodb import comparisons, models, responses
    from moto.dynamodb.models import table

    original = comparisons.create_condition_expression_parser

    @functools.lru_cache(maxsize=4096)
    def parsed(expr: str | None, names: str, values: str) -> tuple[Any, Any]:
        parser = original(expr, json.loads(names), json.loads(values))
        return parser.parse(), parser

    class _Parser:
        """What ``create_condition_expression_parser`` returns, parsing through the cache:
        ``parse()`` gives the cached tree; anything else moto reads after parsing (the names
        and values it found) comes from the parser that made it, as a copy."""

        def __init__(self, key: tuple[str | None, str, str]) -> None:
            self._key = key
            self._done: Any = None

        def parse(self) -> Any:
            op, self._done = parsed(*self._key)
            return op

        def __getattr__(self, name: str) -> Any:
            if self._done is None:
                self.parse()
            value = getattr(self._done, name)
            # A copy: moto extends the list of names found in place (``+=``), which must
            # not reach the parser every later call shares.
            return copy.copy(value) if isinstance(value, list | dict | set) else value

    def create_condition_expression_parser(expr: str | None, names: Any, values: Any) -> Any:
        try:
            key = (expr, json.dumps(names, sort_keys=True), json.dumps(values, sort_keys=True))
        except (TypeError, ValueError):  # binary values: parse as moto does
            return original(expr, names, values)
        return _Parser(key)

    def get_filter_expression(expr: str | None, names: Any, values: Any) -> Any:
        return create_condition_expression_parser(expr, names, values).parse()

    for module in (models, responses):
        module.create_condition_expression_parser = create_condition_expression_parser  # type: ignore[attr-defined]
    for module in (models, table):
        module.get_filter_expression = get_filter_expression  # type: ignore[attr-defined]


def size_each_item_once() -> None:
    """Check an item's 400 KB limit once per item, not once per attribute (once per process).

    moto builds an item attribute by attribute into a ``LimitedSizeDict``, which sums the
    size of every attribute already there at each insertion: O(attributes²) size
    computations per item, each walking nested maps (a result item's answer) again. Sizes
    are never negative, so the incremental check fails exactly when the whole item is over
    the limit: summing once and raising the same ``ItemSizeTooLarge`` is the same outcome.
    """
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models import dynamo_type
    from moto.dynamodb.models.utilities import bytesize

    DynamoType, LimitedSizeDict = dynamo_type.DynamoType, dynamo_type.LimitedSizeDict

    def __init__(self: Any, hash_key: Any, range_key: Any, attrs: dict[str, Any]) -> None:
        self.hash_key = hash_key
        self.range_key = range_key
        values = {key: DynamoType(value) for key, value in attrs.items()}
        if sum(bytesize(key) + value.size() for key, value in values.items()) > ITEM_SIZE_LIMIT:
            raise ItemSizeTooLarge
        self.attrs = LimitedSizeDict(values)  # its update() adds without checking again

    dynamo_type.Item.__init__ = __init__  # type: ignore[method-assign]


#: moto's limit in ``LimitedSizeDict`` (AWS says 400 KB; moto measured 409-410 KB).
ITEM_SIZE_LIMIT = 405_000


def back_up_touched_items_only() -> None:
    """Patch moto's ``DynamoDBBackend.transact_write_items`` (once per process)."""
    global _applied
    if _applied:
        return
    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    original = models.DynamoDBBackend.transact_write_items
    real_copy = models.copy

    in_transaction = [False]

    class _Copy:
        """``models.copy`` for moto's DynamoDB: while a transaction runs a Table is not
        copied (its items are backed up by :class:`_Backup`); anything else is, as before."""

        @staticmethod
        def deepcopy(obj: object, memo: Any = None) -> object:
            if in_transaction[0] and isinstance(obj, Table):
                return obj
            return real_copy.deepcopy(obj, memo)

        def __getattr__(self, name: str) -> Any:
            return getattr(real_copy, name)

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        backup = _Backup(self, transact_items) if len(transact_items) <= 100 else None
        in_transaction[0] = True
        try:
            return original(self, transact_items)
        except BaseException:
            # moto put back its "copies" (the tables themselves); put back the items.
            if backup is not None:
                backup.restore()
            raise
        finally:
            in_transaction[0] = False

    models.copy = _Copy()  # type: ignore[assignment]
    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    _applied = True


def query_one_partition() -> None:
    """A table Query reads its own partition, from just after its start key (once per process).

    moto answers every page of a Query on a table by sorting *every item of every partition*
    (``Table.all_items``), keeping those of the queried partition, sorting them again, and
    walking from the first one past the previous pages: each page costs O(table log table),
    so reading a 100,000-request job's results took ten minutes of the DynamoDB process's
    CPU, and every job's counter read (``status``, the workers' finish check) got dearer as
    jobs accumulated in the table (issue 12). Real DynamoDB reads a page in time of its own.

    Here a Query on a table's key (not an index), read forwards, hands moto's own query only
    the items it can return: the partition's, in range-key order (the order is cached per
    partition and used again while its keys are unchanged; a partition kept on disk,
    ``llmbatch.local.moto_spill``, reads its items in order from the key on), after the
    exclusive start key;
    without a range-key condition or a ``QueryFilter``, only as many as can fill the page (1 MB
    or ``Limit``, and one more). moto then filters, pages, projects and counts as before, so
    the answer (items, ``LastEvaluatedKey``, counts) is the same. Backward reads and index
    queries keep moto's path, with only the partition to sort for a backward table read.
    Callers hold the local stack's DynamoDB lock, as for every moto call.
    """
    import bisect

    from moto.dynamodb.models import dynamo_type
    from moto.dynamodb.models.table import RESULT_SIZE_LIMIT, Table

    DynamoType = dynamo_type.DynamoType
    original: Any = Table.query
    # (table id, partition key) -> (the partition's keys in order, their key set)
    order: dict[tuple[int, Any], tuple[list[Any], set[Any]]] = {}

    def keys_in_order(table: Any, hash_key: Any, partition: dict[Any, Any]) -> list[Any]:
        cached = order.get((id(table), hash_key))
        if cached is not None and len(cached[1]) == len(partition) and cached[1].issuperset(partition):
            return cached[0]
        keys = sorted(partition)
        order[(id(table), hash_key)] = (keys, set(keys))
        return keys

    def query(
        self: Any,
        hash_key: Any,
        range_comparison: Any,
        range_objs: Any,
        limit: int,
        exclusive_start_key: dict[str, Any],
        scan_index_forward: bool,
        projection_expressions: Any,
        index_name: str | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        if index_name or not self.range_key_attr or hash_key is None:
            return original(
                self,
                hash_key,
                range_comparison,
                range_objs,
                limit,
                exclusive_start_key,
                scan_index_forward,
                projection_expressions,
                index_name,
                *args,
                **kwargs,
            )
        partition = self.items.get(hash_key) or {}
        start_key: dict[str, Any] | None = exclusive_start_key
        if not scan_index_forward:
            candidates = list(partition.values())
        else:
            after = None
            if exclusive_start_key and self.range_key_attr in exclusive_start_key:
                after = DynamoType(exclusive_start_key[self.range_key_attr])
                start_key = None  # the items before it are not handed over
            items_after = getattr(partition, "items_after", None)  # a partition on disk
            if items_after is not None:
                walk = items_after(after)
            else:
                keys = keys_in_order(self, hash_key, partition)
                first = 0 if after is None else bisect.bisect_right(keys, after)
                walk = (partition[key] for key in keys[first:])
            # A condition on the range key or a QueryFilter skips items without counting them
            # towards the page: then every candidate is handed over.
            filtered = range_comparison is not None or bool(kwargs.get("range_key_conditions"))
            filtered = filtered or any(k not in ("hash_key_conditions", "range_key_conditions") for k in kwargs)
            candidates = []
            size = 0
            for item in walk:
                candidates.append(item)
                size += item.size()
                # One more than fits the page: moto then sees that the page is full.
                if not filtered and (size > RESULT_SIZE_LIMIT or (limit and len(candidates) > limit)):
                    break
        own = self.__dict__.get("all_items")
        self.all_items = lambda: candidates
        try:
            return original(
                self,
                hash_key,
                range_comparison,
                range_objs,
                limit,
                start_key,
                scan_index_forward,
                projection_expressions,
                index_name,
                *args,
                **kwargs,
            )
        finally:
            if own is None:
                del self.all_items
            else:
                self.all_items = own

    query.faithful = original  # type: ignore[attr-defined]  # moto's own, for the tests that compare
    Table.query = query  # type: ignore[method-assign]


# ---- attribute values serialised as what they already are --------------------------------

#: The members of DynamoDB's ``AttributeValue`` (botocore's model), by how moto's generic
#: serializer writes them.
_STRINGS = ("S", "N")
_STRING_LISTS = ("SS", "NS")
_AS_IS = ("NULL", "BOOL")
#: The services whose AttributeValue this is (other services have shapes of that name).
_DYNAMODB_SERVICES = frozenset({"dynamodb", "dynamodbstreams"})


def _string(value: Any) -> Any:
    """What moto's JSON serializer makes of a string member (``_serialize_type_string``)."""
    if isinstance(value, Enum):
        value = value.value
    return str(value) if value not in (None, {}, []) else value


def attribute_value_json(value: dict[str, Any], base64: Any) -> dict[str, Any]:
    """One ``AttributeValue`` (already a wire-shaped dict: moto's ``dynamo_to_dict``) as moto's
    generic JSON serializer writes it: members that are None are left out, strings as
    strings, blobs base64-encoded (``base64``: the serializer's own), maps and lists recursed.
    """
    out: dict[str, Any] = {}
    for member, v in value.items():
        if v is None:
            continue
        if member in _STRINGS:
            out[member] = _string(v)
        elif member == "B":
            out[member] = base64(v)
        elif member in _STRING_LISTS:
            out[member] = [_string(s) for s in v]
        elif member == "BS":
            out[member] = [base64(b) for b in v]
        elif member == "M":
            # A None value is left out of a map; anything not a dict has no member: {}.
            out[member] = {k: _member(a, base64) for k, a in v.items() if a is not None}
        elif member == "L":
            # A None entry of a list stays None (the list serializer appends what it skipped).
            out[member] = [None if a is None else _member(a, base64) for a in v]
        elif member in _AS_IS:
            out[member] = v
        # anything else is not a member of AttributeValue: the generic serializer drops it
    return out


def _member(value: Any, base64: Any) -> dict[str, Any]:
    return attribute_value_json(value, base64) if isinstance(value, dict) else {}


def serialize_attribute_values_directly() -> None:
    """moto serialises every response through the service's model, member by member, asking
    five alias providers where each member's value is: for an ``AttributeValue`` (ten members)
    that is about 50 lookups per attribute, so reading a job's eight counter shards (226
    attributes) cost moto 47 ms of CPU, most of a `status` call and of the console's
    refresh. Its values are already the wire's dicts here (``dynamo_to_dict``), so they are
    written as they are, with the same rules (:func:`attribute_value_json`; the test compares
    the two on every kind of value). Everything else keeps moto's path."""
    global _attribute_values_direct
    if _attribute_values_direct:
        return
    from moto.core.serialize import BaseJSONSerializer

    original = BaseJSONSerializer._serialize_type_structure

    def _serialize_type_structure(self: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
        if (
            key
            and shape.name == "AttributeValue"
            and not shape.is_document_type
            and isinstance(value, dict)
            and self.service_model.service_name in _DYNAMODB_SERVICES
        ):
            serialized[self.get_serialized_name(shape, key)] = attribute_value_json(value, self._base64)
            return
        original(self, serialized, value, shape, key)

    BaseJSONSerializer._serialize_type_structure = _serialize_type_structure  # type: ignore[method-assign]
    _attribute_values_direct = True


_attribute_values_direct = False
