"""Jobs on a named Bedrock endpoint through the local stack: the stack's ``Endpoints``
parameter names a Bedrock endpoint at the Bedrock fake, and the real worker calls it with
aiobotocore; OpenAI Batch lines and Bedrock batch records in one file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmbatch.client.client import LlmbatchClient
from llmbatch.local.bedrock_fake import BedrockFakeThread
from llmbatch.local.runner import LocalStack
from shared.messages import BEDROCK_RECORD_ROUTE
from shared.results import RequestStatus
from tests.functional.conftest import FAST_RETRIES, enqueue_as_sdk, wait_finished, write_jobfile

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
TITAN_EMBED = "amazon.titan-embed-text-v2:0"
#: Nothing listens here: the original "default" endpoint must never be called in this module.
UNUSED_URL = "http://127.0.0.1:9/v1"


@pytest.fixture(scope="module")
def fake() -> Iterator[BedrockFakeThread]:
    with BedrockFakeThread() as running:
        yield running


@pytest.fixture(scope="module")
def stack(fake: BedrockFakeThread) -> Iterator[LocalStack]:
    endpoints = {
        "claude": {"kind": "bedrock", "region": "us-east-1", "default_model": CLAUDE, "endpoint_url": fake.url}
    }
    with LocalStack(
        endpoint_url=UNUSED_URL,
        parameter_overrides={"Endpoints": json.dumps(endpoints)},
        container_env=FAST_RETRIES,
        write_state=False,
    ) as s:
        yield s


def chat(custom_id: str, text: str, **extra: Any) -> dict[str, Any]:
    body = {"model": CLAUDE, "messages": [{"role": "user", "content": text}], **extra}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def record(record_id: str, text: str) -> dict[str, Any]:
    model_input = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    }
    return {"recordId": record_id, "modelInput": model_input}


async def test_a_mixed_job_on_bedrock_accounts_for_every_request_once(
    stack: LocalStack, fake: BedrockFakeThread, tmp_path: Path
) -> None:
    # GIVEN chat lines, an embeddings line, Bedrock records, one request Bedrock throttles
    # twice and one it refuses
    lines = [
        *[chat(f"c{i}", f"question {i}", max_tokens=16) for i in range(6)],
        {
            "custom_id": "e0",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": TITAN_EMBED, "input": ["embed one", "embed two"]},
        },
        *[record(f"REC{i:08d}", f"summarise document {i}") for i in range(6)],
        chat("throttled", "[[bedrock:fail-first-2:ThrottlingException]] busy"),
        chat("refused", "[[bedrock:ValidationException]] bad"),
    ]
    job_file = write_jobfile(tmp_path / "job.jsonl", lines)
    ids = [line.get("custom_id") or line["recordId"] for line in lines]

    async with LlmbatchClient(stack.resources) as client:
        # WHEN it is submitted to the Bedrock endpoint and runs to the end
        job_id = await client.submit(job_file, endpoint="claude")
        final = await wait_finished(client, job_id, timeout_s=90)
        results = {r.custom_id: r for r in await client.results(job_id)}
        out = tmp_path / "out.jsonl"
        summary = await client.export_results(job_id, out)

    # THEN every request ended once: all succeeded but the refused one, which failed once
    assert (final.counts.succeeded, final.counts.failed, final.pending) == (len(lines) - 1, 1, 0)
    assert sorted(results) == sorted(ids)
    assert summary.written == len(lines) and summary.missing == 0
    assert [json.loads(x)["custom_id"] for x in out.read_text().splitlines()] == ids
    refused = results["refused"]
    assert (refused.status, refused.error_code, refused.status_code) == (
        RequestStatus.FAILED,
        "ValidationException",
        400,
    )
    # ... the throttled one came back through SQS and succeeded on its third attempt
    assert (results["throttled"].status, results["throttled"].attempt) == (RequestStatus.SUCCEEDED, 3)

    # ... chat answers look like OpenAI's, records keep the model's own format
    chat_body = results["c0"].response_body
    assert chat_body["object"] == "chat.completion"
    assert chat_body["choices"][0]["message"]["content"] == "echo: question 0"
    assert [d["index"] for d in results["e0"].response_body["data"]] == [0, 1]
    record_result = results["REC00000000"]
    assert record_result.response_body["content"][0]["text"] == "echo: summarise document 0"
    # ... usage is recorded: the record's from Bedrock's headers (3 words in, 4 out)
    assert (record_result.usage.prompt_tokens, record_result.usage.completion_tokens) == (3, 4)
    assert final.counts.prompt_tokens == sum(r.usage.prompt_tokens for r in results.values())

    # ... and Bedrock answered each request exactly once: no paid call was made twice
    answered = fake.stats()["answered_by_request"]
    assert {k: n for k, n in answered.items() if n != 1} == {}
    assert len(answered) == len(lines) - 1 + 1  # less the refused one, plus the 2nd embedding input


async def test_a_bedrock_record_sent_to_an_openai_endpoint_fails_as_an_unsupported_route(
    stack: LocalStack, tmp_path: Path
) -> None:
    # GIVEN a Bedrock record for the original OpenAI-compatible endpoint, enqueued with the
    # SDK (`submit` refuses it: tests/functional/test_submit_checks.py)
    async with LlmbatchClient(stack.resources) as client:
        # WHEN it runs
        job_id = await enqueue_as_sdk(client, [record("REC1", "hello")], endpoint="default")
        final = await wait_finished(client, job_id, timeout_s=60)
        (result,) = await client.results(job_id)

    # THEN it failed once, permanently, before any call (nothing listens at that URL: a call
    # would have been a connection error, retried)
    assert (final.counts.failed, final.pending) == (1, 0)
    assert (result.error_code, result.attempt) == ("unsupported_route", 1)
    assert BEDROCK_RECORD_ROUTE in (result.error_message or "")
