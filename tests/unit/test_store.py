"""Functional tests of ``ResultStore`` (shared/store/result_store.py) against moto's server over real HTTP,
with the tables built from template.yaml by the local stack's provisioner."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiobotocore.session import get_session

from llmbatch.local.moto_server import MotoServer
from llmbatch.local.provision import REGION, provision_stack
from shared.errors import JobNotFoundError, TransientError
from shared.jobs import Counts, JobMeta
from shared.results import RequestResult, RequestStatus, Usage
from shared.store.dynamo import BATCH_GET_MAX_KEYS, BATCH_WRITE_MAX_ITEMS
from shared.store.item_size import from_ddb, to_ddb
from shared.store.result_store import ResultStore

pytestmark = pytest.mark.functional


@dataclass(frozen=True)
class Stack:
    url: str
    jobs_table: str
    results_table: str


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with MotoServer() as server:
        provisioned = provision_stack(server.url)
        yield Stack(server.url, provisioned.resources.jobs_table, provisioned.resources.results_table)


@pytest.fixture
async def ddb(stack: Stack) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "dynamodb",
        endpoint_url=stack.url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ) as client:
        yield client


def make_store(client: Any, stack: Stack, **kwargs: Any) -> ResultStore:
    return ResultStore(client, jobs_table=stack.jobs_table, results_table=stack.results_table, **kwargs)


@pytest.fixture
def store(ddb: Any, stack: Stack) -> ResultStore:
    return make_store(ddb, stack)


async def new_job(store: ResultStore, total: int) -> str:
    job_id = f"job-test-{uuid.uuid4().hex[:12]}"
    await store.create_job(JobMeta(job_id=job_id, total=total, name="t", sealed=True, enqueued=total))
    return job_id


def result(job_id: str, custom_id: str, status: RequestStatus = RequestStatus.SUCCEEDED, **kw: Any) -> RequestResult:
    kw.setdefault("usage", Usage(10, 5) if status is RequestStatus.SUCCEEDED else Usage())
    kw.setdefault("line", 1)
    return RequestResult(job_id=job_id, custom_id=custom_id, status=status, attempt=1, endpoint="default", **kw)


async def stored(store: ResultStore, job_id: str) -> dict[str, RequestResult]:
    return {r.custom_id: r async for r in store.iter_results(job_id)}


def ids(results: list[RequestResult]) -> list[str]:
    return sorted(r.custom_id for r in results)


# --------------------------------------------------------------------------------------------
# write_terminal: exactly once
# --------------------------------------------------------------------------------------------


async def test_terminal_results_are_stored_and_move_the_job_counters(store: ResultStore) -> None:
    # GIVEN a job of 5 requests
    job_id = await new_job(store, 5)
    batch = [
        result(job_id, "r-1", response_body={"answer": 0.5}),
        result(job_id, "r-2"),
        result(job_id, "r-3", RequestStatus.FAILED, status_code=400, error_code="bad", error_message="no"),
        result(job_id, "r-4", RequestStatus.CANCELLED, error_code="cancelled"),
    ]

    # WHEN four terminal results are written
    outcome = await store.write_terminal(job_id, batch)

    # THEN all four are written, stored as given, and counted by status and tokens
    assert ids(outcome.written) == ["r-1", "r-2", "r-3", "r-4"]
    assert outcome.duplicates == []
    assert await stored(store, job_id) == {r.custom_id: r for r in batch}
    job = await store.get_job(job_id)
    assert job.counts == Counts(succeeded=2, failed=1, cancelled=1, prompt_tokens=20, completion_tokens=10)
    assert job.pending == 1
    assert store.calls["transact_write_items"] == 1


async def test_writing_a_result_again_is_a_duplicate_that_neither_overwrites_nor_counts(store: ResultStore) -> None:
    # GIVEN a job whose request r-1 already succeeded
    job_id = await new_job(store, 2)
    first = result(job_id, "r-1", response_body={"v": 1})
    await store.write_terminal(job_id, [first])
    before = await store.get_job(job_id)

    # WHEN a redelivery of r-1 ends differently and is written
    again = result(job_id, "r-1", RequestStatus.FAILED, error_code="late", error_message="second try failed")
    outcome = await store.write_terminal(job_id, [again])

    # THEN it is reported as a duplicate, the first answer stays, and the counters do not move
    assert outcome.written == []
    assert outcome.duplicates == [again]
    assert (await stored(store, job_id))["r-1"] == first
    assert (await store.get_job(job_id)).counts == before.counts == Counts(1, 0, 0, 10, 5)


async def test_a_batch_mixing_new_and_duplicate_results_writes_only_the_new_ones(store: ResultStore) -> None:
    # GIVEN a job where r-1 and r-3 are already stored
    job_id = await new_job(store, 5)
    await store.write_terminal(job_id, [result(job_id, "r-1"), result(job_id, "r-3")])

    # WHEN a batch of r-1..r-5 is written
    batch = [result(job_id, f"r-{i}", RequestStatus.FAILED if i == 4 else RequestStatus.SUCCEEDED) for i in range(1, 6)]
    outcome = await store.write_terminal(job_id, batch)

    # THEN r-2, r-4, r-5 are written, r-1 and r-3 are duplicates, and each request is counted once
    assert ids(outcome.written) == ["r-2", "r-4", "r-5"]
    assert ids(outcome.duplicates) == ["r-1", "r-3"]
    assert set(await stored(store, job_id)) == {"r-1", "r-2", "r-3", "r-4", "r-5"}
    counts = (await store.get_job(job_id)).counts
    assert (counts.succeeded, counts.failed, counts.terminal) == (4, 1, 5)
    assert counts.prompt_tokens == 4 * 10


async def test_thirty_concurrent_writers_are_counted_exactly_across_counter_shards(
    store: ResultStore, ddb: Any, stack: Stack
) -> None:
    # GIVEN a job of 30 requests and 30 concurrent writers, one distinct request each
    total = 30
    job_id = await new_job(store, total)
    statuses = [RequestStatus.SUCCEEDED, RequestStatus.FAILED, RequestStatus.CANCELLED]
    batch = [result(job_id, f"r-{i}", statuses[i % 3], usage=Usage(i, 2 * i)) for i in range(total)]

    # WHEN they all write at once
    outcomes = await asyncio.gather(*(store.write_terminal(job_id, [r]) for r in batch))

    # THEN every write landed once, and the shard counters sum to the exact totals
    assert sum(len(o.written) for o in outcomes) == total
    assert all(o.duplicates == [] for o in outcomes)
    counts = (await store.get_job(job_id)).counts
    assert counts == Counts(
        succeeded=total // 3,
        failed=total // 3,
        cancelled=total // 3,
        prompt_tokens=sum(range(total)),
        completion_tokens=2 * sum(range(total)),
    )
    # and the counts really were spread over several shard items (so the sum was exercised)
    resp = await ddb.query(
        TableName=stack.jobs_table,
        KeyConditionExpression="job_id = :j AND begins_with(#i, :c)",
        ExpressionAttributeNames={"#i": "item"},
        ExpressionAttributeValues=to_ddb({":j": job_id, ":c": "count#"}),
    )
    assert len(resp["Items"]) > 1


async def test_more_than_99_results_in_one_write_are_refused(store: ResultStore) -> None:
    # GIVEN 100 results (one transaction holds 99 puts and the counter update)
    job_id = await new_job(store, 100)
    batch = [result(job_id, f"r-{i}") for i in range(100)]

    # WHEN / THEN writing them in one call is refused before any call is made
    with pytest.raises(ValueError):
        await store.write_terminal(job_id, batch)
    assert store.calls["transact_write_items"] == 0


async def test_the_same_request_twice_in_one_write_is_stored_once_and_reported_as_a_duplicate(
    store: ResultStore,
) -> None:
    # GIVEN a batch in which r-1 appears twice (SQS delivered it twice), plus an unrelated r-2
    job_id = await new_job(store, 2)
    first, twin, other = result(job_id, "r-1"), result(job_id, "r-1"), result(job_id, "r-2")

    # WHEN the batch is written
    outcome = await store.write_terminal(job_id, [first, twin, other])

    # THEN r-1 is stored once (the copy is a duplicate), r-2 is stored, each counted once
    assert ids(outcome.written) == ["r-1", "r-2"]
    assert outcome.duplicates == [twin]
    assert (await store.get_job(job_id)).counts.succeeded == 2


async def test_an_answer_too_big_for_one_item_does_not_sink_the_other_results(store: ResultStore) -> None:
    # GIVEN a normal answer and one whose body is over DynamoDB's 400 KB item limit
    job_id = await new_job(store, 2)
    small = result(job_id, "r-1", response_body={"text": "short"})
    big = result(job_id, "r-2", response_body={"text": "y" * 450_000})

    # WHEN both are written together
    await store.write_terminal(job_id, [small, big])

    # THEN both requests reach a terminal record (the big one cannot keep coming back)
    assert await store.stored_results([(job_id, "r-1"), (job_id, "r-2")]) == {(job_id, "r-1"), (job_id, "r-2")}
    assert (await store.get_job(job_id)).counts.terminal == 2


# --------------------------------------------------------------------------------------------
# batch_write: UnprocessedItems
# --------------------------------------------------------------------------------------------


class PartlyUnprocessed:
    """Stands for AWS behaviour moto lacks: BatchWriteItem leaving items unprocessed.

    The first ``flaky_calls`` calls write only half of what they are given (through the real
    client) and hand the other half back as UnprocessedItems; later calls go straight through.
    """

    def __init__(self, real: Any, flaky_calls: int) -> None:
        self._real = real
        self._flaky_left = flaky_calls
        self.batch_sizes: list[int] = []

    async def batch_write_item(self, *, RequestItems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        ((table, requests),) = RequestItems.items()
        self.batch_sizes.append(len(requests))
        if self._flaky_left <= 0:
            return dict(await self._real.batch_write_item(RequestItems=RequestItems))
        self._flaky_left -= 1
        done, back = requests[: len(requests) // 2], requests[len(requests) // 2 :]
        if done:
            await self._real.batch_write_item(RequestItems={table: done})
        return {"UnprocessedItems": {table: back}}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def retry_note_requests(job_id: str, n: int) -> list[dict[str, Any]]:
    return [
        {
            "PutRequest": {
                "Item": to_ddb({"job_id": job_id, "item": f"retry#r-{i}", "custom_id": f"r-{i}", "attempt": i})
            }
        }
        for i in range(n)
    ]


async def retry_notes(ddb: Any, stack: Stack, job_id: str) -> dict[str, int]:
    resp = await ddb.query(
        TableName=stack.jobs_table,
        KeyConditionExpression="job_id = :j AND begins_with(#i, :r)",
        ExpressionAttributeNames={"#i": "item"},
        ExpressionAttributeValues=to_ddb({":j": job_id, ":r": "retry#"}),
    )
    return {i["custom_id"]: int(i["attempt"]) for i in map(from_ddb, resp["Items"])}


async def test_batch_write_retries_unprocessed_items_until_every_item_is_stored(ddb: Any, stack: Stack) -> None:
    # GIVEN a client whose first two BatchWriteItem calls leave half their items unprocessed
    flaky = PartlyUnprocessed(ddb, flaky_calls=2)
    store = make_store(flaky, stack)
    job_id = f"job-test-{uuid.uuid4().hex[:12]}"
    total = BATCH_WRITE_MAX_ITEMS + 5

    # WHEN 30 items are written
    await store.batch_write(stack.jobs_table, retry_note_requests(job_id, total))

    # THEN every item is in the table, after a chunk of 25 and its two retries, then the chunk of 5
    assert await retry_notes(ddb, stack, job_id) == {f"r-{i}": i for i in range(total)}
    assert flaky.batch_sizes == [25, 13, 7, 5]
    assert store.calls["batch_write_item"] == 4


async def test_batch_write_gives_up_as_transient_when_items_stay_unprocessed(ddb: Any, stack: Stack) -> None:
    # GIVEN a client that never processes everything, and a store allowed 3 attempts
    flaky = PartlyUnprocessed(ddb, flaky_calls=1_000)
    store = make_store(flaky, stack, max_attempts=3)

    # WHEN items are written
    with pytest.raises(TransientError) as info:
        await store.batch_write(stack.jobs_table, retry_note_requests("job-never", 8))

    # THEN it stops after 3 calls with a transient error (the records go back to SQS)
    assert info.value.code == "unprocessed_items"
    assert store.calls["batch_write_item"] == 3


async def test_retry_notes_are_stored_beside_the_job_without_moving_its_counters(
    store: ResultStore, ddb: Any, stack: Stack
) -> None:
    # GIVEN a job
    job_id = await new_job(store, 3)

    # WHEN two requests going back to the queue leave a note
    await store.note_retries(
        [
            {"job_id": job_id, "custom_id": "r-1", "attempt": 2, "error_code": "http_503"},
            {"job_id": job_id, "custom_id": "r-2", "attempt": 1, "error_code": "timeout"},
        ]
    )

    # THEN the notes are there and the job still counts nothing as done
    assert await retry_notes(ddb, stack, job_id) == {"r-1": 2, "r-2": 1}
    job = await store.get_job(job_id)
    assert job.counts == Counts()
    assert job.total == 3


# --------------------------------------------------------------------------------------------
# Reads: stored_results, known_jobs, get_job
# --------------------------------------------------------------------------------------------


async def test_stored_results_returns_only_the_pairs_that_have_a_result(store: ResultStore) -> None:
    # GIVEN two jobs with some stored results
    job_a, job_b = await new_job(store, 3), await new_job(store, 3)
    await store.write_terminal(job_a, [result(job_a, "r-1"), result(job_a, "r-2")])
    await store.write_terminal(job_b, [result(job_b, "r-3")])

    # WHEN more keys than one BatchGetItem takes are asked for, most of them absent
    asked = [(job_a, f"r-{i}") for i in range(BATCH_GET_MAX_KEYS + 50)] + [(job_b, "r-1"), (job_b, "r-3")]
    found = await store.stored_results(asked)

    # THEN exactly the stored pairs come back, over two BatchGetItem calls
    assert found == {(job_a, "r-1"), (job_a, "r-2"), (job_b, "r-3")}
    assert store.calls["batch_get_item"] == 2


async def test_stored_results_of_nothing_is_empty_without_a_call(store: ResultStore) -> None:
    # GIVEN / WHEN no keys are asked for
    found = await store.stored_results([])

    # THEN the answer is empty and DynamoDB is not called
    assert found == set()
    assert store.calls["batch_get_item"] == 0


async def test_known_jobs_returns_the_meta_of_existing_jobs_only(store: ResultStore) -> None:
    # GIVEN two jobs
    meta_a = JobMeta(job_id=f"job-test-{uuid.uuid4().hex[:12]}", total=4, name="alpha", endpoint="vllm")
    meta_b = JobMeta(job_id=f"job-test-{uuid.uuid4().hex[:12]}", total=9, name="beta", sealed=True, enqueued=9)
    await store.create_job(meta_a)
    await store.create_job(meta_b)

    # WHEN they are looked up with an unknown id and a repeat
    known = await store.known_jobs([meta_a.job_id, "job-does-not-exist", meta_b.job_id, meta_a.job_id])

    # THEN both come back exactly as created, and the unknown one is absent
    assert known == {meta_a.job_id: meta_a, meta_b.job_id: meta_b}


async def test_an_unknown_job_is_not_found(store: ResultStore) -> None:
    # GIVEN / WHEN / THEN reading a job that was never created fails
    with pytest.raises(JobNotFoundError):
        await store.get_job("job-never-created")


async def test_a_job_cannot_be_created_twice(store: ResultStore) -> None:
    # GIVEN a job
    job_id = await new_job(store, 1)

    # WHEN / THEN creating it again is refused by DynamoDB's condition
    with pytest.raises(Exception, match="ConditionalCheckFailed"):
        await store.create_job(JobMeta(job_id=job_id, total=99))
    assert (await store.get_job(job_id)).total == 1
