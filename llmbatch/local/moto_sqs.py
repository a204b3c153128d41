"""moto's SQS, with every call of a standard queue O(1) in the queue's depth.

moto 5 keeps a queue's messages in one list and walks all of it, often several times, on
each call: ``Queue.attributes`` counts the visible, in-flight and delayed messages (calling
``unix_time_millis`` on each) and is read on every send (the ``ContentBasedDeduplication``
lookup) and three times per received message (the retention check through
``get_queue_attributes``); a receive builds the list of visible messages; a delete walks
the list twice and keeps every deleted receipt handle forever. Profiles of ``local up``
put 64-69% of its time there (issue 12): the deeper the backlog, the slower every call, and
the backlog grows.

Here a standard queue keeps its messages in an index (:class:`MessageIndex`): the ones
available now in a heap by send order, the delayed and in-flight ones in a heap by the time
they become visible again, and a map from receipt handle to message. Semantics stay
moto's (and SQS's): at-least-once delivery, oldest available first, visibility timeouts,
``ApproximateReceiveCount``, redrive to the dead-letter queue once a message has been
received ``maxReceiveCount`` times, delay seconds, retention, purges, old receipt handles
that still delete, and a second delete of a deleted message that succeeds. FIFO queues keep
moto's own code untouched (their group and deduplication rules are not reproduced here).

A deep backlog does not stay in memory: beyond :data:`HOT_READY_MAX` available messages, the
rest wait on disk (:mod:`llmbatch.local.moto_sqs_cold`) and come back a tenant's oldest first,
so the SQS process's memory does not grow with a job's size.

Standard queues are also *fair queues*, as SQS's are: a message's ``MessageGroupId`` names
its tenant (llmbatch sends the job id), a message without one is a tenant of its own, and a
tenant with a disproportionate share of the messages in flight (more than
:data:`NOISY_SHARE` of them and at least :data:`NOISY_MIN_IN_FLIGHT`) is a noisy neighbour:
while any quiet tenant has a message available, receivers get the quiet tenants' messages
first (oldest first among them); otherwise the noisy tenant with the fewest messages in
flight. moto accepts the attribute but delivers in send order only. SQS's second measure, a
tenant's share of the consumers' processing time, is not reproduced (the queue cannot see
how long a consumer works on a message before deleting it apart from its time in flight,
which the first measure already counts).

Callers hold the local stack's SQS lock (``llmbatch.local.moto_server``) around every call.
"""

from __future__ import annotations

import copy
import functools
import heapq
import itertools
import os
import time
import weakref
from typing import Any

from llmbatch.local import moto_sqs_cold

#: How a message stands in its queue's index.
READY, IN_FLIGHT, DELAYED, GONE = "ready", "in_flight", "delayed", "gone"
#: A message id (uuid4) ends every receipt handle the index gives out, so a handle of a
#: deleted message is known as one without keeping it (moto keeps them all, forever).
_ID_LEN = 36
_HANDLE_LEN = 185
#: SQS fair queues: a tenant is noisy above this share of the queue's messages in flight...
NOISY_SHARE = 0.10
#: ... when it also has at least this many of its own in flight.
NOISY_MIN_IN_FLIGHT = 30
#: A standard queue keeps this many of its available messages in memory (about 1.1 KB each),
#: and each tenant's oldest; the rest of a backlog waits on disk
#: (:mod:`llmbatch.local.moto_sqs_cold`). Each tenant whose messages in memory run out then
#: has up to :data:`THAW_CHUNK` back at a time.
HOT_READY_MAX = 5_000
#: Messages read back from disk at once, when a tenant's available messages in memory run out.
THAW_CHUNK = 500


def now_ms() -> float:
    """Unix time in milliseconds: moto's ``unix_time_millis``, without its datetime arithmetic."""
    return time.time() * 1000.0


