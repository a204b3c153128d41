"""Job priority on the local stack: three request queues, each with its own event source
mapping (template.yaml), and workers that serve a record only while no queue ahead of its own
has work. Counted, not timed: which results came before which."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from llmbatch.cli.main import main
from llmbatch.client.client import LlmbatchClient
from llmbatch.local.runner import LocalStack
from shared.priority import Priority
from tests.functional.conftest import (
    FAST_RETRIES,
    TEST_SIMULATOR,
    chat_line,
    sim_reset,
    sim_stats,
    wait_finished,
    write_jobfile,
)

NORMAL = 1000
HIGH = NORMAL // 2
LOW = 100
#: Fewer worker containers than the template's default: this machine runs them all.
PARAMETERS = {"WorkerMaxConcurrency": "4", "LowPriorityMaxConcurrency": "2"}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(
        simulator_config=TEST_SIMULATOR, container_env=FAST_RETRIES, parameter_overrides=PARAMETERS, write_state=False
    ) as s:
        yield s


def test_the_stack_maps_each_priority_queue_to_the_worker_with_its_own_concurrency(stack: LocalStack) -> None:
    # GIVEN / WHEN the local stack made from the template
    assert stack.provisioned is not None
    worker = stack.provisioned.functions["Worker"]
    by_queue = {p.source.queue_url: p.settings().max_concurrency for p in stack.pollers if p.function is worker}
    res = stack.resources

    # THEN a poller plays each of the worker's three mappings, each with its template share
    assert by_queue == {
        res.queue_url(Priority.HIGH): 4,
        res.queue_url(Priority.NORMAL): 4,
        res.queue_url(Priority.LOW): 2,
    }


async def test_high_goes_ahead_of_normal_and_low_runs_only_when_the_others_have_no_work(
    stack: LocalStack, tmp_path: Path
) -> None:
    # GIVEN an endpoint slower than the workers can feed (32 slots x 400 ms: 80 requests/s)
    sim_reset(stack, slots=32, base_latency_s=0.4, per_output_token_s=0.0, jitter_s=0.01)
    files = {
        p: write_jobfile(tmp_path / f"{p}.jsonl", [chat_line(f"{p}{i}") for i in range(n)])
        for p, n in ((Priority.NORMAL, NORMAL), (Priority.HIGH, HIGH), (Priority.LOW, LOW))
    }
    async with LlmbatchClient(stack.resources) as client:
        # WHEN a big normal job is enqueued whole, then a high job half its size, then a low one
        jobs = {p: await client.submit(files[p], name=p.value, priority=p) for p in files}
        done = {p: await wait_finished(client, job, timeout_s=400) for p, job in jobs.items()}
        results = {p: await client.results(job) for p, job in jobs.items()}

    # THEN every request of every job succeeded, once, and was called once
    for p, n in ((Priority.NORMAL, NORMAL), (Priority.HIGH, HIGH), (Priority.LOW, LOW)):
        assert done[p].counts.succeeded == n, p
        assert done[p].meta.priority == p.value
        assert sorted(r.custom_id for r in results[p]) == sorted(f"{p}{i}" for i in range(n))
    assert sim_stats(stack)["requests_total"] == NORMAL + HIGH + LOW

    # AND the high job was answered whole before the normal one was half done (shared
    # equally, as fairness alone would, the normal job would have had at least as many)
    high_last = max(r.finished_at for r in results[Priority.HIGH])
    normal_before = sum(1 for r in results[Priority.NORMAL] if r.finished_at <= high_last)
    assert normal_before < NORMAL // 2, f"{normal_before} of the normal job's {NORMAL} came before the high job's last"

    # AND no low request was answered before the others' last answers
    others_last = max(high_last, max(r.finished_at for r in results[Priority.NORMAL]))
    early = [r.custom_id for r in results[Priority.LOW] if r.finished_at <= others_last]
    assert early == [], f"{len(early)} low request(s) answered while the others had work"


def test_the_command_line_submits_at_a_priority_and_a_retry_keeps_it(
    stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # (Last in this module: it stops the low queue's poller.)
    state = tmp_path / "local.json"
    state.write_text(stack.resources.to_json())
    monkeypatch.setenv("LLMBATCH_STATE", str(state))
    sim_reset(stack)
    lines = [chat_line("refused-1", "[[sim:fail-first-1:422]] a"), chat_line("ok-1"), chat_line("ok-2")]
    job_file = write_jobfile(tmp_path / "job.jsonl", lines)

    # GIVEN a low-priority job submitted from the command line, finished with one failure
    assert main(["submit", str(job_file), "--priority", "low"]) == 0
    job_id = capsys.readouterr().out.strip().splitlines()[-1]
    asyncio.run(finish(stack, job_id))
    assert main(["status", job_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["priority"] == "low"

    # WHEN its failure is retried while nothing reads the low queue
    (low,) = [p for p in stack.pollers if p.source.queue_url == stack.resources.queue_url(Priority.LOW)]
    low.stop()
    assert main(["retry", job_id]) == 0

    # THEN the request went back to the low queue, not to the others
    assert {p: waiting(stack, p) for p in Priority} == {Priority.HIGH: 0, Priority.NORMAL: 0, Priority.LOW: 1}


async def finish(stack: LocalStack, job_id: str) -> None:
    async with LlmbatchClient(stack.resources) as client:
        await wait_finished(client, job_id, timeout_s=120)


def waiting(stack: LocalStack, priority: Priority) -> int:
    sqs = boto3.client("sqs", **stack.resources.client_kwargs())
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    attrs = sqs.get_queue_attributes(QueueUrl=stack.resources.queue_url(priority), AttributeNames=names)["Attributes"]
    return sum(int(attrs[n]) for n in names)
