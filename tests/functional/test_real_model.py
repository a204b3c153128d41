"""A small job through the whole local stack on the real SmolLM2 model (llama.cpp's server).

It needs the ``local`` extra, which the ``dev`` extra includes, so CI runs it; without
the extra it fails with the pip command to run, it does not skip.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmbatch.cli.demo import answer_text
from llmbatch.cli.sample_job import write_question_job
from llmbatch.client.client import LlmbatchClient
from llmbatch.local.endpoint_choice import LocalEndpoint
from llmbatch.local.model_server import SMOLLM_MODEL
from llmbatch.local.runner import LocalStack
from shared.results import RequestStatus
from tests.functional.conftest import wait_finished

REQUESTS = 4
#: Short answers keep the test quick: the server generates one request at a time.
MAX_TOKENS = 16


async def test_a_job_on_the_real_model_gets_a_generated_answer_for_every_request(tmp_path: Path) -> None:
    # GIVEN the local stack serving SmolLM2, and a job of short questions
    stack = LocalStack(endpoint=LocalEndpoint.SMOLLM, write_state=False, log_dir=tmp_path / "logs")
    job = write_question_job(tmp_path / "job.jsonl", REQUESTS, model=SMOLLM_MODEL, max_tokens=MAX_TOKENS)
    with stack:
        async with LlmbatchClient(stack.resources) as client:
            # WHEN the job is submitted and runs to the end
            job_id = await client.submit(job, name="real-model")
            final = await wait_finished(client, job_id, timeout_s=300)
            results = await client.results(job_id)

    # THEN every request succeeded, once, on its first delivery
    assert (final.total, final.counts.succeeded, final.counts.failed) == (REQUESTS, REQUESTS, 0)
    asked = [json.loads(line)["custom_id"] for line in job.read_text().splitlines()]
    assert sorted(r.custom_id for r in results) == sorted(asked)
    for r in results:
        assert r.status is RequestStatus.SUCCEEDED, (r.error_code, r.error_message)
        assert r.attempt == 1
        # ... with text the model generated, and the tokens it counted
        text = answer_text(r.response_body)
        assert text, r.response_body
        assert r.response_body["model"] == SMOLLM_MODEL
        assert r.usage.prompt_tokens > 0
        assert 0 < r.usage.completion_tokens <= MAX_TOKENS
    assert final.counts.completion_tokens == sum(r.usage.completion_tokens for r in results)
    assert final.counts.prompt_tokens == sum(r.usage.prompt_tokens for r in results)

    # ... and the model server stopped with the stack
    assert stack.model_server is not None and stack.model_server.process is not None
    assert stack.model_server.process.poll() is not None
