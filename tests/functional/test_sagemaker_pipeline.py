"""A job on a named SageMaker endpoint through the local stack, as far as moto allows: the
stack's ``Endpoints`` parameter names a SageMaker endpoint with the TGI mapping, the real
worker calls InvokeEndpoint with aiobotocore on moto's server (the functions reach it
through ``AWS_ENDPOINT_URL``, as they would reach AWS), and moto answers with TGI-shaped
bodies queued through its API."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmbatch.client.client import LlmbatchClient
from llmbatch.local.runner import LocalStack
from shared.results import RequestStatus
from tests.functional.conftest import FAST_RETRIES, enqueue_as_sdk, wait_finished

#: Nothing listens here: the original "default" endpoint must never be called in this module.
UNUSED_URL = "http://127.0.0.1:9/v1"
REQUESTS = 12


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    endpoints = {"llama": {"kind": "sagemaker", "endpoint_name": "llama-3-8b-tgi", "mapping": "tgi"}}
    with LocalStack(
        endpoint_url=UNUSED_URL,
        parameter_overrides={"Endpoints": json.dumps(endpoints)},
        container_env=FAST_RETRIES,
        write_state=False,
    ) as s:
        yield s


def queue_tgi_answers(aws_url: str, texts: list[str]) -> None:
    """moto hands these out in order, one per distinct request (a repeated request gets
    the answer it got before, like a deterministic model)."""
    results = [
        {
            "Body": json.dumps(
                [{"generated_text": t, "details": {"finish_reason": "eos_token", "generated_tokens": 3}}]
            ),
            "ContentType": "application/json",
        }
        for t in texts
    ]
    req = urllib.request.Request(
        aws_url + "/moto-api/static/sagemaker/endpoint-results",
        data=json.dumps({"results": results}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=10).close()


def completion(i: int) -> dict[str, Any]:
    return {
        "custom_id": f"q{i}",
        "method": "POST",
        "url": "/v1/completions",
        "body": {"model": "llama-3-8b", "prompt": f"question {i}", "max_tokens": 8},
    }


async def test_a_job_on_a_sagemaker_tgi_endpoint_accounts_for_every_request_once(
    stack: LocalStack, tmp_path: Path
) -> None:
    # GIVEN a SageMaker endpoint with TGI answers waiting, and a job of completions plus one
    # embeddings request, which the TGI mapping cannot serve, enqueued with the SDK (`submit`
    # refuses it: tests/functional/test_submit_checks.py)
    texts = [f"answer number {i}" for i in range(REQUESTS)]
    queue_tgi_answers(stack.resources.aws_endpoint_url, texts)
    lines = [completion(i) for i in range(REQUESTS)]
    lines.append({"custom_id": "emb", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}})

    async with LlmbatchClient(stack.resources) as client:
        # WHEN it runs on the SageMaker endpoint
        job_id = await enqueue_as_sdk(client, lines, endpoint="llama")
        final = await wait_finished(client, job_id, timeout_s=90)
        results = {r.custom_id: r for r in await client.results(job_id)}

    # THEN every request ended exactly once: the completions succeeded, the embedding failed
    assert (final.counts.succeeded, final.counts.failed, final.pending) == (REQUESTS, 1, 0)
    assert sorted(results) == sorted(line["custom_id"] for line in lines)
    assert (results["emb"].status, results["emb"].error_code) == (RequestStatus.FAILED, "unsupported_route")
    # ... each completion got one of the queued answers, no answer twice, in OpenAI's shape
    answers = [results[f"q{i}"].response_body for i in range(REQUESTS)]
    assert all(a["object"] == "text_completion" for a in answers)
    assert sorted(a["choices"][0]["text"] for a in answers) == sorted(texts)
    # ... with TGI's generated-token count as the completion tokens
    assert final.counts.completion_tokens == 3 * REQUESTS
