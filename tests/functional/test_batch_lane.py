"""The batch lane end to end on the local stack: submit stages the job for the native
OpenAI Batch API (the endpoint simulator's), the LanePoller function, run on its schedule
as the template says, starts the batches, reports their progress and imports their
outcomes; results come back in input order, a per-record failure carries the native error
and `retry` sends it online. Also cancel of a running batch job, and auto's choice."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llmbatch.cli.main import main
from llmbatch.client.client import LlmbatchClient
from llmbatch.client.lanes import Lane, LaneRefusedError
from llmbatch.local.runner import LocalStack, SimulatorProcess
from shared.jobs import JobState, JobStatus
from shared.results import RequestStatus
from tests.functional.conftest import FAST_RETRIES, TEST_SIMULATOR, chat_line, sim_stats, wait_finished, write_jobfile

PART = 25
#: Slow enough that a batch is seen running (each part takes a few seconds), bounded.
SIMULATOR = {**TEST_SIMULATOR, "batch_step_s": 0.3, "batch_records_per_s": 5.0}


@pytest.fixture(scope="module")
def batch_stack() -> Iterator[LocalStack]:
    sim = SimulatorProcess(SIMULATOR)
    url = sim.start()
    endpoints = {
        "default": {"kind": "openai", "url": url, "batch_api": True, "batch_max_records": PART, "batch_max_jobs": 3},
        "plain": {"kind": "openai", "url": url},
    }
    try:
        with LocalStack(
            endpoint_url=url,
            parameter_overrides={"Endpoints": json.dumps(endpoints)},
            container_env=FAST_RETRIES,
            write_state=False,
            schedule_interval_s=0.5,
        ) as stack:
            yield stack
    finally:
        sim.stop()


async def watch(client: LlmbatchClient, job_id: str, timeout_s: float = 120.0) -> list[JobStatus]:
    """Every status read until the job finishes."""
    seen: list[JobStatus] = []
    deadline = time.monotonic() + timeout_s
    while not seen or not seen[-1].finished:
        if time.monotonic() > deadline:
            raise AssertionError(f"job not finished in {timeout_s}s: {seen[-1].to_dict()}")
        seen.append(await client.status(job_id))
        await asyncio.sleep(0.2)
    return seen


async def until(
    client: LlmbatchClient, job_id: str, condition: Callable[[JobStatus], bool], timeout_s: float = 60.0
) -> JobStatus:
    deadline = time.monotonic() + timeout_s
    while not condition(st := await client.status(job_id)):
        assert time.monotonic() < deadline, f"condition not met in {timeout_s}s: {st.to_dict()}"
        await asyncio.sleep(0.2)
    return st


async def test_a_batch_lane_job_runs_on_the_native_api_and_its_failures_retry_online(
    batch_stack: LocalStack, tmp_path: Path
) -> None:
    # GIVEN 60 requests, two of which the model fails once (a 500), on the batch lane
    failing = {"r-07", "r-41"}
    lines = [
        chat_line(f"r-{i:02d}", f"q{i} [[sim:fail-first-1:500]]" if f"r-{i:02d}" in failing else f"q{i}")
        for i in range(60)
    ]
    path = write_jobfile(tmp_path / "job.jsonl", lines)
    queue_before = sim_stats(batch_stack)["requests_by_route"].get("/v1/chat/completions", 0)
    async with LlmbatchClient(batch_stack.resources) as client:
        job_id, choice = await client.submit_on_lane(path, lane="batch")
        assert choice.lane is Lane.BATCH and "60 record(s) in 3 native job(s) of at most 25" in choice.reason
        first = await client.status(job_id)
        assert (first.meta.lane, first.meta.native_parts, first.state) == ("batch", 3, JobState.QUEUED)
        assert first.to_dict()["lane_reason"] == choice.reason

        # WHEN the scheduled poller runs it
        seen = await watch(client, job_id)

        # THEN status showed the native progress while it ran, and it completed
        final = seen[-1]
        assert any(0 < s.meta.native_completed < 58 and not s.finished for s in seen)
        assert final.state is JobState.COMPLETED
        assert (final.counts.succeeded, final.counts.failed) == (58, 2)
        # the run that imported the last outcomes notes the parts done right after
        noted = await until(client, job_id, lambda s: s.meta.native_parts_done == 3)
        assert (noted.meta.native_completed, noted.meta.native_failed, noted.meta.native_parts_running) == (58, 2, 0)
        # nothing went through the queue and the workers: no online chat calls
        assert sim_stats(batch_stack)["requests_by_route"].get("/v1/chat/completions", 0) == queue_before

        # results in input order, the failures with the native error
        out, errors = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
        summary = await client.export_results(job_id, out, errors)
        assert (summary.written, summary.errors, summary.missing) == (58, 2, 0)
        got = [json.loads(x) for x in out.read_text().splitlines()]
        assert [g["custom_id"] for g in got] == [f"r-{i:02d}" for i in range(60) if f"r-{i:02d}" not in failing]
        assert got[0]["response"]["status_code"] == 200 and got[0]["response"]["body"]["object"] == "chat.completion"
        bad = [json.loads(x) for x in errors.read_text().splitlines()]
        assert [b["custom_id"] for b in bad] == ["r-07", "r-41"]
        assert bad[0]["error"]["code"] == "http_500" and "fail-first-1:500" in bad[0]["error"]["message"]
        assert {r.endpoint for r in await client.results(job_id)} == {"default"}

        # WHEN its failures are retried: online, through the queue and the workers
        assert await client.retry_failed(job_id) == 2
        again = await wait_finished(client, job_id)
        results = {r.custom_id: r for r in await client.results(job_id)}

    assert again.state is JobState.COMPLETED and (again.counts.succeeded, again.counts.failed) == (60, 0)
    assert results["r-07"].status is RequestStatus.SUCCEEDED and results["r-07"].attempt == 1
    calls = sim_stats(batch_stack)["calls_by_custom_id"]
    assert calls["r-07"] == calls["r-41"] == 1  # one online call each; the others never went online
    assert "r-00" not in calls


async def test_cancelling_a_running_batch_job_stops_its_native_jobs(batch_stack: LocalStack, tmp_path: Path) -> None:
    path = write_jobfile(tmp_path / "job.jsonl", [chat_line(f"c-{i:03d}") for i in range(100)])
    async with LlmbatchClient(batch_stack.resources) as client:
        job_id, _ = await client.submit_on_lane(path, lane="batch")
        await until(client, job_id, lambda s: s.meta.native_parts_running > 0)
        await client.cancel(job_id)
        seen = await watch(client, job_id)
        results = await client.results(job_id)

    final = seen[-1]
    assert final.state is JobState.CANCELLED
    assert final.counts.cancelled > 0 and final.counts.succeeded + final.counts.cancelled == 100
    assert len(results) == 100 and [r.line for r in results] == list(range(1, 101))
    assert {r.error_code for r in results if r.status is RequestStatus.CANCELLED} == {"cancelled"}


async def test_auto_chooses_by_the_deadline_and_batch_is_refused_without_a_native_api(
    batch_stack: LocalStack, tmp_path: Path
) -> None:
    path = write_jobfile(tmp_path / "job.jsonl", [chat_line(f"a-{i}") for i in range(3)])
    async with LlmbatchClient(batch_stack.resources) as client:
        jobs_before = len(await client.list_jobs())
        with pytest.raises(LaneRefusedError, match="endpoint 'plain' has no native batch API"):
            await client.submit_on_lane(path, lane="batch", endpoint="plain")
        assert len(await client.list_jobs()) == jobs_before  # nothing created, nothing enqueued

        short, short_choice = await client.submit_on_lane(path, lane="auto", within_s=24 * 3600 - 1)
        long, long_choice = await client.submit_on_lane(path, lane="auto", within_s=24 * 3600)
        plain, plain_choice = await client.submit_on_lane(path, lane="auto", endpoint="plain")
        assert (short_choice.lane, long_choice.lane, plain_choice.lane) == (Lane.ONLINE, Lane.BATCH, Lane.ONLINE)
        assert "--within 86399s is shorter than the batch API's 1d completion window" in short_choice.reason
        for job_id in (short, long, plain):
            assert (await wait_finished(client, job_id)).counts.succeeded == 3
        assert (await client.status(short)).to_dict()["lane"] == "online"
        assert (await client.status(long)).meta.native_parts_done == 1


def test_the_command_line_prints_the_choice_refuses_in_one_line_and_status_shows_the_lane(
    batch_stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "local.json"
    state.write_text(batch_stack.resources.to_json())
    monkeypatch.setenv("LLMBATCH_STATE", str(state))
    path = write_jobfile(tmp_path / "job.jsonl", [chat_line(f"k-{i}") for i in range(4)])

    assert main(["submit", str(path), "--within", "1h"]) == 2  # --within is auto's
    assert "--within goes with --lane auto" in capsys.readouterr().err
    assert main(["submit", str(path), "--dry-run", "--lane", "auto", "--within", "1h"]) == 0
    dry = {line[:18].strip(): line[18:].strip() for line in capsys.readouterr().out.splitlines()}
    assert dry["lane"] == "online: auto: --within 1h is shorter than the batch API's 1d completion window"
    assert dry["model_by_lane"] == "~not priced"

    assert main(["submit", str(path), "--lane", "batch", "--endpoint", "plain"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--lane batch refused: endpoint 'plain' has no native batch API" in err[0]

    assert main(["submit", str(path), "--lane", "auto", "--within", "2d"]) == 0
    captured = capsys.readouterr()
    job_id = captured.out.strip()
    assert "lane batch: auto: --within 2d allows it; 4 record(s) in 1 native job(s)" in captured.err

    async def finished() -> None:
        async with LlmbatchClient(batch_stack.resources) as client:
            await until(client, job_id, lambda s: s.finished and s.meta.native_parts_done == 1)

    asyncio.run(finished())
    assert main(["status", job_id]) == 0
    lines = {line[:18].strip(): line[18:].strip() for line in capsys.readouterr().out.splitlines()}
    assert (lines["status"], lines["lane"]) == ("completed", "batch")
    assert lines["native"] == "4 completed, 0 failed; parts 1 of 1 done, 0 running"
