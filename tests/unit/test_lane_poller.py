"""The lane poller's state machine against moto's DynamoDB and S3 (real HTTP) and an
in-memory native batch API (tests/unit/lane_fake.py): staging in parts, the quota on
running native jobs, progress, import in input order exactly once, the cursor across
runs, a whole-job failure, and cancel."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiobotocore.session import get_session

from llmbatch.local.moto_server import MotoServer
from llmbatch.local.provision import REGION, provision_stack
from shared.budget import Deadline
from shared.endpoints.specs import parse_spec
from shared.jobs import JobMeta, JobState
from shared.lanes.native import NativeLimits, NativeRecord, NativeState
from shared.lanes.parts import LaneTable, PartState, split_records, stage_parts
from shared.lanes.poller import LanePoller
from shared.messages import new_sign_key, signed_by
from shared.payloads import PayloadStore
from shared.results import RequestStatus
from shared.store.result_store import ResultStore
from tests.unit.lane_fake import FakeBatchApi

SPEC = parse_spec("batchy", {"kind": "openai", "url": "http://127.0.0.1:1/v1", "batch_api": True})


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[str, Any]]:
    with MotoServer() as server:
        yield server.url, provision_stack(server.url).resources


@pytest.fixture
async def env(stack: tuple[str, Any]) -> AsyncIterator[dict[str, Any]]:
    url, res = stack
    kw = {"endpoint_url": url, "region_name": REGION, "aws_access_key_id": "t", "aws_secret_access_key": "t"}
    async with get_session().create_client("dynamodb", **kw) as ddb, get_session().create_client("s3", **kw) as s3:
        payloads = PayloadStore(s3, res.payload_bucket)
        store = ResultStore(ddb, jobs_table=res.jobs_table, results_table=res.results_table, payloads=payloads)
        lanes = LaneTable(store.dynamo, res.jobs_table)
        for job_id in await lanes.active_jobs():  # each test follows its own jobs only
            await lanes.retire(job_id)
        yield {"store": store, "payloads": payloads, "lanes": lanes}


def records(n: int, url: str = "/v1/chat/completions") -> list[NativeRecord]:
    return [
        NativeRecord(i, f"r{i}", url, {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]})
        for i in range(1, n + 1)
    ]


async def new_job(env: dict[str, Any], n: int, max_records: int) -> str:
    job_id = f"job-lane-{id(env)}-{n}-{max_records}-{asyncio.get_running_loop().time()}"
    await env["store"].create_job(
        JobMeta(job_id, n, endpoint="batchy", sealed=True, enqueued=n, sign_key=new_sign_key(), lane="batch")
    )
    await stage_parts(
        env["payloads"], env["lanes"], job_id=job_id, endpoint="batchy", records=records(n), max_records=max_records
    )
    return job_id


def poller(env: dict[str, Any], api: FakeBatchApi, **kw: Any) -> LanePoller:
    async def api_for(name: str, spec: Any) -> FakeBatchApi:
        return api

    return LanePoller(env["store"], env["lanes"], env["payloads"], {"batchy": SPEC}, api_for, **kw)


def limits(max_records: int = 3, jobs: int | None = None, minimum: int = 1) -> NativeLimits:
    return NativeLimits(min_records=minimum, max_records=max_records, max_concurrent_jobs=jobs)


async def run(p: LanePoller, seconds: float = 30.0) -> Any:
    return await p.run(Deadline.after(seconds))


async def results(env: dict[str, Any], job_id: str) -> list[Any]:
    return sorted([r async for r in env["store"].iter_results(job_id)], key=lambda r: r.line)


# ---- staging --------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "sizes"), [(2, [2]), (3, [3]), (4, [2, 2]), (7, [3, 2, 2]), (9, [3, 3, 3])])
def test_records_split_in_even_parts_of_at_most_max_records(n: int, sizes: list[int]) -> None:
    parts = split_records(records(n), 3)
    assert [len(p) for p in parts] == sizes
    assert [r.line for p in parts for r in p] == list(range(1, n + 1))


def test_a_part_ends_where_the_route_changes() -> None:
    mixed = [*records(2), NativeRecord(3, "e", "/v1/embeddings", {"model": "m", "input": "x"})]
    assert [len(p) for p in split_records(mixed, 10)] == [2, 1]


async def test_staging_writes_each_part_to_the_bucket_and_the_jobs_table(env: dict[str, Any]) -> None:
    job_id = await new_job(env, 7, 3)
    parts = await env["lanes"].parts(job_id)
    assert [(p.part, p.records, p.first_line, p.state) for p in parts] == [
        (0, 3, 1, "staged"),
        (1, 2, 4, "staged"),
        (2, 2, 6, "staged"),
    ]
    assert parts[1].input_key == f"batch/{job_id}/part-00001.jsonl"
    lines = (await env["payloads"].get(parts[1].input_key)).decode().splitlines()
    assert [json.loads(x)["custom_id"] for x in lines] == ["r4", "r5"]
    assert job_id in await env["lanes"].active_jobs()


# ---- the state machine ----------------------------------------------------------------------


async def test_a_job_runs_through_its_parts_within_the_quota_and_imports_in_input_order(env: dict[str, Any]) -> None:
    api = FakeBatchApi(limits(3, jobs=2), fail={"r5": ("invalid_prompt", "the prompt was refused")})
    job_id = await new_job(env, 7, 3)
    p = poller(env, api)

    first = await run(p)
    assert first.started == 2  # the quota: two native jobs at once
    assert [s.state for s in await env["lanes"].parts(job_id)] == ["running", "running", "staged"]
    status = await env["store"].get_job(job_id)
    assert status.state is JobState.QUEUED and status.meta.native_parts_running == 2

    api.advance("fake-0")
    api.advance("fake-0", 2)  # 2 of part 0's 3 records done: progress, no results yet
    await run(p)
    status = await env["store"].get_job(job_id)
    assert (status.meta.native_completed, status.counts.terminal) == (2, 0)
    assert status.state is JobState.IN_PROGRESS

    api.advance_all()
    await run(p)  # parts 0 and 1 end and are imported; part 2 starts in the freed room
    assert [s.state for s in await env["lanes"].parts(job_id)] == ["done", "done", "running"]
    api.advance_all()
    report = await run(p)
    assert report.finished_jobs == [job_id]
    assert job_id not in await env["lanes"].active_jobs()

    status = await env["store"].get_job(job_id)
    assert status.state is JobState.COMPLETED
    assert (status.counts.succeeded, status.counts.failed) == (6, 1)
    got = await results(env, job_id)
    assert [r.custom_id for r in got] == [f"r{i}" for i in range(1, 8)]
    assert {r.endpoint for r in got} == {"batchy"}
    failed = got[4]
    assert (failed.status, failed.error_code, failed.error_message) == (
        RequestStatus.FAILED,
        "invalid_prompt",
        "the prompt was refused",
    )
    # kept for `retry`: the request as submit would have sent it online, signed with the job's key
    msg = json.loads(failed.request_message or "")
    assert (msg["custom_id"], msg["line"], msg["endpoint"]) == ("r5", 5, "batchy")
    assert signed_by(status.meta.sign_key, job_id, "r5", 5, msg["sig"])
    assert got[0].response_body["choices"][0]["message"]["content"] == "answer 1"
    assert got[0].to_output_line()["response"]["status_code"] == 200


async def test_a_quota_refusal_leaves_the_part_staged_for_a_later_run(env: dict[str, Any]) -> None:
    api = FakeBatchApi(limits(5), refuse_next=1)
    job_id = await new_job(env, 4, 5)
    report = await run(poller(env, api))
    assert report.started == 0
    assert [p.state for p in await env["lanes"].parts(job_id)] == ["staged"]
    assert (await run(poller(env, api))).started == 1


async def test_a_native_job_that_fails_fails_every_record_with_its_message(env: dict[str, Any]) -> None:
    api = FakeBatchApi(limits(5), job_failure="the input file was refused: bad model")
    job_id = await new_job(env, 4, 5)
    p = poller(env, api)
    await run(p)
    api.advance_all()
    await run(p)
    got = await results(env, job_id)
    assert [(r.status, r.error_code, r.error_message) for r in got] == [
        (RequestStatus.FAILED, "native_failed", "the input file was refused: bad model")
    ] * 4


async def test_overlapping_runs_import_each_result_once(env: dict[str, Any]) -> None:
    api = FakeBatchApi(limits(4))
    job_id = await new_job(env, 10, 4)
    p1, p2 = poller(env, api, chunk=2), poller(env, api, chunk=2)
    await run(p1)
    api.advance_all()
    await asyncio.gather(run(p1), run(p2), run(p1))
    await asyncio.gather(run(p2), run(p1))
    status = await env["store"].get_job(job_id)
    assert (status.counts.succeeded, status.counts.terminal) == (10, 10)
    assert len(api.jobs) == 3  # each part started once
    assert status.state is JobState.COMPLETED


async def test_a_part_too_big_for_one_run_continues_from_its_cursor(env: dict[str, Any]) -> None:
    api = FakeBatchApi(limits(7))
    job_id = await new_job(env, 7, 7)
    p = poller(env, api, chunk=2)
    await run(p)
    api.advance_all()
    now = [0.0]
    deadline = Deadline(100.0, clock=lambda: now[0])
    real_write = env["store"].write_terminal
    writes: list[int] = []

    async def write_then_run_out(job: str, results: Any, **kw: Any) -> Any:
        out = await real_write(job, results, **kw)
        writes.append(len(results))
        if len(writes) == 2:
            now[0] = 1000.0  # the run's time is up after its second chunk
        return out

    p.store.write_terminal = write_then_run_out  # type: ignore[method-assign]
    report = await p.run(deadline)
    assert report.out_of_time and writes == [2, 2]
    [part] = await env["lanes"].parts(job_id)
    assert (part.state, part.cursor) == ("importing", 4)
    assert (await env["store"].get_job(job_id)).counts.succeeded == 4

    await run(p)
    assert writes == [2, 2, 2, 1]  # from the cursor on: nothing written twice
    status = await env["store"].get_job(job_id)
    assert (status.counts.succeeded, status.state) == (7, JobState.COMPLETED)


async def test_cancel_stops_running_native_jobs_and_cancels_unstarted_parts(env: dict[str, Any]) -> None:
    api = FakeBatchApi(limits(3, jobs=1))
    job_id = await new_job(env, 7, 3)
    p = poller(env, api)
    await run(p)
    api.advance("fake-0")
    api.advance("fake-0", 1)  # one record of the running part finished before the cancel
    await env["store"].request_cancel(job_id)
    await run(p)
    assert api.cancels == ["fake-0"]
    await run(p)
    status = await env["store"].get_job(job_id)
    assert status.state is JobState.CANCELLED
    assert (status.counts.succeeded, status.counts.cancelled) == (1, 6)
    got = await results(env, job_id)
    assert got[0].status is RequestStatus.SUCCEEDED
    assert {(r.status, r.error_code) for r in got[1:]} == {(RequestStatus.CANCELLED, "cancelled")}
    assert len(api.jobs) == 1  # the cancelled job's other parts never started
    assert job_id not in await env["lanes"].active_jobs()


async def test_a_lapsed_start_lease_is_taken_back(env: dict[str, Any]) -> None:
    api = FakeBatchApi(limits(5))
    job_id = await new_job(env, 3, 5)
    [part] = await env["lanes"].parts(job_id)
    assert await env["lanes"].update(part, expect={"state": "staged"}, changes={"state": "starting", "claimed_at": 1.0})
    report = await run(poller(env, api, start_lease_s=60.0))
    assert report.started == 1 and api.jobs["fake-0"].state is NativeState.PENDING
    assert [p.state for p in await env["lanes"].parts(job_id)] == [PartState.RUNNING]