def receipt_handle(message_id: str) -> str:
    """An opaque handle as long as moto's (185 characters), ending with the message's id: random
    hex before it (``random.choices`` of letters, one Python call per character, was 6% of a
    receive's CPU in the SQS process)."""
    pad = _HANDLE_LEN - len(message_id)
    return os.urandom((pad + 1) // 2).hex()[:pad] + message_id


def message_id_of(handle: str) -> str | None:
    """The message id a handle of :func:`receipt_handle` ends with (None for any other string)."""
    mid = handle[-_ID_LEN:]
    if len(handle) != _HANDLE_LEN or [i for i, c in enumerate(mid) if c == "-"] != [8, 13, 18, 23]:
        return None
    return mid


class MessageIndex:
    """The messages of one standard queue.

    ``ready`` holds, per tenant, (seq, gen, message) of its messages available now;
    ``waiting`` holds (due ms, seq, gen, message) of delayed and in-flight ones. A message's
    ``_ix_gen`` moves on at every change, so an entry left behind in a heap is known as
    stale and skipped; the heaps are rebuilt when stale entries outnumber live messages,
    which keeps memory proportional to the messages in the queue and every call amortised
    O(log n) (times the tenants with messages available, for the fair choice).

    A deep queue keeps no more than ``hot_max`` available messages in memory: a message sent
    beyond that, or behind a tenant's messages already on disk, is *frozen* there (counted
    as available all the same); a tenant's oldest frozen messages are *thawed* a chunk at a
    time when its messages in memory run out. Send order within a tenant is kept: a frozen
    message is always newer than the tenant's messages in memory, bar ones back from flight
    or from a delay, which are older or were sent with a delay (SQS's order is best-effort).
    """

    def __init__(self, hot_max: int | None = None) -> None:
        self.live: dict[str, Any] = {}
        self.ready: dict[str | None, list[tuple[int, int, Any]]] = {}
        self.waiting: list[tuple[float, int, int, Any]] = []
        self.handles: dict[str, Any] = {}
        self.counts = {READY: 0, IN_FLIGHT: 0, DELAYED: 0}
        #: Messages in flight per tenant (a message without a group is its own tenant, so
        #: never more than one: it is never noisy and is not counted here).
        self.in_flight: dict[str, int] = {}
        self._seq = itertools.count()
        self.hot_max = HOT_READY_MAX if hot_max is None else hot_max
        #: Frozen messages per tenant, and in all; counted as READY in ``counts`` too.
        self.frozen: dict[str | None, int] = {}
        self.frozen_total = 0
        #: This queue's key in the process's store of frozen messages, once it has one.
        self._cold_id: int | None = None

    # -- state changes --
    def _set(self, m: Any, state: str) -> None:
        old = getattr(m, "_ix_state", GONE)
        if old in self.counts:
            self.counts[old] -= 1
        if state in self.counts:
            self.counts[state] += 1
        group = getattr(m, "group_id", None)
        if group is not None and (old == IN_FLIGHT) != (state == IN_FLIGHT):
            n = self.in_flight.get(group, 0) + (1 if state == IN_FLIGHT else -1)
            if n:
                self.in_flight[group] = n
            else:
                self.in_flight.pop(group, None)
        m._ix_state = state
        m._ix_gen = getattr(m, "_ix_gen", 0) + 1

    def _wait(self, m: Any, state: str, due_ms: float) -> None:
        self._set(m, state)
        heapq.heappush(self.waiting, (due_ms, m._ix_seq, m._ix_gen, m))

    def _make_ready(self, m: Any) -> None:
        self._set(m, READY)
        heapq.heappush(self.ready.setdefault(getattr(m, "group_id", None), []), (m._ix_seq, m._ix_gen, m))

    def add(self, m: Any) -> None:
        m._ix_state = GONE  # whatever it was in another queue's index (a redrive moves it)
        m._ix_seq = next(self._seq)
        group = getattr(m, "group_id", None)
        if m.delayed_until > now_ms():
            self.live[m.id] = m
            self._wait(m, DELAYED, m.delayed_until)
        elif self.frozen.get(group) or (self.counts[READY] - self.frozen_total >= self.hot_max and group in self.ready):
            self._freeze(m, group)
        else:
            self.live[m.id] = m
            self._make_ready(m)
        self._compact()

    def _freeze(self, m: Any, group: str | None) -> None:
        """Keep an available message on disk, not in memory (still counted as available)."""
        cold = moto_sqs_cold.store()
        if self._cold_id is None:
            self._cold_id = cold.new_queue()
            # A deleted queue's rows go with it (not at exit: the file goes whole then).
            weakref.finalize(self, cold.forget, self._cold_id).atexit = False
        m._ix_state = READY  # as listed by :meth:`in_order`
        cold.put(self._cold_id, group, m._ix_seq, m)
        self.frozen[group] = self.frozen.get(group, 0) + 1
        self.frozen_total += 1
        self.counts[READY] += 1

    def _thaw(self, group: str | None) -> None:
        """Bring a tenant's oldest frozen messages back into memory."""
        assert self._cold_id is not None
        thawed = moto_sqs_cold.store().take_oldest(self._cold_id, group, THAW_CHUNK)
        # (none: the store lost them; stop counting them rather than look at every receive)
        gone = len(thawed) if thawed else self.frozen[group]
        left = self.frozen[group] - gone
        if left:
            self.frozen[group] = left
        else:
            del self.frozen[group]
        self.frozen_total -= gone
        self.counts[READY] -= gone
        for m in thawed:
            m._ix_state = GONE
            self.live[m.id] = m
            self._make_ready(m)

    def remove(self, m: Any) -> None:
        if self.live.pop(m.id, None) is None:
            return
        for h in m.all_receipt_handles:
            if h is not None:
                self.handles.pop(h, None)
        self._set(m, GONE)
        self._compact()  # its heap entries, stale now, must not keep it (and its body) alive

    def received(self, m: Any) -> None:
        """After ``m.mark_received``: in flight until its visibility timeout, with a new handle."""
        m.receipt_handle = receipt_handle(m.id)
        self.handles[m.receipt_handle] = m
        self._wait(m, IN_FLIGHT, m.visible_at)

    def visibility_changed(self, m: Any) -> None:
        self._wait(m, IN_FLIGHT, m.visible_at)

    def reset(self, messages: list[Any]) -> None:
        cold_id, hot_max = self._cold_id, self.hot_max
        if cold_id is not None:
            moto_sqs_cold.store().drop(cold_id)
        self.__init__(hot_max)  # type: ignore[misc]
        self._cold_id = cold_id
        for m in messages:
            self.add(m)

    # -- reading --
    def promote(self, now: float) -> None:
        """Messages whose delay or visibility timeout has ended become available."""
        while self.waiting and self.waiting[0][0] <= now:
            due, seq, gen, m = heapq.heappop(self.waiting)
            if gen != m._ix_gen:
                continue
            if not (now > m.visible_at and now >= m.delayed_until):  # moto's Message.visible / delayed
                heapq.heappush(self.waiting, (due + 1, seq, gen, m))
                break
            self._make_ready(m)

    def noisy(self, group: str | None) -> bool:
        """Whether ``group`` holds a disproportionate share of the messages in flight."""
        if group is None:
            return False
        mine = self.in_flight.get(group, 0)
        return mine >= NOISY_MIN_IN_FLIGHT and mine > NOISY_SHARE * self.counts[IN_FLIGHT]

    def _head(self, group: str | None) -> tuple[int, int, Any] | None:
        """The oldest live entry of ``group``'s available messages (stale ones dropped,
        frozen ones thawed when none is left in memory)."""
        heap = self.ready.setdefault(group, [])
        while heap and heap[0][1] != heap[0][2]._ix_gen:
            heapq.heappop(heap)
        if not heap and self.frozen.get(group):
            self._thaw(group)
        if not heap:
            del self.ready[group]
            return None
        return heap[0]

    def take(self) -> Any | None:
        """The next message to deliver, no longer counted as available (the caller
        receives it, expires it or moves it), or None: the oldest available message of a
        quiet tenant, else of the noisy tenant with the fewest messages in flight."""
        best: tuple[tuple[int, int, int], str | None] | None = None
        for group in [*self.ready, *(g for g in self.frozen if g not in self.ready)]:
            head = self._head(group)
            if head is None:
                continue
            rank = (1, self.in_flight.get(group or "", 0), head[0]) if self.noisy(group) else (0, 0, head[0])
            if best is None or rank < best[0]:
                best = (rank, group)
        if best is None:
            return None
        _, _, m = heapq.heappop(self.ready[best[1]])
        self._set(m, IN_FLIGHT)
        return m

    def by_handle(self, handle: str) -> Any | None:
        return self.handles.get(handle)

    def in_order(self, state: str | None = None) -> list[Any]:
        """The live messages (of ``state``) in send order, frozen ones included: O(n), for
        rare calls only."""
        ms = list(self.live.values())
        if self._cold_id is not None and state in (None, READY):
            ms += moto_sqs_cold.store().peek(self._cold_id)
        ms.sort(key=lambda m: m._ix_seq)
        return [m for m in ms if state is None or m._ix_state == state]

    def _compact(self) -> None:
        entries = sum(len(heap) for heap in self.ready.values())
        if entries + len(self.waiting) <= 2 * len(self.live) + 1024:
            return
        for group, heap in list(self.ready.items()):
            kept = [e for e in heap if e[1] == e[2]._ix_gen]
            if kept:
                heapq.heapify(kept)
                self.ready[group] = kept
            else:
                del self.ready[group]
        self.waiting = [e for e in self.waiting if e[2] == e[3]._ix_gen]
        heapq.heapify(self.waiting)


# ---- the patches ------------------------------------------------------------------------------


def _index(queue: Any) -> MessageIndex:
    ix = queue.__dict__.get("_ix")
    if ix is None:
        ix = queue.__dict__["_ix"] = MessageIndex()
    return ix


def _indexed(queue: Any) -> bool:
    return not getattr(queue, "fifo_queue", False)


_applied = False


def make_standard_queues_constant_time() -> None:
    """Patch moto's SQS models (once per process): standard queues use :class:`MessageIndex`."""
    global _applied
    if _applied:
        return
    from moto.sqs import models
    from moto.sqs.exceptions import InvalidParameterValue, ReceiptHandleIsInvalid

    Queue, SQSBackend = models.Queue, models.SQSBackend

    # ``Queue.attributes`` turns 14 attribute names into snake case on every read; the
    # function is pure, so remembering its answers changes nothing but the cost.
    models.camelcase_to_underscores = functools.lru_cache(maxsize=256)(models.camelcase_to_underscores)

    def get_messages(self: Any) -> Any:
        if _indexed(self):
            # A copy: code that would change it must go through the patched methods.
            return tuple(_index(self).in_order())
        return self.__dict__.setdefault("_raw_messages", [])

    def set_messages(self: Any, value: list[Any]) -> None:
        # (moto's __init__ sets it before ``fifo_queue`` exists; a purge sets it to [])
        self.__dict__["_raw_messages"] = value
        if _indexed(self):
            _index(self).reset(list(value))

    Queue._messages = property(get_messages, set_messages)  # type: ignore[assignment]

    def counted(state: str, original: Any) -> property:
        def count(self: Any) -> int:
            if not _indexed(self):
                return int(original.fget(self))
            ix = _index(self)
            ix.promote(now_ms())
            return ix.counts[state]

        return property(count)

    Queue.approximate_number_of_messages = counted(READY, Queue.approximate_number_of_messages)  # type: ignore[assignment]
    Queue.approximate_number_of_messages_not_visible = counted(  # type: ignore[assignment]
        IN_FLIGHT, Queue.approximate_number_of_messages_not_visible
    )
    Queue.approximate_number_of_messages_delayed = counted(DELAYED, Queue.approximate_number_of_messages_delayed)  # type: ignore[assignment]

    original_messages: Any = Queue.messages

    def messages(self: Any) -> list[Any]:
        if not _indexed(self):
            return list(original_messages.fget(self))
        ix = _index(self)
        ix.promote(now_ms())
        return ix.in_order(READY)

    Queue.messages = property(messages)  # type: ignore[assignment]

    original_add = Queue.add_message

    def add_message(self: Any, message: Any) -> None:
        if not _indexed(self):
            return original_add(self, message)
        _index(self).add(message)
        _run_enabled_mappings(self)

    Queue.add_message = add_message  # type: ignore[method-assign]

    original_delete = Queue.delete_message

    def delete_message(self: Any, handle: str) -> None:
        if not _indexed(self):
            return original_delete(self, handle)
        ix = _index(self)
        m = ix.by_handle(handle)
        if m is not None:
            ix.remove(m)
            return
        mid = message_id_of(handle)
        if mid is None or mid in ix.live:
            # Not a handle this queue gave out (or an old one of a message received again
            # since, which moto still accepts: then ``by_handle`` found it).
            raise ReceiptHandleIsInvalid()
        # A handle of a message already deleted: deleting again succeeds, as in moto and SQS.

    Queue.delete_message = delete_message  # type: ignore[method-assign,assignment]

    original_receive = SQSBackend.receive_message

    def receive_message(
        self: Any,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> list[Any]:
        queue = self.get_queue(queue_name)
        if not _indexed(queue):
            return list(
                original_receive(
                    self, queue_name, count, wait_seconds_timeout, visibility_timeout, message_attribute_names
                )
            )
        ix = _index(queue)
        now = now_ms()
        ix.promote(now)
        retain_ms = int(queue.message_retention_period) * 1000
        redrive = queue.redrive_policy if queue.dead_letter_queue is not None else None
        result: list[Any] = []
        while len(result) < count:
            m = ix.take()
            if m is None:
                break
            if m.sent_timestamp + retain_ms <= now:  # past its retention period: SQS deletes it
                ix.remove(m)
                continue
            if redrive and m.approximate_receive_count >= redrive["maxReceiveCount"]:
                ix.remove(m)
                queue.dead_letter_queue.add_message(m)
                continue
            _mark_received(m, visibility_timeout, now)
            ix.received(m)
            # moto deep-copies to filter the attributes without touching the message; the
            # filter only replaces the attribute dict, so a shallow copy does the same.
            shown = copy.copy(m)
            models._filter_message_attributes(shown, message_attribute_names or [])
            result.append(shown)
        return result

    SQSBackend.receive_message = receive_message  # type: ignore[method-assign]

    original_change = SQSBackend.change_message_visibility

    def change_message_visibility(self: Any, queue_name: str, receipt_handle: str, visibility_timeout: int) -> None:
        queue = self.get_queue(queue_name)
        if not _indexed(queue):
            return original_change(self, queue_name, receipt_handle, visibility_timeout)
        ix = _index(queue)
        m = ix.by_handle(receipt_handle)
        if m is None:
            raise ReceiptHandleIsInvalid
        given = now_ms() + int(visibility_timeout) * 1000
        if given - m.sent_timestamp > 43200 * 1000:
            raise InvalidParameterValue(
                f"Value {visibility_timeout} for parameter VisibilityTimeout is invalid. Reason: Total "
                "VisibilityTimeout for the message is beyond the limit [43200 seconds]"
            )
        m.change_visibility(visibility_timeout)
        ix.visibility_changed(m)

    SQSBackend.change_message_visibility = change_message_visibility  # type: ignore[method-assign]

    def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
        # moto reads the whole of ``Queue.attributes`` (three times) for this one number.
        retention = int(self.get_queue(queue_name).message_retention_period)
        return bool(retention + message.sent_timestamp / 1000 > time.time())

    SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period  # type: ignore[method-assign]
    _applied = True


def _mark_received(m: Any, visibility_timeout: int, now: float) -> None:
    """moto's ``Message.mark_received``, but for the new receipt handle, which
    :meth:`MessageIndex.received` makes (moto's costs 185 ``random.choice`` calls, to be
    thrown away)."""
    if not m.approximate_first_receive_timestamp:
        m.approximate_first_receive_timestamp = int(now)
    m.approximate_receive_count += 1
    if visibility_timeout:
        m.change_visibility(int(visibility_timeout))
    m._old_receipt_handles.append(m.receipt_handle)


def _run_enabled_mappings(queue: Any) -> None:
    """moto's own step after adding a message: an *enabled* event source mapping invokes its
    function at once (the local stack creates its mappings disabled; kept for faithfulness)."""
    from moto.sqs.models import sqs_backends

    for arn, esm in queue.lambda_event_source_mappings.items():
        if not esm.enabled:
            continue
        backend = sqs_backends[queue.account_id][queue.region]
        messages = backend.receive_message(
            queue.name, esm.batch_size, queue.receive_message_wait_time_seconds, queue.visibility_timeout
        )
        from moto.awslambda.utils import get_backend

        result = get_backend(queue.account_id, queue.region).send_sqs_batch(arn, messages, queue.queue_arn)
        for m in messages:
            handle = str(m.receipt_handle)
            if result:
                backend.delete_message(queue.name, handle)
            else:
                backend.change_message_visibility(queue.name, handle, visibility_timeout=0)
