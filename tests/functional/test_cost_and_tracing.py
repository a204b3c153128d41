"""What a job used and cost, and X-Ray traces of the model calls, against the local stack
(moto's server and the simulator over real HTTP)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from llmbatch.cli.main import main
from llmbatch.client.client import LlmbatchClient
from llmbatch.client.cost import PRICES_ENV, usd
from llmbatch.local.lambda_runtime import FakeLambdaContext
from llmbatch.local.poller import sqs_record
from llmbatch.local.provision import REGION
from llmbatch.local.runner import LocalStack
from shared.jobs import JobMeta, JobStatus, new_job_id
from shared.messages import RequestMessage
from tests.functional.conftest import chat_line, wait_finished, wait_status, write_jobfile

pytestmark = pytest.mark.functional

ROOT = Path(__file__).resolve().parents[2]
SECRET_PROMPT = "the launch code is 0000"
#: A trace header as Lambda sets it for a sampled invocation.
TRACE_HEADER = "Root=1-67890abc-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=1"


def worker_env(stack: LocalStack) -> dict[str, str]:
    """The Worker's environment from the template, aimed at the local stack's moto."""
    worker = stack.provisioned.functions["Worker"]  # type: ignore[union-attr]
    return {
        **worker.environment,
        "AWS_ENDPOINT_URL": stack.resources.aws_endpoint_url or "",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }


@pytest.fixture
def worker_app(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for k, v in worker_env(stack).items():
        monkeypatch.setenv(k, v)
    import functions.worker.app as app

    monkeypatch.setattr(app, "_container", None)
    yield app
    if app._container is not None:
        app._container.close()


def create_jobs(stack: LocalStack, *totals: int) -> list[str]:
    ids = [new_job_id() + f"-{i}" for i in range(len(totals))]

    async def create() -> None:
        async with LlmbatchClient(stack.resources) as client:
            for job_id, total in zip(ids, totals, strict=True):
                await client.store.create_job(JobMeta(job_id=job_id, total=total, sealed=True, enqueued=total))

    asyncio.run(create())
    return ids


def statuses(stack: LocalStack, *job_ids: str) -> list[JobStatus]:
    async def read() -> list[JobStatus]:
        async with LlmbatchClient(stack.resources) as client:
            return [await client.status(j) for j in job_ids]

    return asyncio.run(read())


def message(job_id: str, custom_id: str, text: str, line: int = 1) -> str:
    return RequestMessage(
        v=1,
        job_id=job_id,
        custom_id=custom_id,
        line=line,
        url="/v1/chat/completions",
        body={"model": "sim-model", "messages": [{"role": "user", "content": text}], "max_tokens": 8},
    ).encode()


def sqs_event(bodies: list[str]) -> dict[str, Any]:
    return {
        "Records": [
            sqs_record({"MessageId": f"m-{i}", "ReceiptHandle": f"h-{i}", "Body": body}, "arn:aws:sqs:us-east-1:1:q")
            for i, body in enumerate(bodies)
        ]
    }


# --------------------------------------------------------------------------------------------
# Metering
# --------------------------------------------------------------------------------------------


def test_an_invocation_adds_its_time_and_messages_to_each_of_its_jobs(stack: LocalStack, worker_app: Any) -> None:
    # GIVEN a batch with two requests of job A, one of job B, and one naming no known job
    a, b = create_jobs(stack, 2, 1)
    a_bodies = [message(a, "c0", "one"), message(a, "c1", "two", 2)]
    b_bodies = [message(b, "c0", "three")]
    stranger = message("job-that-does-not-exist", "c0", "four")

    # WHEN the worker's handler runs it
    response = worker_app.lambda_handler(
        sqs_event([*a_bodies, *b_bodies, stranger]), FakeLambdaContext("worker", 512, 30)
    )

    # THEN each job holds its deliveries, their bytes and its share of the time by record
    # count, and its results' write units; the unknown job got no counters at all
    assert response == {"batchItemFailures": []}
    ja, jb = statuses(stack, a, b)
    assert (ja.counts.succeeded, jb.counts.succeeded) == (2, 1)
    assert (ja.metering.deliveries, jb.metering.deliveries) == (2, 1)
    assert ja.metering.delivered_bytes == sum(len(x.encode()) for x in a_bodies)
    assert jb.metering.delivered_bytes == len(b_bodies[0].encode())
    assert ja.metering.invocations == jb.metering.invocations == 1
    assert jb.metering.compute_ms > 0
    assert abs(ja.metering.compute_ms - 2 * jb.metering.compute_ms) <= 2
    assert ja.metering.write_units > jb.metering.write_units > 0
    ddb = boto3.client("dynamodb", **stack.resources.client_kwargs())
    items = ddb.query(
        TableName=stack.resources.jobs_table,
        KeyConditionExpression="job_id = :j",
        ExpressionAttributeValues={":j": {"S": "job-that-does-not-exist"}},
    )["Items"]
    assert items == []


# --------------------------------------------------------------------------------------------
# The cost through the CLI
# --------------------------------------------------------------------------------------------


@pytest.fixture
def state(stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStack:
    path = tmp_path / "local.json"
    path.write_text(stack.resources.to_json())
    monkeypatch.setenv("LLMBATCH_STATE", str(path))
    return stack


def set_prices(stack: LocalStack, prices: dict[str, Any]) -> None:
    """What changing the stack's Prices parameter does: the worker's PRICES variable."""
    lam = boto3.client("lambda", **stack.resources.client_kwargs())
    name = stack.resources.worker_function
    variables = lam.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
    lam.update_function_configuration(
        FunctionName=name, Environment={"Variables": {**variables, PRICES_ENV: json.dumps(prices)}}
    )


def test_status_reports_tokens_and_a_cost_priced_from_the_workers_configuration(
    state: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a job run through the local stack's poller, and a price for its endpoint
    job_file = write_jobfile(tmp_path / "job.jsonl", [chat_line(f"r{i}", max_tokens=16) for i in range(12)])
    assert main(["submit", str(job_file)]) == 0
    job_id = capsys.readouterr().out.strip()

    async def finish() -> None:
        async with LlmbatchClient(state.resources) as client:
            await wait_finished(client, job_id, timeout_s=60)
            # An invocation adds its use to the job's counters after its answers are stored
            # (shared/observability.py), so the job may show completed a moment before.
            await wait_status(client, job_id, lambda st: st.metering.deliveries >= 12, timeout_s=30, what="metered")

    asyncio.run(finish())
    set_prices(state, {"endpoints": {"default": {"input_per_million": 3.0, "output_per_million": 15.0}}})

    # WHEN its status is asked for, as JSON and as text
    assert main(["status", job_id, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert main(["status", job_id]) == 0
    text = capsys.readouterr().out

    # THEN the tokens are priced at the endpoint's prices, the worker's time and the
    # messages are counted, and the text shows the same total
    cost, metering = report["estimated_cost"], report["metering"]
    tokens_in, tokens_out = report["prompt_tokens"], report["completion_tokens"]
    assert tokens_in > 0 and tokens_out > 0
    assert cost["model_usd"] == pytest.approx((tokens_in * 3.0 + tokens_out * 15.0) / 1e6)
    assert metering["deliveries"] >= 12 and metering["invocations"] >= 1 and metering["compute_ms"] > 0
    assert cost["lambda_usd"] > 0 and cost["sqs_usd"] > 0 and cost["dynamodb_usd"] > 0
    assert cost["total_usd"] == pytest.approx(cost["aws_usd"] + cost["model_usd"])
    assert f"estimated_cost     {usd(cost['total_usd'])} (" in text


def test_status_still_answers_when_the_prices_are_broken(state: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a job, and a Prices value that is not JSON
    (job_id,) = create_jobs(state, 1)
    set_prices(state, {})
    lam = boto3.client("lambda", **state.resources.client_kwargs())
    name = state.resources.worker_function
    variables = lam.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {**variables, PRICES_ENV: "{oops"}})

    # WHEN its status is asked for
    assert main(["status", job_id, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)

    # THEN the status is there, and the estimate says why it is missing
    assert report["job_id"] == job_id
    assert report["estimated_cost"] is None
    assert PRICES_ENV in report["estimated_cost_unavailable"]


# --------------------------------------------------------------------------------------------
# Tracing
# --------------------------------------------------------------------------------------------

#: Runs the worker's handler once in a fresh interpreter, as a Lambda container would.
HANDLER_ONCE = """
import json, sys
from llmbatch.local.lambda_runtime import FakeLambdaContext
import functions.worker.app as app
event = json.load(sys.stdin)
print(json.dumps({"tracer": app.tracer is not None, "response": app.lambda_handler(event, FakeLambdaContext("w", 512, 30))}))
"""


class FakeXRayDaemon:
    """The X-Ray daemon's UDP socket on 127.0.0.1: collects what the SDK sends
    (``{"format": "json", "version": 1}`` then one segment document per datagram)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = "{}:{}".format(*self.sock.getsockname())
        self.raw: list[bytes] = []

    def drain(self) -> list[dict[str, Any]]:
        self.sock.settimeout(0.5)
        try:
            while True:
                self.raw.append(self.sock.recv(65536))
        except TimeoutError:
            pass
        return [json.loads(packet.split(b"\n", 1)[1]) for packet in self.raw]

    def close(self) -> None:
        self.sock.close()


