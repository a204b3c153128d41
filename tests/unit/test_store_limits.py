"""Every stored answer survives its neighbours (shared/store/terminal_writes.py, shared/store/result_writer.py),
against moto's server over real HTTP with the tables and bucket built from template.yaml.

Where moto lacks AWS behaviour (the 4 MB transaction limit, a cancellation reason naming one
refused item, throttled transactions), a client wrapper stands for it, as AWS documents it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from llmbatch.local.moto_server import MotoServer
from llmbatch.local.provision import REGION, provision_stack
from shared.errors import TransientError
from shared.jobs import Counts, JobMeta
from shared.payloads import PayloadStore
from shared.results import RequestResult, RequestStatus, Usage
from shared.store.item_size import ITEM_MAX_BYTES, typed_item_bytes
from shared.store.result_fit import STORE_REFUSED, custom_id_digest
from shared.store.result_store import ResultStore
from shared.store.result_writer import ResultWriter
from shared.store.terminal_writes import RESULTS_MAX_BYTES_PER_WRITE, result_write_bytes

pytestmark = pytest.mark.functional

#: AWS's own aggregate limit for one TransactWriteItems (moto does not enforce it).
AWS_TRANSACTION_MAX_BYTES = 4 * 1024 * 1024
#: 120,000 CJK characters: 360,000 UTF-8 bytes, one item's worth; twelve are 4.3 MB.
CJK_TEXT = "数" * 120_000


@dataclass(frozen=True)
class Stack:
    url: str
    jobs_table: str
    results_table: str
    bucket: str


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with MotoServer() as server:
        r = provision_stack(server.url).resources
        yield Stack(server.url, r.jobs_table, r.results_table, r.payload_bucket)


def client(stack: Stack, service: str) -> Any:
    return get_session().create_client(
        service, endpoint_url=stack.url, region_name=REGION, aws_access_key_id="t", aws_secret_access_key="t"
    )


@pytest.fixture
async def ddb(stack: Stack) -> AsyncIterator[Any]:
    async with client(stack, "dynamodb") as c:
        yield c


@pytest.fixture
async def s3(stack: Stack) -> AsyncIterator[Any]:
    async with client(stack, "s3") as c:
        yield c


def make_store(ddb: Any, stack: Stack, **kw: Any) -> ResultStore:
    return ResultStore(ddb, jobs_table=stack.jobs_table, results_table=stack.results_table, **kw)


async def new_job(store: ResultStore, total: int) -> str:
    job_id = f"job-test-{uuid.uuid4().hex[:12]}"
    await store.create_job(JobMeta(job_id=job_id, total=total, sealed=True, enqueued=total))
    return job_id


def result(job_id: str, custom_id: str, status: RequestStatus = RequestStatus.SUCCEEDED, **kw: Any) -> RequestResult:
    kw.setdefault("usage", Usage(3, 4))
    return RequestResult(job_id=job_id, custom_id=custom_id, line=1, status=status, attempt=1, endpoint="e", **kw)


async def stored(store: ResultStore, job_id: str) -> dict[str, RequestResult]:
    return {r.custom_id: r async for r in store.iter_results(job_id)}


def cancelled(reasons: list[str], message: str = "") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
            "CancellationReasons": [{"Code": c} if c == "None" else {"Code": c, "Message": message} for c in reasons],
        },
        "TransactWriteItems",
    )


def validation(message: str) -> ClientError:
    return ClientError({"Error": {"Code": "ValidationException", "Message": message}}, "TransactWriteItems")


class Transactions:
    """The real client, with TransactWriteItems passed through ``fault`` first: ``fault``
    sees the actions and returns an error to raise instead of calling DynamoDB, or None."""

    def __init__(self, real: Any, fault: Callable[[list[dict[str, Any]]], ClientError | None]) -> None:
        self._real = real
        self._fault = fault
        self.calls = 0
        self.refused = 0

    async def transact_write_items(self, *, TransactItems: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls += 1
        error = self._fault(TransactItems)
        if error is not None:
            self.refused += 1
            raise error
        return dict(await self._real.transact_write_items(TransactItems=TransactItems))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def puts(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a["Put"]["Item"] for a in actions if "Put" in a]


def aws_4mb_limit(actions: list[dict[str, Any]]) -> ClientError | None:
    """As AWS: a transaction whose items total over 4 MB is refused whole."""
    if sum(typed_item_bytes(i) for i in puts(actions)) > AWS_TRANSACTION_MAX_BYTES:
        return validation("Transaction request exceeds the maximum allowed size of 4 MB")
    return None


# --------------------------------------------------------------------------------------------
# Sizes in UTF-8 bytes: the 4 MB transaction limit
# --------------------------------------------------------------------------------------------


async def test_cjk_results_over_4_mb_in_bytes_but_not_in_characters_are_split_into_transactions(
    ddb: Any, stack: Stack
) -> None:
    # GIVEN twelve failures each with 360 KB of CJK error text (1.4 M characters, 4.3 MB of
    # UTF-8), and DynamoDB's 4 MB limit per transaction
    faulty = Transactions(ddb, aws_4mb_limit)
    store = make_store(faulty, stack)
    job_id = await new_job(store, 12)
    batch = [result(job_id, f"r-{i}", RequestStatus.FAILED, error_code="x", error_message=CJK_TEXT) for i in range(12)]

    # WHEN they are written in one call
    outcome = await store.write_terminal(job_id, batch)

    # THEN no transaction went over the limit, and all twelve are stored and counted once
    assert faulty.refused == 0 and faulty.calls >= 2
    assert len(outcome.written) == 12 and outcome.refused == [] and outcome.unstorable == []
    assert {r.error_message for r in (await stored(store, job_id)).values()} == {CJK_TEXT}
    assert (await store.get_job(job_id)).counts.failed == 12


async def test_the_writer_packs_its_transactions_by_utf8_bytes(ddb: Any, stack: Stack) -> None:
    # GIVEN the same twelve CJK failures put through the result writer at once
    faulty = Transactions(ddb, aws_4mb_limit)
    store = make_store(faulty, stack)
    job_id = await new_job(store, 12)
    batch = [result(job_id, f"r-{i}", RequestStatus.FAILED, error_code="x", error_message=CJK_TEXT) for i in range(12)]
    sizes: list[int] = []
    write_terminal = store.write_terminal

    async def recording(job: str, results: Any, **kw: Any) -> Any:
        sizes.append(sum(result_write_bytes(r) for r in results))
        return await write_terminal(job, results, **kw)

    store.write_terminal = recording  # type: ignore[method-assign,assignment]
    writer = ResultWriter(store, max_wait_s=0.01)

    # WHEN each is put
    firsts = await asyncio.gather(*(writer.put(r) for r in batch))

    # THEN each is stored as a first result, through writes that each fit one transaction
    assert firsts == [True] * 12
    assert len(sizes) >= 2 and max(sizes) <= RESULTS_MAX_BYTES_PER_WRITE
    assert faulty.refused == 0
    assert (await store.get_job(job_id)).counts.failed == 12


# --------------------------------------------------------------------------------------------
# One refusal costs one result only
# --------------------------------------------------------------------------------------------

POISON = "refuse-me"


def refuse_poison_by_reason(actions: list[dict[str, Any]]) -> ClientError | None:
    """As AWS refuses an item in a transaction: cancelled, the reason at the item's index."""
    codes = ["ValidationError" if POISON in str(a.get("Put", {}).get("Item", {})) else "None" for a in actions]
    return cancelled(codes, "Item size has exceeded the maximum allowed size") if "ValidationError" in codes else None


