"""``submit`` refuses what will surely fail, and ``submit --dry-run`` estimates a job before
it is sent, against the local stack (moto's server, the poller, the simulator)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest

from llmbatch.cli.main import main
from llmbatch.client.client import LlmbatchClient
from llmbatch.client.cost import PRICES_ENV, CostEstimate, Pricing, estimate_cost
from llmbatch.client.estimate import JobEstimate
from llmbatch.local.runner import LocalStack
from shared.jobs import JobStatus
from tests.functional.conftest import chat_line, sim_reset, wait_finished, write_jobfile
from tests.functional.test_cli import job_count, queue_depth

pytestmark = pytest.mark.functional

#: Named endpoints added to the worker's ENDPOINTS for these tests (none is ever called).
ENDPOINTS = {
    "claude": {"kind": "bedrock", "region": "us-east-1"},
    "titan": {"kind": "bedrock", "region": "us-east-1", "default_model": "amazon.titan-text-express-v1"},
    "llama": {"kind": "sagemaker", "endpoint_name": "llama-3-8b", "mapping": "tgi"},
}
PRICES = {"endpoints": {"default": {"input_per_million": 2.5, "output_per_million": 10.0}}}


@contextmanager
def worker_variables(stack: LocalStack, **changes: str) -> Iterator[None]:
    """What changing the stack's parameters does: the worker's environment, put back after."""
    lam = boto3.client("lambda", **stack.resources.client_kwargs())
    name = stack.resources.worker_function
    before = lam.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {**before, **changes}})
    try:
        yield
    finally:
        lam.update_function_configuration(FunctionName=name, Environment={"Variables": before})


@pytest.fixture(scope="module")
def configured(stack: LocalStack) -> Iterator[LocalStack]:
    """The module's endpoints and prices, set once (each change restarts the worker's containers)."""
    with worker_variables(stack, ENDPOINTS=json.dumps(ENDPOINTS), **{PRICES_ENV: json.dumps(PRICES)}):
        yield stack


@pytest.fixture
def state(configured: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStack:
    sim_reset(configured)
    path = tmp_path / "local.json"
    path.write_text(configured.resources.to_json())
    monkeypatch.setenv("LLMBATCH_STATE", str(path))
    return configured


def token_cap(stack: LocalStack) -> int:
    async def read() -> int:
        async with LlmbatchClient(stack.resources) as client:
            return (await client.get_limits()).max_tokens_per_request

    return asyncio.run(read())


def record_line(record_id: str, model_input: dict[str, Any]) -> dict[str, Any]:
    return {"recordId": record_id, "modelInput": model_input}


def with_body(line: dict[str, Any], **body: Any) -> dict[str, Any]:
    return {**line, "body": {**line["body"], **body}}


EMBEDDING = {**chat_line("e"), "url": "/v1/embeddings", "body": {"model": "sim-embed", "input": "hello"}}
COMPLETION = {**chat_line("c"), "url": "/v1/completions", "body": {"model": "sim-model", "prompt": "hello"}}
TITAN_OK = record_line("t1", {"inputText": "hello", "textGenerationConfig": {"maxTokenCount": 8}})

# (endpoint, the file's lines, the problem reported: {cap} is the live per-request cap)
REFUSALS = {
    "an endpoint the stack does not have": (
        "nosuch",
        [chat_line("a")],
        "1: endpoint 'nosuch' is not configured on this stack (its endpoints: claude, default, llama, titan)",
    ),
    "embeddings to a SageMaker TGI container": (
        "llama",
        [chat_line("a"), EMBEDDING],
        "2: endpoint 'llama' (sagemaker, mapping 'tgi') does not serve /v1/embeddings; "
        "it serves /v1/chat/completions, /v1/completions",
    ),
    "completions to Bedrock, which has no such API": (
        "claude",
        [chat_line("a"), COMPLETION],
        "2: endpoint 'claude' (bedrock) does not serve /v1/completions; "
        "it serves /v1/chat/completions, /v1/embeddings, bedrock:invoke-model",
    ),
    "a Bedrock record to an OpenAI server": (
        "default",
        [chat_line("a"), record_line("r", {"prompt": "hello"})],
        "2: endpoint 'default' (openai) does not serve bedrock:invoke-model; "
        "it serves /v1/chat/completions, /v1/completions, /v1/embeddings",
    ),
    "a Bedrock record to an endpoint without a default model": (
        "claude",
        [chat_line("a"), record_line("r", {"prompt": "hello"})],
        "2: endpoint 'claude' has no default_model: Bedrock records name no model, the endpoint must",
    ),
    "max_completion_tokens null beside a small max_tokens": (
        "default",
        [chat_line("a"), with_body(chat_line("b"), max_completion_tokens=None)],
        "2: max_completion_tokens is null, which asks for no limit; "
        "give a whole number up to the limit of {cap} per request",
    ),
    "max_tokens over the cap beside a small max_completion_tokens": (
        "default",
        [chat_line("a"), with_body(chat_line("b"), max_completion_tokens=8, max_tokens=10_000_000)],
        "2: max_tokens 10000000 is over the limit of {cap} per request",
    ),
    "a Titan record's maxTokenCount over the cap": (
        "titan",
        [TITAN_OK, record_line("t2", {"inputText": "hi", "textGenerationConfig": {"maxTokenCount": 10_000_000}})],
        "2: textGenerationConfig.maxTokenCount 10000000 is over the limit of {cap} per request",
    ),
    "a Llama record's max_gen_len null": (
        "titan",
        [TITAN_OK, record_line("t2", {"prompt": "hi", "max_gen_len": None})],
        "2: max_gen_len is null, which asks for no limit; give a whole number up to the limit of {cap} per request",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_job_that_would_surely_fail_is_refused_and_nothing_is_created_or_sent(
    state: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    # GIVEN a job file one of whose lines its endpoint cannot serve (or the endpoint is missing)
    endpoint, lines, problem = REFUSALS[case]
    job = write_jobfile(tmp_path / "job.jsonl", lines)
    expected = f"{job}:{problem.format(cap=token_cap(state))}"
    jobs_before = job_count(state)

    for dry_run in ([], ["--dry-run"]):
        # WHEN it is submitted, or dry-run
        code = main(["submit", *dry_run, "--endpoint", endpoint, str(job)])

        # THEN it is refused with FILE:LINE: reason, and no job exists and no message was sent
        err = capsys.readouterr().err
        assert code == 2, err
        assert expected in err.splitlines()
        assert job_count(state) == jobs_before
        assert queue_depth(state) == 0


def test_a_dry_run_prints_the_estimate_and_sends_nothing(
    state: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a valid job file and prices for its endpoint
    job = write_jobfile(tmp_path / "job.jsonl", [chat_line(f"r{i}", "x" * 400, max_tokens=4) for i in range(5)])
    jobs_before = job_count(state)

    # WHEN it is dry-run (the module's prices are set for its endpoint)
    code = main(["submit", "--dry-run", str(job)])

    # THEN the tokens, cost and duration are printed, and no job or message exists
    out = capsys.readouterr().out
    assert code == 0
    assert "nothing enqueued, no job created" in out
    assert "prompt_tokens      ~505 (characters / 4)" in out
    assert "max_output_tokens  20 (the requests' max_tokens: an upper bound)" in out
    assert "expected_tokens    ~525" in out
    assert "estimated_cost     ~$" in out and "model $" in out
    assert "expected_duration  ~" in out and "bound by concurrency" in out
    assert "typical_latency" in out
    assert job_count(state) == jobs_before
    assert queue_depth(state) == 0


def test_the_dry_runs_cost_is_within_ten_percent_of_the_finished_jobs(state: LocalStack, tmp_path: Path) -> None:
    # GIVEN a job file whose answers the simulator makes exactly max_tokens long (its
    # answers are 4 to 48 words, cut at max_tokens), with prompts of varied length
    lines = [chat_line(f"r{i}", "word " * (20 + 7 * i), max_tokens=4) for i in range(24)]
    job = write_jobfile(tmp_path / "job.jsonl", lines)

    async def run() -> tuple[JobEstimate, JobStatus, CostEstimate]:
        async with LlmbatchClient(state.resources) as client:
            # WHEN it is dry-run, then submitted and run to the end
            estimate = await client.estimate(job)
            job_id = await client.submit(job)
            finished = await wait_finished(client, job_id, timeout_s=60)
            actual = estimate_cost(finished, Pricing.from_function_configuration(await client.worker_configuration()))
            return estimate, finished, actual

    estimate, finished, actual = asyncio.run(run())

    # THEN the tokens are the ones the simulator counted, and the costs agree within 10%
    assert finished.counts.succeeded == len(lines)
    assert estimate.tokens.prompt == finished.counts.prompt_tokens
    assert estimate.tokens.output == finished.counts.completion_tokens
    assert estimate.cost.total_usd == pytest.approx(actual.total_usd, rel=0.10)