def run_handler_once(stack: LocalStack, event: dict[str, Any], extra_env: dict[str, str]) -> dict[str, Any]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "_X_AMZN"))},
        **worker_env(stack),
        "LAMBDA_TASK_ROOT": str(ROOT / "functions" / "worker"),
        "AWS_LAMBDA_FUNCTION_NAME": stack.resources.worker_function,
        "PYTHONPATH": str(ROOT),
        **extra_env,
    }
    proc = subprocess.run(
        [sys.executable, "-c", HANDLER_ONCE],
        input=json.dumps(event),
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def subsegments(entity: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield entity
    for child in entity.get("subsegments", []):
        yield from subsegments(child)


def test_with_tracing_on_each_model_call_is_a_subsegment_without_prompt_text(stack: LocalStack) -> None:
    # GIVEN the Tracing parameter Active (tracing enabled), a sampled invocation, a local
    # X-Ray daemon, and three requests with a secret prompt, one of which the endpoint refuses
    (job_id,) = create_jobs(stack, 3)
    texts = [SECRET_PROMPT, SECRET_PROMPT + " again", "[[sim:400]] " + SECRET_PROMPT]
    event = sqs_event([message(job_id, f"c{i}", t, i + 1) for i, t in enumerate(texts)])
    daemon = FakeXRayDaemon()
    try:
        # WHEN the handler runs once in a fresh container
        result = run_handler_once(
            stack,
            event,
            {
                "POWERTOOLS_TRACE_DISABLED": "false",
                "_X_AMZN_TRACE_ID": TRACE_HEADER,
                "AWS_XRAY_DAEMON_ADDRESS": daemon.address,
            },
        )
        documents = daemon.drain()
    finally:
        daemon.close()

    # THEN the handler and each of the three model calls have a subsegment in the
    # invocation's trace; the refused call is flagged with its status; no prompt is sent
    assert result["tracer"] is True
    assert result["response"] == {"batchItemFailures": []}
    entities = [e for doc in documents for e in subsegments(doc)]
    assert all(e["trace_id"] == TRACE_HEADER.split(";")[0].removeprefix("Root=") for e in entities)
    assert any(e["name"] == "## lambda_handler" for e in entities)
    calls = {e["annotations"]["custom_id"]: e for e in entities if e["name"] == "## model default"}
    assert set(calls) == {"c0", "c1", "c2"}
    assert all(c["namespace"] == "remote" and c["end_time"] >= c["start_time"] for c in calls.values())
    assert calls["c0"]["annotations"]["status_code"] == 200
    assert calls["c2"]["annotations"]["status_code"] == 400 and calls["c2"].get("error") is True
    assert not any(SECRET_PROMPT.encode() in packet for packet in daemon.raw)
    assert statuses(stack, job_id)[0].counts.terminal == 3


def test_with_tracing_off_the_xray_sdk_is_never_even_imported(stack: LocalStack) -> None:
    # GIVEN the template's default (tracing Disabled)
    (job_id,) = create_jobs(stack, 1)
    probe = HANDLER_ONCE.replace(
        '"tracer": app.tracer is not None,', '"tracer": app.tracer is not None, "xray": "aws_xray_sdk" in sys.modules,'
    )
    assert probe != HANDLER_ONCE

    # WHEN the handler runs once in a fresh container
    env = {**worker_env(stack), "PYTHONPATH": str(ROOT), "LAMBDA_TASK_ROOT": str(ROOT / "functions" / "worker")}
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        input=json.dumps(sqs_event([message(job_id, "c0", "hello")])),
        env={**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **env},
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    # THEN it answered without a tracer and without loading the X-Ray SDK (its cold start)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert worker_env(stack)["POWERTOOLS_TRACE_DISABLED"] == "true"
    assert result == {"tracer": False, "xray": False, "response": {"batchItemFailures": []}}
