"""The local event source mapping (llmbatch/local/poller.py) deletes a batch's successes after
the slot's next gather, so the receives that start the next invocations never queue in the SQS
process behind the deletes of the last ones. A slot holding deletes looks at the queue with a
short poll first, so a drained queue shows them deleted at once; nothing is left undeleted when
the slot idles, is above the mapping's concurrency, fails a gather or stops; and what the
function reports failed, or a whole failed invocation, is never deleted.

The slot's loop, gather and invocation are the emulator's own; only the SQS calls (a scripted
queue) and the container (scripted answers) stand in."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from llmbatch.local.poller import EventSourceMappingEmulator, MappingSettings, PollerStats

SETTINGS = MappingSettings(batch_size=10, window_s=0.0, max_concurrency=1, report_failures=True)


class InlineExecutor:
    """Runs what is submitted at once, in the submitting thread (the order is what is tested)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        fn(*args)


@dataclass
class FakeFunction:
    logical_id: str = "Worker"
    timeout_s: float = 5.0


@dataclass
class FakeSource:
    queue_arn: str = "arn:aws:sqs:us-east-1:123456789012:requests"
    queue_url: str = "http://127.0.0.1:1/123456789012/requests"


class ScriptedContainer:
    """A worker container whose invocations are written to ``events`` and answered with
    ``answer(record ids)``."""

    def __init__(
        self, events: list[tuple[Any, ...]], answer: Callable[[list[str]], tuple[str, dict[str, Any]]]
    ) -> None:
        self.events = events
        self.answer = answer
        self.busy = False
        self.alive = True

    def wait_ready(self) -> None:
        pass

    def invoke(self, event: dict[str, Any], *, timeout_s: float) -> tuple[str, dict[str, Any]]:
        record_ids = [r["messageId"] for r in event["Records"]]
        self.events.append(("invoke", len(record_ids)))
        return self.answer(record_ids)


def all_succeed(ids: list[str]) -> tuple[str, dict[str, Any]]:
    return "ok", {"result": {"batchItemFailures": []}}


class ScriptedMapping:
    """One slot of the emulator over a scripted queue of ``count`` messages. Its SQS calls
    are written to ``events``: ("receive", wait s, messages got), ("invoke", n), ("delete",
    ids...). A long poll of the empty queue ends the run (as ``stop()`` would), and so does a
    delete with ``stop_after_delete`` (ending any wait the slot is in)."""

    def __init__(
        self,
        count: int,
        answer: Callable[[list[str]], tuple[str, dict[str, Any]]] = all_succeed,
        *,
        stop_after_delete: bool = False,
    ) -> None:
        self.stop_after_delete = stop_after_delete
        self.events: list[tuple[Any, ...]] = []
        self.queue = [
            {"MessageId": f"m-{i}", "ReceiptHandle": f"h-{i}", "Body": "{}", "Attributes": {}} for i in range(count)
        ]
        self.emulator = esm = EventSourceMappingEmulator.__new__(EventSourceMappingEmulator)
        esm.function = FakeFunction()  # type: ignore[assignment]
        esm.source = FakeSource()  # type: ignore[assignment]
        esm.endpoint = "http://127.0.0.1:1"  # never called: every SQS call is scripted
        esm._poll_wait_s = 1
        esm._stop = threading.Event()
        esm._lock = threading.Lock()
        esm._threads = [threading.current_thread()]
        esm._max_slots = 1
        esm._gathering = 0
        esm._busy = 0
        esm._messages_seen = threading.Event()
        esm._messages_seen.set()
        esm._filling = threading.Lock()
        esm._deletes = InlineExecutor()  # type: ignore[assignment]
        esm._settings = SETTINGS
        esm._settings_at = time.monotonic() + 3600
        esm.stats = PollerStats()
        self.container = container = ScriptedContainer(self.events, answer)
        esm._container = lambda index: container  # type: ignore[assignment,method-assign,return-value]
        esm._receive = self._receive  # type: ignore[method-assign]
        esm._delete = self._delete  # type: ignore[method-assign]

    def _receive(self, sqs: Any, count: int, wait_s: int) -> list[dict[str, Any]]:
        got, self.queue = self.queue[:count], self.queue[count:]
        self.events.append(("receive", wait_s, len(got)))
        if not got and wait_s > 0:
            self.emulator.signal_stop()
        return got

    def _delete(self, sqs: Any, chunk: list[dict[str, Any]]) -> None:
        assert len(chunk) <= 10  # DeleteMessageBatch takes at most ten entries
        self.events.append(("delete", *(m["MessageId"] for m in chunk)))
        if self.stop_after_delete:
            self.emulator.signal_stop()

    def run(self) -> list[tuple[Any, ...]]:
        self.emulator._slot_loop(0)
        return self.events


def deleted(events: list[tuple[Any, ...]]) -> list[str]:
    return [m for e in events if e[0] == "delete" for m in e[1:]]


def ids(first: int, last: int) -> tuple[str, ...]:
    return tuple(f"m-{i}" for i in range(first, last + 1))


