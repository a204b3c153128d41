"""Failover and routing by model through the local stack: two simulators as two named
endpoints (the ``Endpoints`` parameter), the real workers in their own containers, each with
its own circuit breakers (shared/endpoints/failover.py)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmbatch.client.client import LlmbatchClient
from llmbatch.local.runner import LocalStack, SimulatorProcess
from shared.results import RequestResult, RequestStatus
from tests.functional.conftest import FAST_RETRIES, TEST_SIMULATOR, chat_line, wait_finished, write_jobfile

#: How long the primary may take to be called again once it recovered: the circuit's
#: cool-down (doubled by each failed probe) in every worker container, and small jobs between.
RECOVERY_BOUND_S = 150.0


class Sims:
    def __init__(self) -> None:
        self.primary = SimulatorProcess(TEST_SIMULATOR)
        self.backup = SimulatorProcess(TEST_SIMULATOR)

    def start(self) -> None:
        self.primary.start()
        self.backup.start()

    def stop(self) -> None:
        self.primary.stop()
        self.backup.stop()


def control(sim: SimulatorProcess, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    root = sim.url.removesuffix("/v1")
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(root + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return dict(json.load(resp))


def reset(sim: SimulatorProcess, **config: Any) -> None:
    """Counts cleared; the test's settings, with no faults but those given (a config update
    keeps what it does not name)."""
    control(sim, "/_sim/reset", {})
    control(sim, "/_sim/config", {**TEST_SIMULATOR, "error_rate_5xx": 0.0, **config})


def calls(sim: SimulatorProcess) -> dict[str, int]:
    return dict(control(sim, "/_sim/stats")["calls_by_custom_id"])


@pytest.fixture(scope="module")
def sims() -> Iterator[Sims]:
    s = Sims()
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def stack(sims: Sims) -> Iterator[LocalStack]:
    endpoints = {
        "primary": {"kind": "openai", "url": sims.primary.url, "fallback": ["backup"]},
        "backup": {"kind": "openai", "url": sims.backup.url},
        "mixed": {"kind": "openai", "url": sims.primary.url, "models": {"other-model": "backup"}},
    }
    with LocalStack(
        endpoint_url=sims.primary.url,
        parameter_overrides={"Endpoints": json.dumps(endpoints)},
        container_env=FAST_RETRIES,
        write_state=False,
    ) as s:
        yield s


async def run_job(client: LlmbatchClient, path: Path, ids: list[str], endpoint: str) -> dict[str, RequestResult]:
    """Submit, wait, and check every request succeeded exactly once; the results by id."""
    write_jobfile(path, [chat_line(cid, f"question {cid}") for cid in ids])
    job_id = await client.submit(path, endpoint=endpoint)
    final = await wait_finished(client, job_id)
    assert (final.counts.succeeded, final.counts.failed, final.pending) == (len(ids), 0, 0)
    results = {r.custom_id: r for r in await client.results(job_id)}
    assert sorted(results) == sorted(ids)
    assert {r.status for r in results.values()} == {RequestStatus.SUCCEEDED}
    return results


async def test_a_job_on_a_failing_primary_completes_on_the_fallback_and_later_jobs_return(
    stack: LocalStack, sims: Sims, tmp_path: Path
) -> None:
    # GIVEN a primary that answers every call with a 5xx, and a healthy fallback
    reset(sims.primary, error_rate_5xx=1.0)
    reset(sims.backup)
    ids = [f"r{i}" for i in range(24)]

    async with LlmbatchClient(stack.resources) as client:
        # WHEN a job runs on the primary
        results = await run_job(client, tmp_path / "job.jsonl", ids, "primary")
        # THEN every request succeeded exactly once, answered by the fallback, called there once
        assert {r.endpoint for r in results.values()} == {"backup"}
        assert calls(sims.backup) == dict.fromkeys(ids, 1)
        # ... after at least one failed call on the primary each (what opened its circuit)
        failed_first = calls(sims.primary)
        assert failed_first and set(failed_first) <= set(ids)

        # WHEN the primary recovers, small jobs keep coming until one runs on it alone
        reset(sims.primary)
        reset(sims.backup)
        give_up_at = time.monotonic() + RECOVERY_BOUND_S
        rounds: list[set[str]] = []
        while not rounds or rounds[-1] != {"primary"}:
            assert time.monotonic() < give_up_at, f"the primary was not called back: {rounds}"
            round_ids = [f"k{len(rounds)}-{i}" for i in range(4)]
            done = await run_job(client, tmp_path / f"k{len(rounds)}.jsonl", round_ids, "primary")
            rounds.append({r.endpoint for r in done.values()})
        # THEN requests went back to it; no request was answered twice anywhere
        assert all(n == 1 for sim in (sims.primary, sims.backup) for n in calls(sim).values())
        assert set(calls(sims.primary)) >= {f"k{len(rounds) - 1}-{i}" for i in range(4)}


async def test_a_models_map_splits_a_mixed_job_across_two_endpoints(
    stack: LocalStack, sims: Sims, tmp_path: Path
) -> None:
    # GIVEN a job whose lines name two models, one of them mapped to the other endpoint
    reset(sims.primary)
    reset(sims.backup)
    lines = []
    for i in range(12):
        line = chat_line(f"m{i}", f"question {i}")
        line["body"]["model"] = "other-model" if i % 3 == 0 else "sim-model"
        lines.append(line)
    path = write_jobfile(tmp_path / "mixed.jsonl", lines)
    other = {line["custom_id"] for line in lines if line["body"]["model"] == "other-model"}

    async with LlmbatchClient(stack.resources) as client:
        # WHEN it runs
        job_id = await client.submit(path, endpoint="mixed")
        final = await wait_finished(client, job_id)
        results = await client.results(job_id)

    # THEN each line was answered once, by the endpoint its model maps to
    assert (final.counts.succeeded, final.counts.failed) == (12, 0)
    assert {r.custom_id: r.endpoint for r in results} == {
        line["custom_id"]: "backup" if line["custom_id"] in other else "mixed" for line in lines
    }
    assert calls(sims.backup) == dict.fromkeys(other, 1)
    assert calls(sims.primary) == {line["custom_id"]: 1 for line in lines if line["custom_id"] not in other}
