"""The local stack's result items on disk, not in moto's memory: memory flat with job size.

moto keeps every item of every table as Python objects: about 6.6 KB of the DynamoDB
process's memory per stored result, so a 100,000-request job held ~1.2 GB and a
1,000,000-request one would not fit a laptop (issue 12, target 5). DynamoDB's own cost
per item does not grow with the table, and neither may the local stack's.

Here a table whose keys are a string partition key and a string sort key, with no
secondary index (the results table: one item per request), keeps its items in an SQLite
file (one per DynamoDB process, deleted with it) instead of moto's ``defaultdict(dict)``.
moto's code is unchanged: ``Table.items`` is a mapping with the same interface, partition
key -> partition, each partition a mapping sort key -> ``Item``. An item moto asks for is
read from the file and kept while the request that asked runs (moto changes items in
place: an UpdateItem, a transaction's Update); when the request ends (the local stack's
DynamoDB lock, ``llmbatch.local.moto_server``) what it changed or added is written back and
nothing is kept. Memory is then the page cache and one request's items, whatever the
table holds.

Orders are DynamoDB's: a partition's items by sort key in UTF-8 byte order (SQLite's
``BLOB`` order of the UTF-8 bytes, which is code point order, as moto's ``str``
comparison). A forward table Query without a sort-key condition reads from its start key
onwards with an index seek (:meth:`SpilledPartition.items_after`, used by
``query_one_partition``), one page's items at a time; a backward Query, a sort-key
condition, a Scan read the partition or table through, as moto does (the project makes
none of them on the results table). Tables with a number or binary key, or an index (whose
queries walk every item), stay in memory as before.
"""

from __future__ import annotations

import atexit
import copy
import copyreg
import glob
import io
import itertools
import os
import pickle
import shutil
import sqlite3
import tempfile
from collections import defaultdict
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

#: Rows read per round trip to SQLite while walking a partition.
_WALK_CHUNK = 128
#: SQLite's page cache, in KiB (its ``cache_size`` takes a negative number for KiB).
_PAGE_CACHE_KIB = 16 * 1024


#: Before a key's UTF-8 bytes: a string's type, so that a key of another type (a GetItem of
#: ``{"N": "5"}``) finds nothing, as in moto's own dict, and strings keep their order.
_STRING_TAG = b"S\x00"


def _key(value: Any) -> bytes:
    """A key's bytes: its type, then its UTF-8, which sorts as DynamoDB sorts strings."""
    return str(value.type).encode() + b"\x00" + str(value.value).encode("utf-8", "surrogatepass")


def _string(raw: bytes) -> Any:
    from moto.dynamodb.models.dynamo_type import DynamoType

    return DynamoType({"S": raw[len(_STRING_TAG) :].decode("utf-8", "surrogatepass")})


@dataclass
class _Held:
    """An item handed to moto during the current request, and its bytes when read (None
    for an item moto put: always written)."""

    item: Any
    read_as: bytes | None


class SpillStore:
    """The SQLite file of one process's spilled tables, and the items the current request holds.

    Not thread-safe: every call happens under the local stack's DynamoDB lock.
    """

    def __init__(self, directory: str | None = None) -> None:
        self._dir, self._db = scratch_db(_DIR_PREFIX, "items.sqlite", directory)
        self._db.execute(
            "CREATE TABLE items (tbl INTEGER, h BLOB, r BLOB, v BLOB, PRIMARY KEY (tbl, h, r)) WITHOUT ROWID"
        )
        self._held: dict[tuple[int, bytes, bytes], _Held] = {}
        self._ids = itertools.count(1)
        self._pickle_table = dict(copyreg.dispatch_table)
        from moto.dynamodb.models.dynamo_type import LimitedSizeDict

        # Unpickling a dict subclass sets its keys one by one, and LimitedSizeDict sizes the
        # whole dict at each: rebuild it as the dict it is.
        self._pickle_table[LimitedSizeDict] = lambda d: (_limited_size_dict, (dict(d),))
        atexit.register(self.close)

    def new_table_id(self) -> int:
        return next(self._ids)

    # ---- the rows ---------------------------------------------------------------------

    def dumps(self, item: Any) -> bytes:
        buf = io.BytesIO()
        pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.dispatch_table = self._pickle_table
        pickler.dump(item)
        return buf.getvalue()

    def get(self, tbl: int, h: bytes, r: bytes) -> Any | None:
        held = self._held.get((tbl, h, r))
        if held is not None:
            return held.item
        row = self._db.execute("SELECT v FROM items WHERE tbl = ? AND h = ? AND r = ?", (tbl, h, r)).fetchone()
        if row is None:
            return None
        item = pickle.loads(row[0])
        self._held[(tbl, h, r)] = _Held(item, row[0])
        return item

    def put(self, tbl: int, h: bytes, r: bytes, item: Any) -> None:
        self._held[(tbl, h, r)] = _Held(item, None)

    def delete(self, tbl: int, h: bytes, r: bytes) -> None:
        self._held.pop((tbl, h, r), None)
        self._db.execute("DELETE FROM items WHERE tbl = ? AND h = ? AND r = ?", (tbl, h, r))

    def write_back(self, *, release: bool) -> None:
        """Write what the current request changed or added; with ``release``, hold nothing
        more (the request has ended), even if the write failed: the next request must not
        fail for this one's items."""
        try:
            rows = []
            for (tbl, h, r), held in self._held.items():
                now = self.dumps(held.item)
                if now != held.read_as:
                    rows.append((tbl, h, r, now))
                    held.read_as = now
            if rows:  # all of the request's items or none
                write_all(self._db, "INSERT OR REPLACE INTO items (tbl, h, r, v) VALUES (?, ?, ?, ?)", rows)
        finally:
            if release:
                self._held.clear()

    def query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """Rows of a read of many items: what the current request changed is written first."""
        self.write_back(release=False)
        return self._db.execute(sql, params).fetchall()

    def walk(self, sql: str, params: tuple[Any, ...], after: bytes = b"") -> Iterator[tuple[Any, ...]]:
        """Rows of ``sql`` (its last two parameters: the key to start after, a count) a chunk at
        a time, each chunk after the last one's first column: a page costs what it returns.
        ``after`` starts below every key by default (DynamoDB's keys are never empty)."""
        while True:
            rows = self.query(sql, (*params, after, _WALK_CHUNK))
            yield from rows
            if len(rows) < _WALK_CHUNK:
                return
            after = rows[-1][0]

    def drop_table(self, tbl: int) -> None:
        self._held = {k: v for k, v in self._held.items() if k[0] != tbl}
        self._db.execute("DELETE FROM items WHERE tbl = ?", (tbl,))

    def held(self) -> int:
        """How many items the current request holds in memory (the tests' window)."""
        return len(self._held)

    def close(self) -> None:
        remove_scratch(self._dir, self._db)