def test_a_batch_is_deleted_after_the_next_gather_whose_first_look_does_not_wait() -> None:
    # GIVEN a queue of 15 messages and a slot gathering batches of up to 10
    mapping = ScriptedMapping(15)

    # WHEN the slot runs until the queue is empty
    events = mapping.run()

    # THEN each batch's deletes follow the next gather; a gather holding deletes looks with a
    # short poll, so the drained queue's answer comes at once and the last batch is deleted
    # before the slot long-polls again
    assert events == [
        ("receive", 1, 10),
        ("invoke", 10),
        ("receive", 0, 5),
        ("delete", *ids(0, 9)),
        ("invoke", 5),
        ("receive", 0, 0),
        ("delete", *ids(10, 14)),
        ("receive", 1, 0),
    ]


def test_the_records_the_function_reports_failed_are_never_deleted() -> None:
    # GIVEN a function reporting two of its five records failed (ReportBatchItemFailures)
    def answer(record_ids: list[str]) -> tuple[str, dict[str, Any]]:
        return "ok", {"result": {"batchItemFailures": [{"itemIdentifier": i} for i in ("m-1", "m-3")]}}

    # WHEN the slot runs its batch
    events = ScriptedMapping(5, answer).run()

    # THEN only the three successes are deleted
    assert deleted(events) == ["m-0", "m-2", "m-4"]


@pytest.mark.parametrize(
    "outcome", [("timeout", {}), ("crashed", {}), ("error", {"type": "RuntimeError", "message": "boom"})]
)
def test_a_batch_whose_invocation_failed_as_a_whole_is_not_deleted(outcome: tuple[str, dict[str, Any]]) -> None:
    # GIVEN an invocation that timed out, lost its container or raised
    # WHEN the slot runs its batch
    events = ScriptedMapping(5, lambda record_ids: outcome).run()

    # THEN none of its records is deleted: they come back after their visibility timeout
    assert deleted(events) == []
    assert ("invoke", 5) in events


def test_a_slot_about_to_wait_idle_deletes_its_last_batch_first() -> None:
    # GIVEN a slot whose invocation ends while another slot long-polls the (now empty) queue
    mapping = ScriptedMapping(4, stop_after_delete=True)
    esm = mapping.emulator

    def answer(record_ids: list[str]) -> tuple[str, dict[str, Any]]:
        with esm._lock:
            esm._gathering += 1  # the other slot, polling for the mapping
        esm._messages_seen.clear()
        return all_succeed(record_ids)

    mapping.container.answer = answer

    # WHEN the slot, with its batch done, goes to wait for the idle queue
    started = time.monotonic()
    events = mapping.run()

    # THEN its batch is deleted before the wait, which it did not sit out
    assert events == [("receive", 1, 4), ("invoke", 4), ("delete", *ids(0, 3))]
    assert time.monotonic() - started < 30  # the idle wait (1 s) ended by the stop, not a hang


def test_a_slot_above_the_mappings_concurrency_deletes_its_last_batch_before_it_waits() -> None:
    # GIVEN a slot whose mapping's MaximumConcurrency drops below it during its invocation
    mapping = ScriptedMapping(4, stop_after_delete=True)
    esm = mapping.emulator

    def answer(record_ids: list[str]) -> tuple[str, dict[str, Any]]:
        esm._settings = MappingSettings(batch_size=10, window_s=0.0, max_concurrency=0, report_failures=True)
        return all_succeed(record_ids)

    mapping.container.answer = answer

    # WHEN the slot finds itself above the mapping's concurrency
    events = mapping.run()

    # THEN its batch is deleted, and it gathers nothing more
    assert events == [("receive", 1, 4), ("invoke", 4), ("delete", *ids(0, 3))]


def test_a_gather_that_fails_still_lets_the_last_batch_be_deleted() -> None:
    # GIVEN a slot whose next gather fails (the SQS process unreachable, say)
    mapping = ScriptedMapping(4, stop_after_delete=True)
    esm = mapping.emulator
    scripted_receive = mapping._receive

    def receive(sqs: Any, count: int, wait_s: int) -> list[dict[str, Any]]:
        if any(e[0] == "invoke" for e in mapping.events):
            mapping.events.append(("receive failed",))
            raise ConnectionError("sqs unreachable")
        return scripted_receive(sqs, count, wait_s)

    esm._receive = receive  # type: ignore[method-assign]

    # WHEN the slot runs
    events = mapping.run()

    # THEN the batch it ran is deleted all the same
    assert events == [("receive", 1, 4), ("invoke", 4), ("receive failed",), ("delete", *ids(0, 3))]


def test_a_slot_that_stops_after_its_invocation_deletes_its_batch() -> None:
    # GIVEN a slot whose stop is asked for during its invocation
    mapping = ScriptedMapping(8)
    esm = mapping.emulator

    def answer(record_ids: list[str]) -> tuple[str, dict[str, Any]]:
        esm.signal_stop()
        return all_succeed(record_ids)

    mapping.container.answer = answer

    # WHEN the loop ends without another gather
    events = mapping.run()

    # THEN the batch it ran is deleted on the way out
    assert events == [("receive", 1, 8), ("invoke", 8), ("delete", *ids(0, 7))]
