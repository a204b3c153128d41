"""The job-finished event through the local stack: the stack's bus, the webhook rule, the
notify queue and the Notifier function, all from template.yaml (issue 14)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from llmbatch.client.client import LlmbatchClient
from llmbatch.local.runner import LocalStack
from shared.finish import FinishOutcome
from shared.notify import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from shared.results import RequestResult, RequestStatus, Usage
from tests.functional.conftest import (
    FAST_RETRIES,
    TEST_SIMULATOR,
    chat_line,
    sim_reset,
    template_variant,
    wait_finished,
    write_jobfile,
)

pytestmark = pytest.mark.functional

#: Webhook retries a second apart, not the template's 10 s.
NOTIFY_ENV = {**FAST_RETRIES, "NOTIFY_RETRY_BASE_S": "1"}


#: Requests dead-letter on their second receive, so the DeadLetter function may finish a job.
MAX_RECEIVES = 2


def few_receives(template: dict[str, Any]) -> None:
    template["Resources"]["RequestQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"] = MAX_RECEIVES


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    template = template_variant(tmp_path_factory.mktemp("template"), few_receives)
    with LocalStack(
        template_path=template, simulator_config=TEST_SIMULATOR, container_env=NOTIFY_ENV, write_state=False
    ) as s:
        yield s


@pytest.fixture(scope="module")
def captured(stack: LocalStack) -> Iterator[EventCapture]:
    capture = EventCapture(stack)
    yield capture


class EventCapture:
    """Every event on the stack's bus from source llmbatch, through a rule to a queue of its own."""

    def __init__(self, stack: LocalStack) -> None:
        kw = stack.resources.client_kwargs()
        self.sqs = boto3.client("sqs", **kw)
        events = boto3.client("events", **kw)
        name = f"capture-{uuid.uuid4().hex[:8]}"
        self.url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        bus = stack.resources.event_bus
        events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps({"source": ["llmbatch"]}))
        events.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": "capture", "Arn": arn}])
        self.seen: list[dict[str, Any]] = []

    def drain(self) -> None:
        while True:
            msgs = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
                "Messages", []
            )
            if not msgs:
                return
            for m in msgs:
                self.seen.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])

    def of(self, job_id: str, *, settle_s: float = 2.0, timeout_s: float = 20.0) -> list[dict[str, Any]]:
        """The job's events: waits for the first, then ``settle_s`` more for any other."""
        deadline = time.monotonic() + timeout_s
        first_at: float | None = None
        while time.monotonic() < deadline:
            self.drain()
            mine = [e for e in self.seen if e["detail"].get("job_id") == job_id]
            if mine and first_at is None:
                first_at = time.monotonic()
            if first_at is not None and time.monotonic() - first_at >= settle_s:
                return mine
            time.sleep(0.2)
        return [e for e in self.seen if e["detail"].get("job_id") == job_id]


async def test_a_completed_job_puts_exactly_one_job_finished_event_on_the_bus(
    stack: LocalStack, captured: EventCapture, tmp_path: Path
) -> None:
    # GIVEN a 40-request job, answered across several invocations
    sim_reset(stack)
    job_file = write_jobfile(tmp_path / "job.jsonl", [chat_line(f"r{i}", f"q {i}") for i in range(40)])
    async with LlmbatchClient(stack.resources) as client:
        # WHEN it runs to the end
        job_id = await client.submit(job_file, name="nightly")
        final = await wait_finished(client, job_id)
    # THEN one event, from llmbatch, with the job's outcome
    events = captured.of(job_id)
    assert len(events) == 1, events
    (event,) = events
    assert (event["source"], event["detail-type"]) == ("llmbatch", "Job Finished")
    detail = event["detail"]
    assert (detail["name"], detail["status"], detail["total"], detail["succeeded"]) == ("nightly", "completed", 40, 40)
    assert detail["prompt_tokens"] == final.counts.prompt_tokens > 0
    assert detail["completion_tokens"] == final.counts.completion_tokens > 0
    assert detail["duration_s"] >= 0 and "notify_url" not in detail


async def test_a_cancelled_job_puts_exactly_one_event_saying_cancelled(
    stack: LocalStack, captured: EventCapture, tmp_path: Path
) -> None:
    # GIVEN a job of slow requests, cancelled as soon as it is submitted
    sim_reset(stack, base_latency_s=0.5)
    job_file = write_jobfile(tmp_path / "job.jsonl", [chat_line(f"r{i}") for i in range(60)])
    async with LlmbatchClient(stack.resources) as client:
        job_id = await client.submit(job_file)
        await client.cancel(job_id)
        # WHEN the workers record the rest cancelled
        final = await wait_finished(client, job_id)
    # THEN one event, saying cancelled, with the counts at the end
    assert final.state.value == "cancelled" and final.counts.cancelled > 0
    events = captured.of(job_id)
    assert [e["detail"]["status"] for e in events] == ["cancelled"], events
    assert events[0]["detail"]["cancelled"] == final.counts.cancelled


