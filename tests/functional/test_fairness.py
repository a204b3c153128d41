"""Fairness between jobs on one request queue: the job id is each message's
``MessageGroupId``, and the queue serves a job with few messages in flight before a job with
a backlog (SQS fair queues; the local stack's queue does the same, llmbatch/local/moto_sqs.py).
Counted, not timed: how many of the big job's results come after the small job's last one."""

from __future__ import annotations

from pathlib import Path

from llmbatch.client.client import LlmbatchClient
from llmbatch.local.runner import LocalStack
from tests.functional.conftest import chat_line, sim_reset, wait_finished, write_jobfile

BIG = 1500
SMALL = 20


async def test_a_small_job_submitted_behind_a_big_one_finishes_long_before_it(
    stack: LocalStack, tmp_path: Path
) -> None:
    # GIVEN an endpoint slower than the workers can feed (32 slots x 400 ms: 80 requests/s)
    # and a 1,500-request job enqueued whole, more than the workers hold in flight at once
    sim_reset(stack, slots=32, base_latency_s=0.4, per_output_token_s=0.0, jitter_s=0.01)
    big_file = write_jobfile(tmp_path / "big.jsonl", [chat_line(f"b{i}") for i in range(BIG)])
    small_file = write_jobfile(tmp_path / "small.jsonl", [chat_line(f"s{i}") for i in range(SMALL)])
    async with LlmbatchClient(stack.resources) as client:
        big = await client.submit(big_file, name="big")
        # WHEN a 20-request job is submitted after it
        small = await client.submit(small_file, name="small")
        small_done = await wait_finished(client, small, timeout_s=180)
        big_done = await wait_finished(client, big, timeout_s=300)
        big_results = await client.results(big)
        small_results = await client.results(small)
    # THEN both complete, and the small job did not wait for the big one's backlog: a good
    # share of the big job was still to be answered when the small job's last answer came
    assert small_done.counts.succeeded == SMALL and big_done.counts.succeeded == BIG
    small_last = max(r.finished_at for r in small_results)
    after = sum(1 for r in big_results if r.finished_at > small_last)
    assert after >= BIG // 4, f"only {after} of the big job's {BIG} results came after the small job's last"
