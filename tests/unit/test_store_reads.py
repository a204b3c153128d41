"""Reads stay O(1) and correct, and redrive never loses a request (shared/store/jobs_table.py,
shared/store/results_table.py, llmbatch/client/client.py), against moto's server over real HTTP
with the stack built from template.yaml (tables with the jobs index, the bucket, the queues)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from llmbatch.client.client import RESPONSE_EXPIRED, LlmbatchClient
from llmbatch.client.stack import StackResources
from llmbatch.local.moto_server import MotoServer
from llmbatch.local.provision import provision_stack
from shared.deadletter import DeadLetter, keep_dead_letters
from shared.errors import TransientError
from shared.jobs import JobMeta, JobState
from shared.results import RequestResult, RequestStatus, Usage, utc_now_iso
from shared.store.item_size import from_ddb, to_ddb
from shared.store.jobs_table import JOBS_INDEX
from shared.store.result_store import ResultStore

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def resources() -> Iterator[StackResources]:
    with MotoServer() as server:
        yield provision_stack(server.url).resources


@pytest.fixture
async def client(resources: StackResources) -> AsyncIterator[LlmbatchClient]:
    async with LlmbatchClient(resources) as c:
        yield c


def boto(resources: StackResources, service: str) -> Any:
    return boto3.client(service, **resources.client_kwargs())  # type: ignore[call-overload]


async def new_job(store: ResultStore, total: int, created_at: str | None = None) -> str:
    job_id = f"job-test-{uuid.uuid4().hex[:12]}"
    meta = JobMeta(job_id=job_id, total=total, sealed=True, enqueued=total)
    if created_at:
        meta = JobMeta(job_id=job_id, total=total, sealed=True, enqueued=total, created_at=created_at)
    await store.create_job(meta)
    return job_id


def failure(job_id: str, custom_id: str, message: str | None = None) -> RequestResult:
    return RequestResult(
        job_id=job_id,
        custom_id=custom_id,
        line=1,
        status=RequestStatus.FAILED,
        attempt=3,
        endpoint="default",
        error_code="http_422",
        error_message="refused",
        request_message=message if message is not None else request_message(job_id, custom_id),
    )


def request_message(job_id: str, custom_id: str, text: str = "hello") -> str:
    return json.dumps(
        {
            "v": 1,
            "job_id": job_id,
            "custom_id": custom_id,
            "line": 1,
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": text}]},
        }
    )


def queued_bodies(resources: StackResources, job_id: str) -> list[str]:
    """The request queue's messages of ``job_id`` (others are left alone, for other tests)."""
    sqs = boto(resources, "sqs")
    bodies: list[str] = []
    while True:
        resp = sqs.receive_message(
            QueueUrl=resources.request_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=60
        )
        messages = resp.get("Messages", [])
        if not messages:
            return bodies
        bodies += [m["Body"] for m in messages if job_id in m["Body"]]


class Calls:
    """The real client, recording each call's arguments, and raising the errors queued in
    ``faults[op]`` (one per call) before passing calls through."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.faults: dict[str, list[ClientError]] = {}

    def __getattr__(self, op: str) -> Any:
        target = getattr(self._real, op)
        if not callable(target):
            return target

        async def call(**kwargs: Any) -> Any:
            self.seen.append((op, kwargs))
            queued = self.faults.get(op)
            if queued:
                raise queued.pop(0)
            return await target(**kwargs)

        return call


def conflict() -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
            "CancellationReasons": [
                {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"},
                {"Code": "None"},
            ],
        },
        "TransactWriteItems",
    )


def with_calls(client: LlmbatchClient) -> Calls:
    """Route the client's store through a recording wrapper."""
    calls = Calls(client.ddb)
    client.store = ResultStore(
        calls,
        jobs_table=client.resources.jobs_table,
        results_table=client.resources.results_table,
        payloads=client.payloads,
    )
    return calls


# --------------------------------------------------------------------------------------------
# get_job, list_jobs, known_jobs, stored_results
# --------------------------------------------------------------------------------------------


