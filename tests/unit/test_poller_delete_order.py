"""The local event source mapping (llmbatch/local/poller.py) deletes a batch's successes after
the slot's next gather, so the receives that start the next invocations never queue in the SQS
process behind the deletes of the last ones; and nothing is left undeleted when it stops."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from llmbatch.local.poller import EventSourceMappingEmulator, MappingSettings, PollerStats

SETTINGS = MappingSettings(batch_size=20, window_s=0.0, max_concurrency=1, report_failures=True)


class InlineExecutor:
    """Runs what is submitted at once, in the submitting thread (the order is what is tested)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        fn(*args)


def batch(name: str, n: int) -> list[dict[str, Any]]:
    return [{"MessageId": f"{name}-{i}", "ReceiptHandle": f"h-{name}-{i}"} for i in range(n)]


class ScriptedMapping:
    """One slot of the emulator whose gathers return ``batches`` in turn (then nothing), whose
    invocations fail the records named in ``fail`` (as ReportBatchItemFailures would), and
    whose SQS calls are written to ``events``."""

    def __init__(self, batches: list[list[dict[str, Any]]], fail: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.events: list[tuple[str, ...]] = []
        self.emulator = esm = EventSourceMappingEmulator.__new__(EventSourceMappingEmulator)
        esm.endpoint = "http://127.0.0.1:1"  # never called: every SQS call below is scripted
        esm._stop = threading.Event()
        esm._lock = threading.Lock()
        esm._threads = [threading.current_thread()]
        esm._max_slots = 1
        esm._gathering = 0
        esm._messages_seen = threading.Event()
        esm._messages_seen.set()
        esm._deletes = InlineExecutor()  # type: ignore[assignment]
        esm._settings = SETTINGS
        esm._settings_at = time.monotonic() + 3600
        esm.stats = PollerStats()
        todo = list(batches)

        def gather(sqs: Any, settings: MappingSettings) -> list[dict[str, Any]]:
            got = todo.pop(0) if todo else []
            self.events.append(("gather", *(m["MessageId"] for m in got)))
            if not todo and not got:
                esm._stop.set()  # the script is done: the slot's loop ends after this gather
            return got

        def invoke(
            index: int, sqs: Any, settings: MappingSettings, messages: list[dict[str, Any]]
        ) -> list[dict[str, Any]]:
            self.events.append(("invoke", *(m["MessageId"] for m in messages)))
            return [m for m in messages if m["MessageId"] not in fail]

        def delete(sqs: Any, chunk: list[dict[str, Any]]) -> None:
            assert len(chunk) <= 10  # DeleteMessageBatch takes at most ten entries
            self.events.append(("delete", *(m["MessageId"] for m in chunk)))

        esm._gather = gather  # type: ignore[method-assign]
        esm._invoke = invoke  # type: ignore[method-assign]
        esm._delete = delete  # type: ignore[method-assign]

    def run(self) -> list[tuple[str, ...]]:
        self.emulator._slot_loop(0)
        return self.events


def deleted(events: list[tuple[str, ...]]) -> list[str]:
    return [m for e in events if e[0] == "delete" for m in e[1:]]


def test_a_batch_is_deleted_after_the_slots_next_gather_in_chunks_of_ten() -> None:
    # GIVEN a slot that gathers a batch of 12, then one of 3, then finds the queue empty
    first, second = batch("a", 12), batch("b", 3)

    # WHEN it runs until the queue is empty
    events = ScriptedMapping([first, second]).run()

    # THEN each batch's deletes follow the next gather, never precede it
    kinds = [e[0] for e in events]
    assert kinds == ["gather", "invoke", "gather", "delete", "delete", "invoke", "gather", "delete"]
    assert events[3][1:] == tuple(f"a-{i}" for i in range(10))
    assert events[4][1:] == ("a-10", "a-11")
    assert events[7][1:] == ("b-0", "b-1", "b-2")


def test_failed_records_are_never_deleted_and_the_last_batch_is_deleted_when_the_slot_stops() -> None:
    # GIVEN a slot whose only batch has two records the function reports as failed
    only = batch("a", 5)
    mapping = ScriptedMapping([only], fail={"a-1", "a-3"})

    # WHEN it runs and stops
    events = mapping.run()

    # THEN the three successes are deleted (after the gather that ended the loop), the failures not
    assert deleted(events) == ["a-0", "a-2", "a-4"]
    assert events[-1][0] == "delete"


def test_a_slot_that_stops_mid_loop_still_deletes_its_last_batch() -> None:
    # GIVEN a slot whose stop is asked for during its invocation
    mapping = ScriptedMapping([batch("a", 4), batch("b", 4)])
    esm = mapping.emulator
    original = esm._invoke

    def invoke_then_stop(*args: Any) -> list[dict[str, Any]]:
        done = original(*args)
        esm._stop.set()
        return done

    esm._invoke = invoke_then_stop  # type: ignore[method-assign]

    # WHEN the loop ends without another gather
    events = mapping.run()

    # THEN the batch it ran is deleted all the same, and the second never gathered
    assert [e[0] for e in events] == ["gather", "invoke", "delete"]
    assert deleted(events) == ["a-0", "a-1", "a-2", "a-3"]
