"""What the worker reports: EMF metrics with its counts, and logs without prompt text."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from local_stack.lambda_runtime import FakeLambdaContext
from local_stack.provision import REGION
from local_stack.runner import LocalStack
from shared.control import LlmbatchClient
from shared.jobs import JobMeta, new_job_id
from shared.messages import RequestMessage

SECRET_PROMPT = "the launch code is 0000"


@pytest.fixture
def worker_app(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    worker = stack.provisioned.functions["Worker"]  # type: ignore[union-attr]
    env = {
        **worker.environment,
        "AWS_ENDPOINT_URL": stack.resources.aws_endpoint_url or "",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import functions.worker.app as app

    monkeypatch.setattr(app, "_container", None)
    yield app
    if app._container is not None:
        app._container.close()


def record(i: int, body: str) -> dict[str, Any]:
    return {
        "messageId": f"m-{i}",
        "receiptHandle": f"h-{i}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:1:q",
        "awsRegion": REGION,
    }


def test_an_invocation_publishes_its_counts_as_metrics_and_never_logs_prompt_text(
    stack: LocalStack, worker_app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a job of three requests, one of which the endpoint refuses
    job_id = new_job_id()

    async def create() -> None:
        async with LlmbatchClient(stack.resources) as client:
            await client.store.create_job(JobMeta(job_id=job_id, total=3, sealed=True, enqueued=3))

    asyncio.run(create())
    texts = [SECRET_PROMPT, SECRET_PROMPT + " again", "[[sim:400]] " + SECRET_PROMPT]
    event = {
        "Records": [
            record(
                i,
                RequestMessage(
                    v=1,
                    job_id=job_id,
                    custom_id=f"c{i}",
                    line=i + 1,
                    url="/v1/chat/completions",
                    body={"model": "sim-model", "messages": [{"role": "user", "content": t}]},
                ).encode(),
            )
            for i, t in enumerate(texts)
        ]
    }

    # WHEN the handler runs it
    response = worker_app.lambda_handler(event, FakeLambdaContext("worker", 512, 30))

    # THEN it reports two successes and one failure as EMF metrics, and the prompt appears nowhere
    out = capsys.readouterr()
    assert response == {"batchItemFailures": []}
    emf = [json.loads(line) for line in out.out.splitlines() if '"_aws"' in line]
    assert emf, out.out
    doc = emf[-1]
    one = lambda name: sum(doc[name]) if isinstance(doc[name], list) else doc[name]  # noqa: E731
    assert (one("RequestsSucceeded"), one("RequestsFailed"), one("ModelCalls")) == (2, 1, 3)
    assert doc["endpoint"] == "default"
    assert one("TokensIn") > 0
    assert SECRET_PROMPT not in out.out and SECRET_PROMPT not in out.err
