"""The waiting messages of a deep standard queue on disk, not in the SQS process's memory.

A submit runs ahead of the workers, so a queue's backlog is most of the job: moto holds each
waiting message as Python objects, 1,146 bytes of the SQS process per message of a 348-byte
body (``tracemalloc``), and a 1,000,000-request job would hold about 1.1 GB while it waits
(issue 12, target 5). SQS's own cost per message does not grow with the backlog, and neither
may the local stack's.

:class:`llmbatch.local.moto_sqs.MessageIndex` keeps at most ``HOT_READY_MAX`` of a queue's
available messages in memory (and each tenant's oldest); the others wait here, one row per
message, pickled, keyed by queue, tenant (``MessageGroupId``) and send order, and are read back
a chunk at a time, the oldest of a tenant first, when that tenant's messages in memory run out.
Only messages sent to the queue (or moved to it, as a dead letter) and not handed out since wait
here: a message in flight, delayed, or back after its visibility timeout stays in memory (it has
a receipt handle, a due time), so every other call is unchanged.

One SQLite file per SQS process (made on the first spill, removed with the process), as the
DynamoDB process's items (:mod:`llmbatch.local.moto_spill`). Not thread-safe: every call
happens under the local stack's SQS lock, except :meth:`ColdMessages.forget` (a queue that is
gone, from whichever thread dropped it), whose work waits for the next call.
"""

from __future__ import annotations

import atexit
import pickle
from typing import Any

from llmbatch.local.moto_spill import remove_scratch, scratch_db, write_all

#: Rows written at once, in one transaction (a row of its own costs a commit: 25 us a message).
_WRITE_CHUNK = 128
#: A store's directory: ``llmbatch-sqs-<pid>-<random>`` in the temporary directory.
_DIR_PREFIX = "llmbatch-sqs-"


def tenant_key(group: str | None) -> str:
    """A tenant as stored: a message without a group is ``""`` (SQS's group ids are never
    empty), a group ``"g" + id``."""
    return "" if group is None else "g" + group


class ColdMessages:
    """The SQLite file of one process's waiting messages."""

    def __init__(self, directory: str | None = None) -> None:
        self._dir, self._db = scratch_db(_DIR_PREFIX, "messages.sqlite", directory)
        self._db.execute(
            "CREATE TABLE messages (q INTEGER, t TEXT, seq INTEGER, v BLOB, PRIMARY KEY (q, t, seq)) WITHOUT ROWID"
        )
        self._queues = 0
        #: Rows put and not written yet: written before any read, and every ``_WRITE_CHUNK``.
        self._unwritten: list[tuple[int, str, int, bytes]] = []
        #: Queues that are gone, to drop at the next call (list.append and pop are atomic).
        self._forgotten: list[int] = []
        atexit.register(self.close)

    def new_queue(self) -> int:
        self._queues += 1
        return self._queues

    def put(self, q: int, group: str | None, seq: int, message: Any) -> None:
        self._settle()
        self._unwritten.append((q, tenant_key(group), seq, pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)))
        if len(self._unwritten) >= _WRITE_CHUNK:
            self._write()

    def _write(self) -> None:
        self._settle()
        rows, self._unwritten = self._unwritten, []
        if not rows:
            return
        try:
            write_all(self._db, "INSERT INTO messages (q, t, seq, v) VALUES (?, ?, ?, ?)", rows)
        except BaseException:
            self._unwritten = rows + self._unwritten  # kept for the next try: sent messages are not lost
            raise

    def take_oldest(self, q: int, group: str | None, n: int) -> list[Any]:
        """The ``n`` oldest messages of a tenant, no longer stored here."""
        self._write()
        t = tenant_key(group)
        rows = self._db.execute(
            "SELECT seq, v FROM messages WHERE q = ? AND t = ? ORDER BY seq LIMIT ?", (q, t, n)
        ).fetchall()
        if rows:
            self._db.execute("DELETE FROM messages WHERE q = ? AND t = ? AND seq <= ?", (q, t, rows[-1][0]))
        return [pickle.loads(v) for _, v in rows]

    def peek(self, q: int) -> list[Any]:
        """Copies of every message of a queue stored here (for the rare calls that list a queue)."""
        self._write()
        return [pickle.loads(v) for (v,) in self._db.execute("SELECT v FROM messages WHERE q = ?", (q,))]

    def count(self, q: int) -> int:
        self._write()
        return int(self._db.execute("SELECT count(*) FROM messages WHERE q = ?", (q,)).fetchone()[0])

    def drop(self, q: int) -> None:
        """Forget a queue's messages now (a purge)."""
        self.forget(q)
        self._settle()

    def forget(self, q: int) -> None:
        """A queue is gone: its messages are dropped at the next call (this one may come
        from any thread, outside the SQS lock: a deleted queue's index is freed where the
        last reference to it goes)."""
        self._forgotten.append(q)

    def _settle(self) -> None:
        while self._forgotten:
            q = self._forgotten.pop()
            self._unwritten = [row for row in self._unwritten if row[0] != q]
            self._db.execute("DELETE FROM messages WHERE q = ?", (q,))

    def close(self) -> None:
        remove_scratch(self._dir, self._db)


_store: ColdMessages | None = None


def store() -> ColdMessages:
    """This process's store, made on first use: a process whose queues never get deep has no file."""
    global _store
    if _store is None:
        _store = ColdMessages()
    return _store