def refuse_poison_whole(actions: list[dict[str, Any]]) -> ClientError | None:
    """As a refusal of the whole request (a ValidationException, no reasons): moto's way too."""
    return validation("One or more parameter values were invalid") if POISON in str(puts(actions)) else None


@pytest.mark.parametrize("fault", [refuse_poison_by_reason, refuse_poison_whole], ids=["by-reason", "whole"])
async def test_a_refused_result_is_recorded_as_store_refused_and_its_neighbours_are_all_stored(
    ddb: Any, stack: Stack, fault: Callable[[list[dict[str, Any]]], ClientError | None]
) -> None:
    # GIVEN a batch of 20 answers, one of which DynamoDB refuses
    faulty = Transactions(ddb, fault)
    store = make_store(faulty, stack)
    job_id = await new_job(store, 20)
    batch = [result(job_id, f"r-{i:02}", response_body={"text": f"answer {i}"}) for i in range(20)]
    batch[7] = result(job_id, "r-07", response_body={"text": POISON}, status_code=200)

    # WHEN the batch is written
    outcome = await store.write_terminal(job_id, batch)

    # THEN the 19 others are stored as given, the refused one as failed store_refused with the
    # reason and no body, and each is counted exactly once (tokens included)
    rows = await stored(store, job_id)
    assert len(outcome.written) == 20 and outcome.unstorable == []
    assert [r.custom_id for r in outcome.refused] == ["r-07"]
    assert all(rows[r.custom_id] == r for r in batch if r.custom_id != "r-07")
    refused = rows["r-07"]
    assert refused.status is RequestStatus.FAILED and refused.error_code == STORE_REFUSED
    assert refused.response_body is None and refused.status_code == 200
    assert "maximum allowed size" in (refused.error_message or "") or "invalid" in (refused.error_message or "")
    assert (await store.get_job(job_id)).counts == Counts(
        succeeded=19, failed=1, prompt_tokens=60, completion_tokens=80
    )