#: A store's directory: ``llmbatch-ddb-<pid>-<random>`` in the temporary directory.
_DIR_PREFIX = "llmbatch-ddb-"


def scratch_db(prefix: str, name: str, directory: str | None = None) -> tuple[str, sqlite3.Connection]:
    """A new SQLite file ``name`` for this process's spilled state, in a directory of its own
    (``<prefix><pid>-<random>`` in ``directory`` or the temporary directory), and the
    directory. Durability is not wanted (the state dies with the process): no journal, no
    sync. Stale directories of the same prefix are removed first."""
    _remove_stale(directory, prefix)
    path = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=directory)
    db = sqlite3.connect(os.path.join(path, name), isolation_level=None, check_same_thread=False)
    for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=MEMORY", f"cache_size=-{_PAGE_CACHE_KIB}"):
        db.execute(f"PRAGMA {pragma}")
    return path, db


def write_all(db: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """``sql`` for every row, in one transaction: all of them or none (and one commit, not one
    per row)."""
    db.execute("BEGIN")
    try:
        db.executemany(sql, rows)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def remove_scratch(path: str, db: sqlite3.Connection) -> None:
    """Close a :func:`scratch_db` and remove its directory."""
    try:
        db.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _remove_stale(directory: str | None, prefix: str = _DIR_PREFIX) -> None:
    """Remove the stores of processes that are gone. A moto process that is killed (or
    stopped before its exit handlers run) leaves its file behind; the next one clears it."""
    parent = directory or tempfile.gettempdir()
    for path in glob.glob(os.path.join(parent, f"{prefix}*-*")):
        pid = os.path.basename(path)[len(prefix) :].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _limited_size_dict(values: dict[str, Any]) -> Any:
    from moto.dynamodb.models.dynamo_type import LimitedSizeDict

    out = LimitedSizeDict.__new__(LimitedSizeDict)
    dict.update(out, values)
    return out


class SpilledPartition(MutableMapping[Any, Any]):
    """One partition of a spilled table: sort key (a DynamoType) -> ``Item``. A view: it
    holds nothing itself."""

    def __init__(self, store: SpillStore, tbl: int, h: bytes) -> None:
        self._store, self._tbl, self._h = store, tbl, h

    def __getitem__(self, range_key: Any) -> Any:
        item = self._store.get(self._tbl, self._h, _key(range_key))
        if item is None:
            raise KeyError(range_key)
        return item

    def __setitem__(self, range_key: Any, item: Any) -> None:
        self._store.put(self._tbl, self._h, _key(range_key), item)

    def __delitem__(self, range_key: Any) -> None:
        self[range_key]  # KeyError if absent, as a dict
        self._store.delete(self._tbl, self._h, _key(range_key))

    def __contains__(self, range_key: object) -> bool:
        return self._store.get(self._tbl, self._h, _key(range_key)) is not None

    def __len__(self) -> int:
        rows = self._store.query("SELECT count(*) FROM items WHERE tbl = ? AND h = ?", (self._tbl, self._h))
        return int(rows[0][0])

    def __iter__(self) -> Iterator[Any]:
        """The sort keys, in order."""
        sql = "SELECT r FROM items WHERE tbl = ? AND h = ? AND r > ? ORDER BY r LIMIT ?"
        return (_string(r) for (r,) in self._store.walk(sql, (self._tbl, self._h)))

    def items_after(self, range_key: Any | None) -> Iterator[Any]:
        """The partition's items in sort-key order, after ``range_key`` (all, if None), read
        a chunk at a time: a page costs what it returns, not what the partition holds. The
        items are moto's to read, not to change (a Query's): they are not held."""
        sql = "SELECT r, v FROM items WHERE tbl = ? AND h = ? AND r > ? ORDER BY r LIMIT ?"
        after = b"" if range_key is None else _key(range_key)
        return (pickle.loads(v) for _, v in self._store.walk(sql, (self._tbl, self._h), after))

    def values(self) -> Any:  # type: ignore[override]
        """Every item, in sort-key order, not held (moto's Scan and index reads only read them)."""
        return list(self.items_after(None))

    def __bool__(self) -> bool:
        return bool(self._store.query("SELECT 1 FROM items WHERE tbl = ? AND h = ? LIMIT 1", (self._tbl, self._h)))

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[Any, Any]:
        return {item.range_key: copy.deepcopy(item, memo) for item in self.items_after(None)}


class SpilledItems(MutableMapping[Any, Any]):
    """A spilled table's ``items``: partition key (a DynamoType) -> :class:`SpilledPartition`.

    As moto's ``defaultdict(dict)``, any partition key has a partition, empty until an item
    is put in it; the partitions listed are those holding items.
    """

    def __init__(self, store: SpillStore) -> None:
        self._store = store
        self.tbl = store.new_table_id()

    def __getitem__(self, hash_key: Any) -> SpilledPartition:
        return SpilledPartition(self._store, self.tbl, _key(hash_key))

    def get(self, hash_key: Any, default: Any = None) -> Any:
        partition = self[hash_key]
        return partition if partition else default

    def __setitem__(self, hash_key: Any, value: Any) -> None:
        partition = self[hash_key]
        for range_key in list(partition):
            del partition[range_key]
        for range_key, item in dict(value).items():
            partition[range_key] = item

    def __delitem__(self, hash_key: Any) -> None:
        for range_key in list(self[hash_key]):
            del self[hash_key][range_key]

    def __contains__(self, hash_key: object) -> bool:
        return bool(self[hash_key])

    def _partition_keys(self) -> Iterator[bytes]:
        sql = "SELECT DISTINCT h FROM items WHERE tbl = ? AND h > ? ORDER BY h LIMIT ?"
        return (h for (h,) in self._store.walk(sql, (self.tbl,)))

    def __iter__(self) -> Iterator[Any]:
        return (_string(h) for h in self._partition_keys())

    def values(self) -> Any:  # type: ignore[override]
        return [SpilledPartition(self._store, self.tbl, h) for h in self._partition_keys()]

    def __len__(self) -> int:
        rows = self._store.query("SELECT count(DISTINCT h) FROM items WHERE tbl = ?", (self.tbl,))
        return int(rows[0][0])

    def __deepcopy__(self, memo: dict[int, Any]) -> defaultdict[Any, dict[Any, Any]]:
        """moto's own copy of a table (a backup, ``--faithful-moto``'s transactions): the
        items in memory, as moto keeps them."""
        out: defaultdict[Any, dict[Any, Any]] = defaultdict(dict)
        for partition in self.values():
            for item in partition.items_after(None):
                out[item.hash_key][item.range_key] = copy.deepcopy(item, memo)
        return out


_store: SpillStore | None = None
_patched = False


def store() -> SpillStore | None:
    """This process's spill store, once a table keeps its items on disk."""
    return _store


def spills(table: Any) -> bool:
    """Whether a table's items go to disk: string partition and sort keys, no index."""
    return (
        table.hash_key_type == "S"
        and table.range_key_attr is not None
        and table.range_key_type == "S"
        and not table.indexes
        and not table.global_indexes
    )


def spill_string_keyed_tables(directory: str | None = None) -> None:
    """Patch moto's ``Table`` so every table :func:`spills` keeps its items on disk (once
    per process). Callers write back after every request (:func:`end_request`)."""
    global _patched
    if _patched:
        return
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    original_init = Table.__init__
    original_delete = DynamoDBBackend.delete_table

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        global _store
        original_init(self, *args, **kwargs)
        if spills(self):
            # Made with the first such table: a process that serves no DynamoDB has no file.
            _store = _store or SpillStore(directory)
            self.items = SpilledItems(_store)

    def delete_table(self: Any, name: str) -> Any:
        table = original_delete(self, name)
        items = getattr(table, "items", None)
        if _store is not None and isinstance(items, SpilledItems):
            _store.drop_table(items.tbl)
        return table

    Table.__init__ = __init__  # type: ignore[method-assign]
    DynamoDBBackend.delete_table = delete_table  # type: ignore[method-assign]
    _patched = True


def end_request() -> None:
    """Write back what the request that ends changed, and hold nothing more."""
    if _store is not None:
        _store.write_back(release=True)
