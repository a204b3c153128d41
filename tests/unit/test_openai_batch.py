"""The OpenAI Batch API adapter (shared/lanes/openai_batch.py) against the endpoint
simulator's Batch API over HTTP on 127.0.0.1: upload, create, states advancing with time,
outcomes mapped back to records in input order, per-record failures from fault markers,
cancel, and OpenAI's limits refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from llmbatch.local.simulator import SimulatorConfig, start_simulator
from llmbatch.local.simulator.batch_api import BatchService, _File
from shared.endpoints.specs import parse_spec
from shared.errors import PermanentError
from shared.lanes.native import NativePart, NativeRecord, NativeState
from shared.lanes.openai_batch import OpenAIBatchApi

CHAT = "/v1/chat/completions"


@contextlib.asynccontextmanager
async def batch_api(**config: Any) -> AsyncIterator[tuple[OpenAIBatchApi, aiohttp.ClientSession, str]]:
    config = {"batch_step_s": 0.05, "batch_records_per_s": 1000.0, **config}
    running = await start_simulator(SimulatorConfig(**config))
    try:
        spec = parse_spec("sim", {"kind": "openai", "url": running.url, "batch_api": True})
        async with aiohttp.ClientSession() as session:
            yield OpenAIBatchApi("sim", spec, session=session, api_key=None, call_timeout_s=10), session, running.url
    finally:
        await running.close()


def records(n: int, marked: dict[int, str] | None = None, url: str = CHAT) -> list[NativeRecord]:
    marked = marked or {}
    return [
        NativeRecord(
            i,
            f"c{i}",
            url,
            {"model": "sim-model", "messages": [{"role": "user", "content": f"q{i} {marked.get(i, '')}"}]},
        )
        for i in range(1, n + 1)
    ]


PART = NativePart("job-x", "sim", 0, "batch/job-x/part-00000.jsonl", 0)


async def until(api: OpenAIBatchApi, native_id: str, states: set[NativeState], tries: int = 400) -> Any:
    for _ in range(tries):
        p = await api.progress(native_id)
        if p.state in states:
            return p
        await asyncio.sleep(0.02)
    raise AssertionError(f"batch {native_id} never reached {states}")


async def test_a_batch_runs_to_completion_and_its_outcomes_come_back_in_input_order() -> None:
    async with batch_api() as (api, session, url):
        recs = records(6, {4: "[[sim:500]]", 5: "[[sim:fail-first-1:429]]"})
        native_id = await api.start(PART, recs)
        first = await api.progress(native_id)
        assert first.state is NativeState.PENDING  # validating
        done = await until(api, native_id, {NativeState.ENDED})
        assert (done.total, done.completed, done.failed) == (6, 4, 2)
        out = [o async for o in api.outcomes(native_id, recs)]
        assert [o.custom_id for o in out] == [f"c{i}" for i in range(1, 7)]
        assert [o.succeeded for o in out] == [True, True, True, False, False, True]
        assert (out[3].status_code, out[3].error_code) == (500, "http_500")
        assert "[[sim:500]]" in (out[3].error_message or "")
        assert out[0].body is not None and out[0].body["object"] == "chat.completion"
        assert out[0].usage.prompt_tokens > 0
        async with session.get(f"{url}/batches?limit=5") as resp:
            listing = await resp.json()
        assert [b["id"] for b in listing["data"]] == [native_id]
        assert listing["data"][0]["status"] == "completed" and listing["data"][0]["output_file_id"]


async def test_cancel_keeps_the_outcomes_of_requests_done_before_it() -> None:
    async with batch_api(batch_records_per_s=20.0) as (api, _session, _url):
        recs = records(200)
        native_id = await api.start(PART, recs)
        running = await until(api, native_id, {NativeState.RUNNING})
        assert running.state is NativeState.RUNNING
        await api.cancel(native_id)
        stopped = await until(api, native_id, {NativeState.STOPPED})
        await api.cancel(native_id)  # cancelling an ended batch: nothing to stop, no error
        out = [o async for o in api.outcomes(native_id, recs)]
        answered = [o for o in out if o.succeeded]
        assert len(answered) == stopped.completed < 200
        assert {o.error_code for o in out if not o.succeeded} == {"native_missing"}
        assert [o.line for o in answered] == list(range(1, len(answered) + 1))


async def test_more_requests_than_a_batch_may_hold_fail_it_in_validation() -> None:
    async with batch_api(batch_max_requests=3) as (api, _session, _url):
        native_id = await api.start(PART, records(4))
        failed = await until(api, native_id, {NativeState.FAILED})
        assert failed.message.startswith("too_many_requests: The input file has 4 requests")


async def test_a_file_over_the_size_limit_is_refused_at_upload() -> None:
    async with batch_api(batch_max_file_bytes=200) as (api, _session, _url):
        with pytest.raises(PermanentError, match="File is too large") as e:
            await api.start(PART, records(5))
        assert e.value.status_code == 400


async def test_a_part_of_mixed_routes_is_refused_before_any_call() -> None:
    async with batch_api() as (api, _session, _url):
        mixed = records(1) + records(1, url="/v1/embeddings")
        with pytest.raises(PermanentError, match="one route"):
            await api.start(PART, mixed)


async def test_the_simulator_refuses_what_openai_refuses(tmp_path: Any) -> None:
    async with batch_api() as (_api, session, url):
        async with session.post(
            f"{url}/batches", json={"input_file_id": "file-nope", "endpoint": CHAT, "completion_window": "24h"}
        ) as r:
            assert r.status == 400 and (await r.json())["error"]["param"] == "input_file_id"
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", json.dumps({"custom_id": "a"}).encode(), filename="in.jsonl")
        async with session.post(f"{url}/files", data=form) as r:
            file_id = (await r.json())["id"]
        async with session.get(f"{url}/files/{file_id}") as r:
            assert (await r.json())["purpose"] == "batch"
        body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "1h"}
        async with session.post(f"{url}/batches", json=body) as r:
            assert r.status == 400 and (await r.json())["error"]["param"] == "completion_window"
        async with session.get(f"{url}/batches/batch_nope") as r:
            assert r.status == 404


async def test_a_batch_is_in_progress_until_its_requests_are_done_at_the_configured_speed() -> None:
    now = [0.0]
    service = BatchService(lambda: SimulatorConfig(batch_step_s=1.0, batch_records_per_s=10.0), clock=lambda: now[0])
    content = "".join(
        json.dumps(
            {
                "custom_id": f"c{i}",
                "method": "POST",
                "url": CHAT,
                "body": {"model": "m", "messages": [{"role": "user", "content": "x"}]},
            }
        )
        + "\n"
        for i in range(20)
    ).encode()
    service.files["file-1"] = _File("file-1", "in.jsonl", "batch", content)
    batch_id = service.create({"input_file_id": "file-1", "endpoint": CHAT, "completion_window": "24h"})["id"]
    seen = []
    for t in (0.5, 1.5, 2.5, 3.05, 3.5, 4.1):
        now[0] = t
        view = service.view(service.batch(batch_id))
        seen.append((view["status"], view["request_counts"]["completed"]))
    assert seen == [
        ("validating", 0),
        ("in_progress", 5),
        ("in_progress", 15),
        ("finalizing", 20),
        ("finalizing", 20),
        ("completed", 20),
    ]
