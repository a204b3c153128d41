"""A job's figures (latency mean/p50/p99, error rate, requests/s) on the local stack: read from
its counters, as `status` prints them, and true to the simulator's known latency."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from llmbatch.cli.main import main
from llmbatch.client.client import LlmbatchClient
from llmbatch.local.runner import LocalStack
from llmbatch.stats import percentile
from shared.jobs import JobStatus
from shared.latency import RESOLUTION
from shared.results import RequestResult, RequestStatus
from tests.functional.conftest import chat_line, sim_reset, wait_finished, write_jobfile

#: 200 ms ± 20 ms per call, and enough slots that no call waits for one.
SIM_LATENCY_MS = 200
SIM_JITTER_MS = 20
FAILING = {3, 8, 13}


@pytest.fixture
def state(stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStack:
    sim_reset(
        stack, slots=64, base_latency_s=SIM_LATENCY_MS / 1000, jitter_s=SIM_JITTER_MS / 1000, per_output_token_s=0.0
    )
    path = tmp_path / "local.json"
    path.write_text(stack.resources.to_json())
    monkeypatch.setenv("LLMBATCH_STATE", str(path))
    return stack


async def finished_job(stack: LocalStack, job_id: str) -> tuple[JobStatus, list[RequestResult]]:
    async with LlmbatchClient(stack.resources) as client:
        job = await wait_finished(client, job_id, timeout_s=60)
        return job, await client.results(job_id)


def test_status_shows_latency_error_rate_and_throughput_from_the_counters(
    state: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN 16 requests (one invocation's calls at once), 3 of which the endpoint refuses
    lines = [chat_line(f"r{i}", "[[sim:422]]" if i in FAILING else f"question {i}") for i in range(16)]
    job_file = write_jobfile(tmp_path / "job.jsonl", lines)

    # WHEN the job runs and `status` is asked, as text and as JSON
    assert main(["submit", str(job_file)]) == 0
    job_id = capsys.readouterr().out.strip()
    job, results = asyncio.run(finished_job(state, job_id))
    assert main(["status", job_id, "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)["figures"]
    assert main(["status", job_id]) == 0
    text = capsys.readouterr().out

    # THEN p50 is the simulator's latency, and the exact median of the answers, within the
    # histogram's resolution; the mean is the answers' mean
    answered = [r.latency_ms for r in results if r.status is RequestStatus.SUCCEEDED]
    assert len(answered) == figures["answered"] == 13
    assert figures["latency_p50_ms"] == pytest.approx(percentile(answered, 50), rel=RESOLUTION)
    # The simulator takes 180..220 ms; the worker's measure adds the HTTP round trip, tens of
    # ms on two shared cores (more while the stack warms up): never less, never double.
    low, high = (SIM_LATENCY_MS - SIM_JITTER_MS) * (1 - RESOLUTION), 2 * SIM_LATENCY_MS
    assert low <= figures["latency_p50_ms"] <= high
    assert min(answered) >= SIM_LATENCY_MS - SIM_JITTER_MS
    assert figures["latency_p99_ms"] == pytest.approx(max(answered), rel=RESOLUTION)
    assert figures["latency_mean_ms"] == pytest.approx(sum(answered) / len(answered), abs=1)
    # the error rate is the injected failures' share
    assert figures["error_rate"] == round(3 / 16, 4)
    # requests/s is all 16 over the time from the first call's start to the last result
    assert job.timing.active_s is not None and job.timing.active_s > SIM_LATENCY_MS / 1000
    assert figures["requests_per_s"] == pytest.approx(16 / job.timing.active_s, rel=0.01)
    # and the text says the same
    assert "latency_ms" in text and f"p50 {figures['latency_p50_ms']:,.0f}" in text
    assert "error_rate         18.8% (3 of 16)" in text
    assert "requests_per_s" in text
