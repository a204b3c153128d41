"""Every file in events/ through the handler, as `sam local invoke` would hand it over."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmbatch.client.client import LlmbatchClient
from llmbatch.local.lambda_runtime import ContainerProcess
from llmbatch.local.runner import LocalStack
from shared.errors import JobNotFoundError
from shared.jobs import JobMeta

EVENTS = Path(__file__).resolve().parents[2] / "events"
EXPECTED = json.loads((EVENTS / "expected-responses.json").read_text())


@pytest.mark.parametrize("name", sorted(p.name for p in EVENTS.glob("sqs-*.json")))
async def test_each_sample_event_gives_its_documented_response(fresh_sim: LocalStack, name: str) -> None:
    # GIVEN the job the sample events belong to
    async with LlmbatchClient(fresh_sim.resources) as client:
        try:
            await client.status("job-sample")
        except JobNotFoundError:
            await client.store.create_job(JobMeta(job_id="job-sample", total=3, sealed=True, enqueued=3))
    event = json.loads((EVENTS / name).read_text())
    assert name in EXPECTED, f"events/{name} has no documented response"

    # WHEN the worker handler gets the event in a fresh container
    worker = fresh_sim.provisioned.functions["Worker"]  # type: ignore[union-attr]
    container = ContainerProcess(worker, fresh_sim.resources.aws_endpoint_url or "")
    try:
        kind, payload = container.invoke(event, timeout_s=worker.timeout_s)
    finally:
        container.stop()

    # THEN it answers as documented, and each valid request has its result
    assert kind == "ok", payload
    assert payload["result"] == EXPECTED[name]
    async with LlmbatchClient(fresh_sim.resources) as client:
        stored = {r.custom_id: r.status.value for r in await client.results("job-sample")}
    for record in event["Records"]:
        try:
            custom_id = json.loads(record["body"]).get("custom_id")
        except json.JSONDecodeError:
            continue
        assert custom_id in stored