async def test_a_job_with_megabytes_of_dead_letters_still_reads_and_cancels(client: LlmbatchClient) -> None:
    # GIVEN a job with 2 results and 40 dead letters of 350 KB each (14 MB: many 1 MB pages,
    # all sorting between the job's counters and its meta item)
    store = client.store
    job_id = await new_job(store, 50)
    ok = RequestResult(job_id, "r-1", 1, RequestStatus.SUCCEEDED, 1, "default", usage=Usage(2, 3))
    await store.write_terminal(job_id, [ok, failure(job_id, "r-2")])
    body = "x" * 350_000
    await keep_dead_letters(store, [DeadLetter(job_id, f"d-{i:02}", body, "r", utc_now_iso()) for i in range(40)])

    # WHEN its status is read, and it is cancelled
    before = await client.status(job_id)
    after = await client.cancel(job_id)

    # THEN the job and its counts read right, and the cancel took
    assert (before.total, before.counts.succeeded, before.counts.failed) == (50, 1, 1)
    assert before.counts.prompt_tokens == 2
    assert before.state is JobState.IN_PROGRESS
    assert after.meta.cancel_requested and after.state is JobState.CANCELLING


async def test_get_job_reads_the_meta_by_key_and_counters_by_prefix_consistently(client: LlmbatchClient) -> None:
    # GIVEN a job, read through a recording client
    job_id = await new_job(client.store, 1)
    calls = with_calls(client)

    # WHEN it is read
    await client.status(job_id)

    # THEN one consistent GetItem of the meta, and a consistent begins_with(count#) query
    ops = {op: kw for op, kw in calls.seen}
    assert set(ops) == {"get_item", "query"}
    assert ops["get_item"]["ConsistentRead"] is True
    assert ops["query"]["ConsistentRead"] is True
    assert "begins_with" in ops["query"]["KeyConditionExpression"]
    assert from_ddb(ops["query"]["ExpressionAttributeValues"])[":p"] == "count#"


async def test_list_jobs_reads_the_newest_jobs_from_the_index_without_a_scan(client: LlmbatchClient) -> None:
    # GIVEN three jobs created one after another (in the future: newer than any other test's),
    # one with many dead letters and retry notes
    store = client.store
    a = await new_job(store, 1, created_at="2999-01-01T00:00:01+00:00")
    b = await new_job(store, 1, created_at="2999-01-01T00:00:02+00:00")
    c = await new_job(store, 1, created_at="2999-01-01T00:00:03+00:00")
    await keep_dead_letters(store, [DeadLetter(b, f"d-{i}", "{}", "r", utc_now_iso()) for i in range(30)])
    await store.note_retries([{"job_id": b, "custom_id": f"r-{i}", "attempt": 1} for i in range(30)])
    calls = with_calls(client)

    # WHEN the two newest are listed
    jobs = await client.list_jobs(limit=2)

    # THEN they come newest first, from one query of the index, no scan
    assert [j.job_id for j in jobs] == [c, b]
    assert a not in {j.job_id for j in jobs}
    index_queries = [kw for op, kw in calls.seen if op == "query" and kw.get("IndexName") == JOBS_INDEX]
    assert len(index_queries) == 1 and index_queries[0]["Limit"] == 2
    assert not [op for op, _ in calls.seen if op == "scan"]


