"""One shared deadline per invocation: a slow endpoint and a short function timeout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmbatch.client.client import LlmbatchClient
from llmbatch.local.runner import LocalStack
from tests.functional.conftest import FAST_RETRIES, chat_line, template_variant, wait_finished, write_jobfile

FUNCTION_TIMEOUT_S = 5


def short_timeout(template: dict[str, Any]) -> None:
    template["Globals"]["Function"]["Timeout"] = FUNCTION_TIMEOUT_S
    template["Resources"]["RequestQueue"]["Properties"]["VisibilityTimeout"] = 6 * FUNCTION_TIMEOUT_S
    env = template["Resources"]["Worker"]["Properties"]["Environment"]["Variables"]
    env.update({"WRITE_RESERVE_S": "1.5", "MIN_CALL_S": "0.5"})


async def test_the_handler_returns_before_its_deadline_and_unfinished_records_complete_later(tmp_path: Path) -> None:
    # GIVEN a worker with a 5 s timeout (1.5 s of it kept for writing), 2 calls at a time, and an
    # endpoint taking ~1.2 s a call: an invocation can call at most 6 of its records, and the 30
    # arrive in batches of 10 or more (the queue's receives split them between the two pollers
    # as they come, but a SendMessageBatch brings 10 at a time)
    template = template_variant(tmp_path, short_timeout)
    local = LocalStack(
        template_path=template,
        simulator_config={"slots": 16, "base_latency_s": 1.2, "jitter_s": 0.05, "per_output_token_s": 0.0},
        parameter_overrides={"ModelCallConcurrency": "2", "WorkerMaxConcurrency": "2"},
        container_env=FAST_RETRIES,
        write_state=False,
    )
    job_file = write_jobfile(tmp_path / "job.jsonl", [chat_line(f"r{i}", f"slow {i}") for i in range(30)])
    with local:
        async with LlmbatchClient(local.resources) as client:
            # WHEN the job runs
            job_id = await client.submit(job_file)
            final = await wait_finished(client, job_id, timeout_s=180)
            results = await client.results(job_id)
        poller = local.pollers[0].stats

    # THEN no invocation ran into its Lambda timeout, yet some records were left uncalled and
    # came back (as fresh copies: waiting for the deadline is not an attempt) ...
    assert poller.timeouts == 0 and poller.crashes == 0 and poller.handler_errors == 0
    assert poller.longest_invocation_s < FUNCTION_TIMEOUT_S
    assert poller.records > 30 and poller.failed_records == 0
    # ... to complete: every request answered exactly once, on its first attempt
    assert (final.counts.succeeded, final.counts.failed, final.pending) == (30, 0, 0)
    assert sorted(r.custom_id for r in results) == sorted(f"r{i}" for i in range(30))
    assert {r.attempt for r in results} == {1}