async def test_a_result_dynamodb_refuses_even_as_a_stand_in_is_reported_unstorable_without_sinking_the_others(
    store_on: Callable[..., ResultStore],
) -> None:
    # GIVEN a batch in which one result has an empty id, which DynamoDB (moto) refuses as a key
    store = store_on()
    job_id = await new_job(store, 3)
    good = [result(job_id, "r-1"), result(job_id, "r-2")]
    bad = result(job_id, "")

    # WHEN the batch is written
    outcome = await store.write_terminal(job_id, [good[0], bad, good[1]])

    # THEN the good ones are stored and counted, and the bad one is reported with the reason
    assert outcome.written == good
    assert [(r, reason.split(":")[0]) for r, reason in outcome.unstorable] == [(bad, "ValidationException")]
    assert set(await stored(store, job_id)) == {"r-1", "r-2"}
    assert (await store.get_job(job_id)).counts.succeeded == 2


async def test_the_writer_fails_only_the_unstorable_result(store_on: Callable[..., ResultStore]) -> None:
    # GIVEN the same batch put through the result writer
    store = store_on()
    job_id = await new_job(store, 3)
    writer = ResultWriter(store, max_wait_s=0.01)

    # WHEN each is put
    outcomes = await asyncio.gather(
        writer.put(result(job_id, "r-1")), writer.put(result(job_id, "")), return_exceptions=True
    )

    # THEN the good one is a first result; the other raises a transient error (its record
    # goes back to SQS and, in the end, to the DeadLetter function)
    assert outcomes[0] is True
    assert isinstance(outcomes[1], TransientError) and outcomes[1].code == STORE_REFUSED


@pytest.fixture
def store_on(ddb: Any, stack: Stack) -> Callable[..., ResultStore]:
    return lambda **kw: make_store(ddb, stack, **kw)


# --------------------------------------------------------------------------------------------
# Throttles: retried, within the caller's deadline
# --------------------------------------------------------------------------------------------


def throttled(times: int, reason: str) -> Callable[[list[dict[str, Any]]], ClientError | None]:
    left = [times]

    def fault(actions: list[dict[str, Any]]) -> ClientError | None:
        if left[0] <= 0:
            return None
        left[0] -= 1
        return cancelled([reason] * len(actions), "Throughput exceeds the current capacity")

    return fault


@pytest.mark.parametrize("reason", ["ThrottlingError", "ProvisionedThroughputExceeded"])
async def test_a_throttled_transaction_is_retried_until_it_is_written(ddb: Any, stack: Stack, reason: str) -> None:
    # GIVEN a table that throttles the first three transactions
    faulty = Transactions(ddb, throttled(3, reason))
    store = make_store(faulty, stack)
    job_id = await new_job(store, 2)

    # WHEN two results are written
    outcome = await store.write_terminal(job_id, [result(job_id, "r-1"), result(job_id, "r-2")])

    # THEN they are written on the fourth try, counted once
    assert len(outcome.written) == 2 and faulty.calls == 4
    assert (await store.get_job(job_id)).counts.succeeded == 2