async def test_list_jobs_falls_back_to_a_scan_on_a_table_made_before_the_index(resources: StackResources) -> None:
    # GIVEN a jobs table like an older stack's: the same keys, no index
    table = f"old-jobs-{uuid.uuid4().hex[:8]}"
    boto(resources, "dynamodb").create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}, {"AttributeName": "item", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "job_id", "AttributeType": "S"},
            {"AttributeName": "item", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    async with LlmbatchClient(resources) as client:
        store = ResultStore(client.ddb, jobs_table=table, results_table=resources.results_table)
        old = await new_job(store, 1, created_at="2026-01-01T00:00:00+00:00")
        new = await new_job(store, 1, created_at="2026-01-02T00:00:00+00:00")

        # WHEN its jobs are listed
        jobs = await store.list_jobs()

    # THEN they are found by scanning, newest first
    assert [j.job_id for j in jobs] == [new, old]
    assert store.calls["scan"] == 1


async def test_known_jobs_and_stored_results_read_consistently(client: LlmbatchClient) -> None:
    # GIVEN a job with a result, read through a recording client
    job_id = await new_job(client.store, 2)
    await client.store.write_terminal(job_id, [failure(job_id, "r-1")])
    calls = with_calls(client)

    # WHEN the job and its results are looked up
    known = await client.store.known_jobs([job_id])
    found = await client.store.stored_results([(job_id, "r-1"), (job_id, "r-2")])

    # THEN both answers are right, and both BatchGetItem calls asked for consistent reads
    assert set(known) == {job_id} and found == {(job_id, "r-1")}
    gets = [kw["RequestItems"] for op, kw in calls.seen if op == "batch_get_item"]
    assert len(gets) == 2
    assert all(request["ConsistentRead"] is True for items in gets for request in items.values())


# --------------------------------------------------------------------------------------------
# reopen and redrive
# --------------------------------------------------------------------------------------------


async def test_a_conflict_on_reopen_is_retried_not_taken_for_nothing_to_reopen(client: LlmbatchClient) -> None:
    # GIVEN a failed request, and a table whose next transaction conflicts
    job_id = await new_job(client.store, 1)
    await client.store.write_terminal(job_id, [failure(job_id, "r-1")])
    calls = with_calls(client)
    calls.faults["transact_write_items"] = [conflict()]

    # WHEN the failure is reopened
    reopened = await client.store.reopen(job_id, "r-1")

    # THEN it was, on the second try: the result is gone and the failure uncounted once
    assert reopened is True
    assert client.store.calls["transact_write_items"] == 2
    assert await client.store.stored_results([(job_id, "r-1")]) == set()
    assert (await client.status(job_id)).counts.failed == 0


async def test_reopen_is_false_only_when_there_is_no_failure(client: LlmbatchClient) -> None:
    # GIVEN a request that succeeded and one with no result
    job_id = await new_job(client.store, 2)
    ok = RequestResult(job_id, "ok", 1, RequestStatus.SUCCEEDED, 1, "default")
    await client.store.write_terminal(job_id, [ok])

    # WHEN / THEN neither is reopened, and the success stays
    assert await client.store.reopen(job_id, "ok") is False
    assert await client.store.reopen(job_id, "none") is False
    assert (await client.status(job_id)).counts.succeeded == 1


async def test_redrive_through_a_conflict_reopens_and_resends_the_request(
    client: LlmbatchClient, resources: StackResources
) -> None:
    # GIVEN a failed request kept as a dead letter, and a conflict on the next transaction
    job_id = await new_job(client.store, 1)
    await client.store.write_terminal(job_id, [failure(job_id, "r-1")])
    message = request_message(job_id, "r-1")
    await keep_dead_letters(client.store, [DeadLetter(job_id, "r-1", message, "retries exhausted", utc_now_iso())])
    calls = with_calls(client)
    calls.faults["transact_write_items"] = [conflict()]

    # WHEN the job is redriven
    moved = await client.redrive(job_id)

    # THEN the request was reopened and sent again, and the dead letter is gone
    assert moved == 1
    assert queued_bodies(resources, job_id) == [message]
    assert await client.store.stored_results([(job_id, "r-1")]) == set()
    assert await client.dead_letters(job_id) == []


async def test_redrive_keeps_the_dead_letter_when_reopen_cannot_tell(
    client: LlmbatchClient, resources: StackResources
) -> None:
    # GIVEN a failed request kept as a dead letter, and a table that keeps conflicting
    job_id = await new_job(client.store, 1)
    await client.store.write_terminal(job_id, [failure(job_id, "r-1")])
    await keep_dead_letters(
        client.store, [DeadLetter(job_id, "r-1", request_message(job_id, "r-1"), "r", utc_now_iso())]
    )
    calls = with_calls(client)
    calls.faults["transact_write_items"] = [conflict() for _ in range(20)]

    # WHEN the job is redriven, it fails as transient
    with pytest.raises(TransientError):
        await client.redrive(job_id)

    # THEN nothing was sent, the failure stands, and the dead letter is still there to redrive
    assert queued_bodies(resources, job_id) == []
    assert await client.store.stored_results([(job_id, "r-1")]) == {(job_id, "r-1")}
    assert [d.key for d in await client.dead_letters(job_id)] == ["r-1"]


async def test_retry_resends_a_big_failed_request_from_the_payload_bucket(
    client: LlmbatchClient, resources: StackResources
) -> None:
    # GIVEN a failed request whose 300 KB message was kept in the payload bucket
    job_id = await new_job(client.store, 1)
    message = request_message(job_id, "big", "数" * 100_000)
    await client.store.write_terminal(job_id, [failure(job_id, "big", message)])
    assert (await client.results(job_id))[0].request_ref

    # WHEN the job's failures are retried
    sent = await client.retry_failed(job_id)

    # THEN the whole message went back to the queue, and the failure was taken back
    assert sent == 1
    assert queued_bodies(resources, job_id) == [message]
    assert await client.results(job_id) == []
    assert await client.dead_letters(job_id) == []


# --------------------------------------------------------------------------------------------
# Offloaded answers whose object is gone
# --------------------------------------------------------------------------------------------


async def test_an_answer_whose_object_is_gone_is_reported_on_its_line_as_response_expired(
    client: LlmbatchClient, resources: StackResources, tmp_path: Path
) -> None:
    # GIVEN a job with a small answer and one offloaded to the bucket, whose object is then deleted
    job_id = await new_job(client.store, 2)
    small = RequestResult(job_id, "small", 1, RequestStatus.SUCCEEDED, 1, "d", status_code=200, response_body={"a": 1})
    big = RequestResult(
        job_id, "big", 2, RequestStatus.SUCCEEDED, 1, "d", status_code=200, response_body={"t": "y" * 450_000}
    )
    await client.store.write_terminal(job_id, [small, big])
    boto(resources, "s3").delete_object(Bucket=resources.payload_bucket, Key=f"results/{job_id}/big.json")

    # WHEN the results are read and exported
    results = {r.custom_id: r for r in await client.results(job_id)}
    out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    summary = await client.export_results(job_id, out, errors)

    # THEN the lost answer's line says so with response_expired, and the rest is intact
    assert results["big"].error_code == RESPONSE_EXPIRED and results["big"].response_body is None
    assert results["small"].response_body == {"a": 1}
    (err_line,) = [json.loads(line) for line in errors.read_text().splitlines()]
    assert err_line["custom_id"] == "big" and err_line["error"]["code"] == RESPONSE_EXPIRED
    assert err_line["response"]["status_code"] == 200
    assert [json.loads(line)["custom_id"] for line in out.read_text().splitlines()] == ["small"]
    assert (summary.written, summary.errors, summary.missing) == (1, 1, 0)


def test_the_jobs_index_is_sparse_meta_items_only(resources: StackResources) -> None:
    # GIVEN the provisioned jobs table and a job with counters and a dead letter
    ddb = boto(resources, "dynamodb")
    job_id = f"job-test-{uuid.uuid4().hex[:12]}"
    ddb.put_item(
        TableName=resources.jobs_table,
        Item=to_ddb({"job_id": job_id, "item": "meta", "kind": "job", "created_at": "2999-12-31", "total": 1}),
    )
    ddb.put_item(TableName=resources.jobs_table, Item=to_ddb({"job_id": job_id, "item": "dead#x", "body": "{}"}))

    # WHEN the index is read for that day
    resp = ddb.query(
        TableName=resources.jobs_table,
        IndexName=JOBS_INDEX,
        KeyConditionExpression="#k = :k AND created_at = :c",
        ExpressionAttributeNames={"#k": "kind"},
        ExpressionAttributeValues=to_ddb({":k": "job", ":c": "2999-12-31"}),
    )

    # THEN only the meta item is in it
    assert [(i["job_id"], i["item"]) for i in map(from_ddb, resp["Items"])] == [(job_id, "meta")]


async def test_clients_few_commands_use_are_made_once_on_first_use(client: LlmbatchClient) -> None:
    # GIVEN a client just opened (as every CLI command opens one): no CloudWatch or EventBridge client yet
    assert client._occasional == {}
    assert client._client_args is not None
    session, _ = client._client_args
    made: list[str] = []
    original = session.create_client

    def counting(service: str, **kw: Any) -> Any:
        made.append(service)
        return original(service, **kw)

    session.create_client = counting
    # WHEN three reads of the queues' oldest-message metric run at once
    await asyncio.gather(*(client._oldest_age_s(f"q{i}") for i in range(3)))
    # THEN one CloudWatch client served them, and is kept for the next call
    (cloudwatch,) = client._occasional.values()
    assert await client._client_made_once("cloudwatch") is cloudwatch
    # AND the finisher (EventBridge) is made once too, when the stack has a bus
    assert client.resources.event_bus
    finisher = await client.finisher()
    assert finisher is not None and await client.finisher() is finisher
    assert made == ["cloudwatch", "events"]