async def test_a_job_whose_last_request_is_dead_lettered_gets_its_event_from_the_dead_letter_function(
    stack: LocalStack, captured: EventCapture, tmp_path: Path
) -> None:
    # GIVEN a job whose one request keeps failing with 503 until the queue dead-letters it
    sim_reset(stack)
    lines = [chat_line("doomed", "[[sim:fail-first-9:503]] x"), *[chat_line(f"ok-{i}") for i in range(3)]]
    job_file = write_jobfile(tmp_path / "job.jsonl", lines)
    async with LlmbatchClient(stack.resources) as client:
        # WHEN it runs (the DeadLetter function records that request failed, last)
        job_id = await client.submit(job_file)
        final = await wait_finished(client, job_id)
        doomed = {r.custom_id: r for r in await client.results(job_id)}["doomed"]
    assert doomed.error_code == "retries_exhausted" and (final.counts.succeeded, final.counts.failed) == (3, 1)
    # THEN one event, counting the failure
    events = captured.of(job_id)
    assert [(e["detail"]["status"], e["detail"]["failed"]) for e in events] == [("completed", 1)], events


async def test_two_clients_finishing_the_last_two_requests_at_once_put_one_event(
    stack: LocalStack, captured: EventCapture
) -> None:
    # GIVEN a job of two requests, and two clients each holding one answer (as two
    # invocations would), 5 times over
    async with LlmbatchClient(stack.resources) as a, LlmbatchClient(stack.resources) as b:
        for _ in range(5):
            job_id = (await a.create_job(2)).job_id

            async def finish(client: LlmbatchClient, custom_id: str, job_id: str = job_id) -> FinishOutcome:
                result = RequestResult(
                    job_id=job_id,
                    custom_id=custom_id,
                    status=RequestStatus.SUCCEEDED,
                    attempt=1,
                    endpoint="default",
                    line=1,
                    usage=Usage(3, 4),
                )
                await client.store.write_terminal(job_id, [result])
                finisher = await client.finisher()
                assert finisher is not None
                return await finisher.check_one(job_id)

            # WHEN both write their result and check the job at the same moment
            outcomes = await asyncio.gather(finish(a, "x"), finish(b, "y"))
            # THEN one of them published, and the bus carried one event
            assert outcomes.count(FinishOutcome.PUBLISHED) == 1, outcomes
            assert len(captured.of(job_id, settle_s=1.0)) == 1


class Hook(BaseHTTPRequestHandler):
    """Answers with the server's statuses in turn (then 200), recording each POST."""

    def do_POST(self) -> None:
        server: HookServer = self.server  # type: ignore[assignment]
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status = server.statuses.pop(0) if server.statuses else 200
        server.posts.append({"headers": dict(self.headers), "body": body, "status": status})
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class HookServer(ThreadingHTTPServer):
    def __init__(self, statuses: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), Hook)
        self.statuses = statuses
        self.posts: list[dict[str, Any]] = []


@pytest.fixture
def hook() -> Iterator[HookServer]:
    server = HookServer([500])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_a_webhook_gets_a_signed_post_retried_after_a_500(
    stack: LocalStack, hook: HookServer, tmp_path: Path
) -> None:
    # GIVEN a webhook on this machine that answers 500 once, then 200
    sim_reset(stack)
    url = f"http://127.0.0.1:{hook.server_address[1]}/llmbatch"
    job_file = write_jobfile(tmp_path / "job.jsonl", [chat_line(f"r{i}") for i in range(5)])
    async with LlmbatchClient(stack.resources) as client:
        # WHEN a job submitted with it finishes
        job_id = await client.submit(job_file, notify_url=url)
        await wait_finished(client, job_id)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(p["status"] == 200 for p in hook.posts):
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.5)  # time for any extra delivery to show
    # THEN it got the event twice, the 500 retried, and nothing after the 200
    assert [p["status"] for p in hook.posts] == [500, 200], hook.posts
    first, second = hook.posts
    assert first["body"] == second["body"]
    event = json.loads(second["body"])
    assert event["detail"]["job_id"] == job_id and event["detail"]["notify_url"] == url
    # ... each signed with the stack's secret
    secret_arn = stack.provisioned.functions["Notifier"].environment["WEBHOOK_SECRET_ARN"]  # type: ignore[union-attr]
    secret = boto3.client("secretsmanager", **stack.resources.client_kwargs()).get_secret_value(SecretId=secret_arn)
    for post in hook.posts:
        headers = {k.lower(): v for k, v in post["headers"].items()}
        assert verify(
            secret["SecretString"], headers[TIMESTAMP_HEADER.lower()], post["body"], headers[SIGNATURE_HEADER.lower()]
        )
        assert not verify("wrong", headers[TIMESTAMP_HEADER.lower()], post["body"], headers[SIGNATURE_HEADER.lower()])


async def test_submit_refuses_a_plain_http_notify_url_elsewhere_than_this_machine(
    stack: LocalStack, tmp_path: Path
) -> None:
    from shared.errors import ConfigError

    job_file = write_jobfile(tmp_path / "job.jsonl", [chat_line("r")])
    async with LlmbatchClient(stack.resources) as client:
        with pytest.raises(ConfigError, match="https"):
            await client.submit(job_file, notify_url="http://example.com/hook")
