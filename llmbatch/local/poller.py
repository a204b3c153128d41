"""The local stand-in for Lambda's SQS event source mapping.

As configured in the template (and read back from moto, so UpdateEventSourceMapping
reaches it): batches of up to BatchSize records gathered for at most
MaximumBatchingWindowInSeconds, at most MaximumConcurrency invocations at once, each in
its own container process; with ReportBatchItemFailures the successes are deleted and the
failures left to reappear after their visibility timeout; a raised error, a timeout or a
lost container leaves the whole batch to reappear.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore
from botocore.config import Config

from llmbatch.local.lambda_runtime import ContainerProcess
from llmbatch.local.provision import ACCESS_KEY_ID, REGION, EventSource, LocalFunction, aws_client

log = logging.getLogger("llmbatch.local.poller")

#: How often the mapping's settings are read back from moto.
SETTINGS_REFRESH_S = 2.0
#: How long a free slot waits, while another long-polls an empty queue, before it looks again.
IDLE_SLOT_RECHECK_S = 1.0
#: SQS returns at most 10 messages per receive.
RECEIVE_MAX = 10
#: Threads of a mapping for its receives that fill a batch, and as many for its deletes after
#: one: Lambda's pollers are many, a slot's next batch does not wait for the last one's
#: deletes, and its receives never queue behind any slot's deletes (in one pool they did: a
#: batch's gather took 0.25-0.9 s behind ten deletes, issue 12).
IO_THREADS = 8


def mapping_sqs_client(endpoint_url: str) -> Any:
    """The SQS client of a mapping's slots: the stack's, less two per-call costs of the SDK
    that buy nothing between the stand-in for AWS's own pollers and moto.

    * No SigV4 signature: moto checks none. Each call carries the header moto does read
      (the credential's scope: its access key, so its account, and its region), written
      once. Signing was 13% of the poller's CPU (py-spy, a 2,000-request job).
    * The user agent built once, not twice for each call (botocore builds it for the request
      and again once the request is made, to add the features the call used: 9%).

    Together the client's CPU per ReceiveMessage fell from 2.8-3.2 to 2.2-2.3 ms (300 calls
    each, in turn). The Lambda service's pollers sign their calls with the function's role;
    here nothing checks a signature, and the workers' and producers' clients still sign.
    """
    client = aws_client("sqs", endpoint_url, config=Config(signature_version=botocore.UNSIGNED))
    authorization = (
        # moto reads the access key (the account) and the region; the date it never reads.
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20260101/{REGION}/sqs/aws4_request, "
        "SignedHeaders=host, Signature=0"
    )

    def credential_scope(request: Any, **_: Any) -> None:
        request.headers["Authorization"] = authorization

    client.meta.events.register_first("request-created.sqs", credential_scope)
    # botocore's (1.3x) builder, private: should it go, the client builds its agent as usual.
    creator = getattr(client, "_user_agent_creator", None)
    if creator is not None and callable(getattr(creator, "to_string", None)):
        user_agent = creator.to_string()
        creator.to_string = lambda: user_agent
    return client


@dataclass(frozen=True)
class MappingSettings:
    batch_size: int
    window_s: float
    max_concurrency: int
    report_failures: bool
    enabled: bool = True


@dataclass
class PollerStats:
    invocations: int = 0
    records: int = 0
    deleted: int = 0
    failed_records: int = 0
    handler_errors: int = 0
    timeouts: int = 0
    crashes: int = 0
    max_concurrent: int = 0
    longest_invocation_s: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)


class EventSourceMappingEmulator:
    def __init__(
        self,
        function: LocalFunction,
        source: EventSource,
        aws_endpoint_url: str,
        *,
        container_env: dict[str, str] | None = None,
        poll_wait_s: int = 1,
        log_dir: Path | None = None,
    ) -> None:
        self.function = function
        self.source = source
        self.endpoint = aws_endpoint_url
        self._container_env = container_env or {}
        self._log_path = (log_dir / f"{function.logical_id}.log") if log_dir else None
        if log_dir:
            log_dir.mkdir(parents=True, exist_ok=True)
        self._poll_wait_s = poll_wait_s
        self._lambda = aws_client("lambda", aws_endpoint_url)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._containers: dict[int, ContainerProcess] = {}
        self._busy = 0
        #: Slots in a gather now, and whether the last gather found the queue with messages:
        #: while it is empty one slot long-polls for the mapping and the others wait for it.
        self._gathering = 0
        self._messages_seen = threading.Event()
        #: Held by the slot filling a batch: the mapping fills one batch at a time (see _gather).
        self._filling = threading.Lock()
        self._receives = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix=f"esm-rx-{function.logical_id}")
        self._deletes = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix=f"esm-del-{function.logical_id}")
        self._settings = self._read_settings()
        self._settings_at = time.monotonic()
        self.stats = PollerStats()

    # ---- settings ----------------------------------------------------------------------

    def _read_settings(self) -> MappingSettings:
        m = self._lambda.get_event_source_mapping(UUID=self.source.uuid)
        return MappingSettings(
            batch_size=int(m.get("BatchSize", 10)),
            window_s=float(m.get("MaximumBatchingWindowInSeconds", 0)),
            max_concurrency=int(m.get("ScalingConfig", {}).get("MaximumConcurrency", 1000)),
            report_failures="ReportBatchItemFailures" in m.get("FunctionResponseTypes", []),
        )

    def settings(self) -> MappingSettings:
        with self._lock:
            if time.monotonic() - self._settings_at > SETTINGS_REFRESH_S:
                try:
                    self._settings = self._read_settings()
                except Exception as e:  # keep the last known settings
                    log.warning("cannot read mapping settings: %s", e)
                self._settings_at = time.monotonic()
            return self._settings

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self, *, max_slots: int = 1000) -> None:
        """One poller thread per possible concurrent invocation; those above the mapping's
        current MaximumConcurrency wait, so a change takes effect without a restart."""
        self._max_slots = max_slots
        ContainerProcess.prepare()
        self._grow_to(self.settings().max_concurrency)

    def warm(self) -> None:
        """Start a container for each slot the mapping allows now and wait until each has
        run its init (imports, clients). In AWS every container's init runs on CPU of its
        own; here ten at once would take the machine's cores from the endpoint, the queue
        and a submit in progress just as a first job starts, so ``local up`` pays them
        before it reports ready. Invocations are unchanged: the first one of a container
        still finds only what its init made."""
        count = min(self._max_slots, self.settings().max_concurrency)
        made = [self._container(i) for i in range(count)]
        for c in made:
            c.wait_ready()

    def _spawn_slot(self, index: int) -> None:
        t = threading.Thread(target=self._slot_loop, args=(index,), daemon=True, name=f"esm-slot-{index}")
        self._threads.append(t)
        t.start()

    def signal_stop(self) -> None:
        """Ask every slot to stop after its current receive or invocation, without waiting
        (a stack tells all its mappings at once, then waits for each)."""
        self._stop.set()
        self._messages_seen.set()  # the slots waiting for an idle queue's poller: to their stop

    def stop(self) -> None:
        self.signal_stop()
        for t in self._threads:
            t.join(timeout=30)
        self._receives.shutdown(wait=True)
        self._deletes.shutdown(wait=True)  # the last deletes
        for c in list(self._containers.values()):
            c.stop()
        self._containers.clear()

    def kill_busy_container(self) -> bool:
        """Kill one container in the middle of an invocation (fault drills)."""
        with self._lock:
            for c in self._containers.values():
                if c.busy and c.alive:
                    c.process.kill()
                    return True
        return False

    # ---- the loop of one slot ------------------------------------------------------------

    def _slot_loop(self, index: int) -> None:
        sqs = mapping_sqs_client(self.endpoint)
        #: The last batch's successes, deleted once this slot's next gather is in: in a busy
        #: mapping every slot ends its batch at about the same time, and the receives that
        #: start the next invocations should not queue in the SQS process behind the deletes
        #: of the last ones. Those messages stay in flight one gather longer (~0.1 s with a
        #: backlog); without one, the gather's first look is a short poll, so a drained queue
        #: shows them deleted at once, not a long poll later (the priority gate reads it).
        done: list[dict[str, Any]] = []
        try:
            while not self._stop.is_set():
                settings = self.settings()
                if index >= settings.max_concurrency:
                    done = self._delete_all(sqs, done)
                    self._stop.wait(0.5)
                    continue
                self._grow_to(settings.max_concurrency)
                with self._lock:
                    # An idle queue is long-polled by one slot, as Lambda keeps a few pollers
                    # on an empty queue and adds more as messages come; every free slot
                    # polling it cost a receive per slot per second (a third of the stack's
                    # SQS calls). There is always a free slot polling, so no message waits.
                    idle = not self._messages_seen.is_set() and self._gathering > 0
                    if not idle:
                        self._gathering += 1
                if idle:
                    done = self._delete_all(sqs, done)
                    self._messages_seen.wait(IDLE_SLOT_RECHECK_S)
                    continue
                try:
                    try:
                        gathered, messages = self._gather_in_turn(index, sqs, done)
                    finally:
                        done = []  # sent by _gather_in_turn, whatever happened there
                        with self._lock:
                            self._gathering -= 1
                    if gathered is not None and messages:
                        done = self._invoke(index, sqs, gathered, messages)
                except Exception:  # a poller keeps polling, as Lambda's does
                    log.exception("event source mapping slot %d", index)
                    self._stop.wait(1.0)
        finally:
            try:
                self._delete_all(sqs, done)
            except RuntimeError:  # the pool is shut down: stop() gave up waiting for this slot
                log.warning("event source mapping slot %d: %d deletes not sent; they come back", index, len(done))

    def _grow_to(self, concurrency: int) -> None:
        with self._lock:
            want = min(self._max_slots, concurrency)
            for i in range(len(self._threads), want):
                self._spawn_slot(i)

    def _gather_in_turn(
        self, index: int, sqs: Any, done: list[dict[str, Any]]
    ) -> tuple[MappingSettings | None, list[dict[str, Any]]]:
        """Gather a batch when no other slot of the mapping is filling one (see _gather), with
        the settings it was gathered under; no settings when, by its turn, the mapping allows
        this slot no more invocations. ``done`` (the last batch's successes) is deleted by the
        time it returns: before the wait for the turn, or else once the first look is made."""
        if not self._filling.acquire(blocking=False):
            # Another slot is filling its batch: this one's deletes go now, not after that
            # batch and this one's are gathered.
            done = self._delete_all(sqs, done)
            self._filling.acquire()
        try:
            settings = self.settings()  # as they are now: the turn may have come several gathers later
            if index >= settings.max_concurrency:
                return None, []
            messages = self._gather(sqs, settings, holding=bool(done))
            if not messages:
                # Cleared in turn: no other slot's receive can have seen messages since this
                # one's came back empty (the slots parked on an idle queue wait for the event).
                self._messages_seen.clear()
            return settings, messages
        finally:
            self._filling.release()
            self._delete_all(sqs, done)

    def _gather(self, sqs: Any, settings: MappingSettings, *, holding: bool = False) -> list[dict[str, Any]]:
        """Collect a batch: up to BatchSize records, waiting at most the batching window.
        Once a receive comes back full (a backlog), the rest of the batch is received at
        once, by parallel receives, as Lambda's pollers do, not ten calls one after another.

        The caller holds ``_filling`` (``_gather_in_turn``): this stand-in fills one batch at
        a time, so messages arriving as a job is submitted go to one batch until it is full,
        not to every free slot's batch at once. That is a local choice, not a documented
        behaviour of Lambda's pollers (AWS says only that it starts with five batches at a
        time as messages come, within the same limits). The first invocation starts once
        BatchSize messages have arrived, not once MaximumConcurrency x BatchSize have, and
        the next ones follow as their batches fill. Why: invocations that all start together
        also end together, and here each then takes ~0.24 s to turn over (Lambda: tens of
        ms), so the endpoint idled while every slot turned over at once; started one batch
        apart they keep its queue fed (issue 12; llmbatch/bench/turnover_model.py prices the
        stagger). The limits are Lambda's: no batch over BatchSize, none held past the
        window, no more than MaximumConcurrency invocations. With a backlog a gather holds
        the lock only while its parallel receives take (30-60 ms), so the mapping hands out
        at most about one batch per gather time: ~2,000 messages/s with batches of 100.
        ``holding``: the slot holds the last batch's deletes until this returns, so the first
        look does not wait: an empty queue returns at once (and the slot long-polls next)."""
        messages: list[dict[str, Any]] = []
        window_ends = time.monotonic() + settings.window_s
        backlog = False
        while len(messages) < settings.batch_size and not self._stop.is_set():
            left = window_ends - time.monotonic()
            need = settings.batch_size - len(messages)
            if backlog:
                sizes = [min(RECEIVE_MAX, need - i) for i in range(0, need, RECEIVE_MAX)]
                rounds = [self._receives.submit(self._receive, sqs, n, 0) for n in sizes]
                got = [m for r in rounds for m in r.result()]
            else:
                if not messages:
                    wait = 0 if holding else self._poll_wait_s
                else:
                    wait = max(0, min(self._poll_wait_s, int(left)))
                got = self._receive(sqs, min(RECEIVE_MAX, need), wait)
            messages.extend(got)
            if not messages:
                return []
            backlog = len(got) >= min(RECEIVE_MAX, need) if not backlog else len(got) == need
            if time.monotonic() >= window_ends or (not got and left <= 0):
                break
        return messages

    def _receive(self, sqs: Any, count: int, wait_s: int) -> list[dict[str, Any]]:
        resp = sqs.receive_message(
            QueueUrl=self.source.queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=wait_s,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        got = list(resp.get("Messages", []))
        if got:
            self._messages_seen.set()  # the slots waiting on an idle queue gather too, at once
        return got

    def _container(self, index: int) -> ContainerProcess:
        with self._lock:
            c = self._containers.get(index)
            if c is None or not c.alive:
                c = ContainerProcess(self.function, self.endpoint, self._container_env, self._log_path)
                self._containers[index] = c
            return c

    def _invoke(
        self, index: int, sqs: Any, settings: MappingSettings, messages: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Run one invocation; returns the records to delete (none when it failed as a whole)."""
        event = {"Records": [self._record(m) for m in messages]}
        container = self._container(index)
        container.wait_ready()
        with self._lock:
            self._busy += 1
            self.stats.max_concurrent = max(self.stats.max_concurrent, self._busy)
            self.stats.invocations += 1
            self.stats.records += len(messages)
        container.busy = True
        started = time.monotonic()
        try:
            kind, payload = container.invoke(event, timeout_s=self.function.timeout_s + 1.0)
        finally:
            container.busy = False
            with self._lock:
                self._busy -= 1
                self.stats.longest_invocation_s = max(self.stats.longest_invocation_s, time.monotonic() - started)
        self.stats.outcomes[kind] += 1

        if kind != "ok":
            # The whole batch reappears after its visibility timeout, as in Lambda.
            if kind == "timeout":
                self.stats.timeouts += 1
            elif kind == "crashed":
                self.stats.crashes += 1
            else:
                self.stats.handler_errors += 1
                log.warning("handler raised %s: %s", payload.get("type"), payload.get("message"))
            return []
        result = payload.get("result") or {}
        failed_ids: set[str] = set()
        if settings.report_failures and isinstance(result, dict):
            failed_ids = {f.get("itemIdentifier", "") for f in result.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed_ids]
        with self._lock:
            self.stats.failed_records += len(messages) - len(done)
        return done

    def _delete_all(self, sqs: Any, done: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Delete ``done`` in batches of ten, in the background; returns the empty list."""
        for start in range(0, len(done), RECEIVE_MAX):
            self._deletes.submit(self._delete, sqs, done[start : start + RECEIVE_MAX])
        return []

    def _delete(self, sqs: Any, chunk: list[dict[str, Any]]) -> None:
        try:
            resp = sqs.delete_message_batch(
                QueueUrl=self.source.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
        except Exception:  # as a failed delete in Lambda: the messages come back after their timeout
            log.exception("event source mapping delete")
            return
        with self._lock:
            self.stats.deleted += len(resp.get("Successful", []))

    def _record(self, m: dict[str, Any]) -> dict[str, Any]:
        """An SQS message as Lambda hands it to the function."""
        return sqs_record(m, self.source.queue_arn)


def sqs_record(message: Mapping[str, Any], queue_arn: str) -> dict[str, Any]:
    """An SQS message (ReceiveMessage's shape: ``MessageId``, ``ReceiptHandle``, ``Body``,
    optional ``Attributes`` and ``MessageAttributes``) as Lambda hands it to the function.
    The poller, the benchmark and tests that invoke a handler directly all build records here."""
    attrs = message.get("Attributes", {})
    body = message["Body"]
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": attrs.get("ApproximateReceiveCount", "1"),
            "SentTimestamp": attrs.get("SentTimestamp", ""),
            "SenderId": attrs.get("SenderId", ""),
            "ApproximateFirstReceiveTimestamp": attrs.get("ApproximateFirstReceiveTimestamp", ""),
            # A fair queue's tenant, when the producer named one (llmbatch: the job id).
            **({"MessageGroupId": attrs["MessageGroupId"]} if "MessageGroupId" in attrs else {}),
        },
        "messageAttributes": {
            name: {
                "stringValue": v.get("StringValue"),
                "binaryValue": v.get("BinaryValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": v.get("DataType", "String"),
            }
            for name, v in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(body.encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }
