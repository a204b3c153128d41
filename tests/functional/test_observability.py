"""What the worker reports: EMF metrics with its counts, and logs without prompt text."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from llmbatch.client.client import LlmbatchClient
from llmbatch.local.lambda_runtime import FakeLambdaContext
from llmbatch.local.poller import sqs_record
from llmbatch.local.provision import REGION
from llmbatch.local.runner import LocalStack
from shared.jobs import JobMeta, new_job_id
from shared.messages import RequestMessage
from shared.observability import ENDPOINT_DIMENSION
from shared.request_log import body_fingerprint
from shared.worker.stats import NO_ENDPOINT

SECRET_PROMPT = "the launch code is 0000"
QUEUE_ARN = "arn:aws:sqs:us-east-1:1:q"


@pytest.fixture
def start_worker(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """The worker's handler module with the stack's environment (plus ``extra_env``) and a
    container of its own, made on its first invocation."""
    started: list[Any] = []

    def start(**extra_env: str) -> Any:
        worker = stack.provisioned.functions["Worker"]  # type: ignore[union-attr]
        env = {
            **worker.environment,
            "AWS_ENDPOINT_URL": stack.resources.aws_endpoint_url or "",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            **extra_env,
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        import functions.worker.app as app

        monkeypatch.setattr(app, "_container", None)
        started.append(app)
        return app

    yield start
    for app in started:
        if app._container is not None:
            app._container.close()


@pytest.fixture
def worker_app(start_worker: Callable[..., Any]) -> Any:
    return start_worker()


def create_job(stack: LocalStack, total: int) -> str:
    job_id = new_job_id()

    async def create() -> None:
        async with LlmbatchClient(stack.resources) as client:
            await client.store.create_job(JobMeta(job_id=job_id, total=total, sealed=True, enqueued=total))

    asyncio.run(create())
    return job_id


def chat_message(job_id: str, i: int, text: str, endpoint: str = "default") -> str:
    return RequestMessage(
        v=1,
        job_id=job_id,
        custom_id=f"c{i}",
        line=i + 1,
        url="/v1/chat/completions",
        body={"model": "sim-model", "messages": [{"role": "user", "content": text}]},
        endpoint=endpoint,
    ).encode()


def emf_documents(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if '"_aws"' in line]


def value(doc: dict[str, Any], name: str) -> float:
    """A metric's value in one document (Powertools writes even one value as a list)."""
    v = doc[name]
    return float(sum(v)) if isinstance(v, list) else float(v)


def record(i: int, body: str) -> dict[str, Any]:
    return sqs_record({"MessageId": f"m-{i}", "ReceiptHandle": f"h-{i}", "Body": body}, QUEUE_ARN)


def test_an_invocation_publishes_its_counts_as_metrics_and_never_logs_prompt_text(
    stack: LocalStack, worker_app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a job of three requests, one of which the endpoint refuses
    job_id = create_job(stack, 3)
    texts = [SECRET_PROMPT, SECRET_PROMPT + " again", "[[sim:400]] " + SECRET_PROMPT]
    event = {"Records": [record(i, chat_message(job_id, i, t)) for i, t in enumerate(texts)]}

    # WHEN the handler runs it
    response = worker_app.lambda_handler(event, FakeLambdaContext("worker", 512, 30))

    # THEN it reports two successes and one failure as EMF metrics, and the prompt appears nowhere
    out = capsys.readouterr()
    assert response == {"batchItemFailures": []}
    (doc,) = [d for d in emf_documents(out.out) if ENDPOINT_DIMENSION in d]
    assert [value(doc, n) for n in ("RequestsSucceeded", "RequestsFailed", "ModelCalls")] == [2, 1, 3]
    assert doc[ENDPOINT_DIMENSION] == "default"
    assert value(doc, "TokensIn") > 0
    assert SECRET_PROMPT not in out.out and SECRET_PROMPT not in out.err


def test_a_batch_on_two_endpoints_is_counted_under_each_endpoint(
    stack: LocalStack, start_worker: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a worker serving the stack's endpoint and one named in ENDPOINTS (the same simulator)
    app = start_worker(ENDPOINTS=json.dumps({"second": {"kind": "openai", "url": stack.resources.model_endpoint_url}}))
    # ... and one batch of: three requests on the default endpoint (one refused), two on the
    # named one, one naming an endpoint nobody serves, and one nobody can read
    job_id = create_job(stack, 6)
    messages = [
        chat_message(job_id, 0, "one"),
        chat_message(job_id, 1, "two"),
        chat_message(job_id, 2, "[[sim:400]] three"),
        chat_message(job_id, 3, "four", endpoint="second"),
        chat_message(job_id, 4, "five", endpoint="second"),
        chat_message(job_id, 5, "six", endpoint="nowhere"),
        "{not json",
    ]
    event = {"Records": [record(i, body) for i, body in enumerate(messages)]}

    # WHEN the handler runs it
    response = app.lambda_handler(event, FakeLambdaContext("worker", 512, 30))

    # THEN each endpoint's counts are published under its own dimension, in one document each
    assert response == {"batchItemFailures": []}
    docs = emf_documents(capsys.readouterr().out)
    by_endpoint = {d[ENDPOINT_DIMENSION]: d for d in docs if ENDPOINT_DIMENSION in d}
    assert len(by_endpoint) == len(docs) - 1
    counted = ("ModelCalls", "RequestsSucceeded", "RequestsFailed")
    assert {name: [value(d, n) for n in counted] for name, d in by_endpoint.items()} == {
        "default": [3, 2, 1],
        "second": [2, 2, 0],
        NO_ENDPOINT: [0, 0, 1],
    }
    assert len(by_endpoint["second"]["ModelLatency"]) == 2
    # ... the dead letter and the concurrency limit in the container's document, without it
    (container_doc,) = [d for d in docs if ENDPOINT_DIMENSION not in d]
    assert value(container_doc, "DeadLettered") == 1
    assert "ConcurrencyLimit" in container_doc and "RequestsSucceeded" not in container_doc
    # ... and the endpoints' documents add up to the invocation's totals
    totals = app.container().worker.last_stats
    for metric, total in {
        "ModelCalls": totals.calls,
        "RequestsSucceeded": totals.succeeded,
        "RequestsFailed": totals.failed,
        "TokensIn": totals.prompt_tokens,
        "TokensOut": totals.completion_tokens,
    }.items():
        assert sum(value(d, metric) for d in by_endpoint.values()) == total, metric


class Records(logging.Handler):
    """Keeps the request log's records, rendered by the handler's own (Powertools JSON) formatter."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        formatter = logging.getLogger("llmbatch").handlers[0].formatter
        assert formatter is not None
        self.lines.append(json.loads(formatter.format(record)))


@pytest.fixture
def request_lines() -> Iterator[list[dict[str, Any]]]:
    handler = Records()
    logger = logging.getLogger("llmbatch.requests")
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("payloads", [False, True])
def test_each_failed_request_is_logged_with_its_ids_and_its_text_only_when_asked(
    stack: LocalStack, start_worker: Callable[..., Any], request_lines: list[dict[str, Any]], payloads: bool
) -> None:
    # GIVEN the worker with LogPayloads off (the default) or on, and a job whose second
    # request the endpoint refuses
    app = start_worker(LOG_PAYLOADS=str(payloads).lower())
    job_id = create_job(stack, 2)
    texts = ["fine", "[[sim:400]] " + SECRET_PROMPT]
    event = {"Records": [record(i, chat_message(job_id, i, t)) for i, t in enumerate(texts)]}

    # WHEN the handler runs it (at the stack's INFO level)
    app.lambda_handler(event, FakeLambdaContext("worker", 512, 30))

    # THEN exactly one line, a WARNING, tells of the failure, with the request's ids, its
    # line, the error and a fingerprint of its body
    (line,) = [x for x in request_lines if x["level"] != "DEBUG"]
    assert line["level"] == "WARNING" and line["message"] == "request failed"
    assert (line["job_id"], line["custom_id"], line["line"]) == (job_id, "c1", 2)
    assert (line["status_code"], line["error_code"]) == (400, "http_400")
    size, digest = body_fingerprint(RequestMessage.model_validate_json(chat_message(job_id, 1, texts[1])).body)
    assert (line["body_bytes"], line["body_sha256"]) == (size, digest)
    # ... and the prompt's text is in it only with the switch on
    assert (SECRET_PROMPT in json.dumps(line)) is payloads