async def test_retries_are_bounded_by_the_callers_deadline_not_by_a_count(ddb: Any, stack: Stack) -> None:
    # GIVEN a table that always throttles, a store allowed 2 attempts, and a deadline 1 s away
    faulty = Transactions(ddb, throttled(1_000, "ThrottlingError"))
    store = make_store(faulty, stack, max_attempts=2)
    job_id = await new_job(store, 1)

    # WHEN a result is written with that deadline
    with pytest.raises(TransientError) as info:
        await store.write_terminal(job_id, [result(job_id, "r-1")], give_up_at=time.monotonic() + 1.0)

    # THEN it kept trying past 2 attempts (the first three waits add up to 0.7 s at most),
    # then gave up as transient, nothing stored
    assert info.value.code == "store_write"
    assert faulty.calls >= 4
    assert await stored(store, job_id) == {}


async def test_without_a_deadline_retries_stop_at_max_attempts(ddb: Any, stack: Stack) -> None:
    # GIVEN a table that always throttles and a store allowed 3 attempts
    faulty = Transactions(ddb, throttled(1_000, "ProvisionedThroughputExceeded"))
    store = make_store(faulty, stack, max_attempts=3)
    job_id = await new_job(store, 1)

    # WHEN / THEN a write gives up after 3 calls
    with pytest.raises(TransientError):
        await store.write_terminal(job_id, [result(job_id, "r-1")])
    assert faulty.calls == 3


# --------------------------------------------------------------------------------------------
# Failed requests keep their message for retry, within the item limit
# --------------------------------------------------------------------------------------------


async def test_a_big_failed_request_keeps_its_message_in_the_bucket_and_its_item_a_reference(
    ddb: Any, s3: Any, stack: Stack
) -> None:
    # GIVEN a failed request whose message is 1 MB of CJK text (over the item limit by itself)
    store = make_store(ddb, stack, payloads=PayloadStore(s3, stack.bucket))
    job_id = await new_job(store, 1)
    message = '{"v": 1, "body": "' + "数" * 350_000 + '"}'
    failed = result(job_id, "big/one", RequestStatus.FAILED, error_code="bad_request", request_message=message)

    # WHEN it is written
    outcome = await store.write_terminal(job_id, [failed])

    # THEN the item refers to the message kept in the bucket under failed/, and fits
    row = (await stored(store, job_id))["big/one"]
    assert outcome.written == [failed]
    assert row.request_message is None
    assert row.request_ref == f"failed/{job_id}/{custom_id_digest('big/one')}.json"
    obj = await s3.get_object(Bucket=stack.bucket, Key=row.request_ref)
    async with obj["Body"] as body:
        assert (await body.read()).decode() == message
    assert row.error_code == "bad_request"


async def test_an_answer_that_with_its_inline_message_is_over_the_limit_moves_and_the_message_stays(
    ddb: Any, s3: Any, stack: Stack
) -> None:
    # GIVEN a failure carrying a 342 KB answer (a 400 with a long body; each "é" is 6 bytes of
    # JSON) and a 60 KB message: each fits alone, together they are over the item limit
    store = make_store(ddb, stack, payloads=PayloadStore(s3, stack.bucket))
    job_id = await new_job(store, 1)
    failed = result(
        job_id,
        "r-1",
        RequestStatus.FAILED,
        status_code=400,
        response_body={"error": "é" * 57_000},
        request_message="m" * 60_000,
        error_code="bad_request",
    )
    assert result_write_bytes(failed) >= ITEM_MAX_BYTES

    # WHEN it is written
    await store.write_terminal(job_id, [failed])

    # THEN the answer went to the bucket by reference, the message stayed for retry, and it fits
    row = (await stored(store, job_id))["r-1"]
    assert row.response_ref == f"results/{job_id}/r-1.json" and row.response_body is None
    assert row.request_message == failed.request_message and row.request_ref is None
    assert result_write_bytes(row) < ITEM_MAX_BYTES
