"""Fixtures for tests against the local stack: moto's server over real HTTP, the endpoint
simulator, and the event source mapping poller running the real handler."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmbatch.client.client import LlmbatchClient
from llmbatch.client.jobfile import is_bedrock_record
from llmbatch.local.provision import template_copy
from llmbatch.local.runner import LocalStack
from shared.jobs import JobStatus
from shared.messages import BedrockRecordLine, JobLine, RequestMessage

#: Fast enough for CI, slow enough that concurrency matters.
TEST_SIMULATOR = {"slots": 16, "base_latency_s": 0.02, "per_output_token_s": 0.0005, "jitter_s": 0.005, "seed": 3}
#: Retries come back within seconds in tests (the template's 2 s base is for real endpoints).
FAST_RETRIES = {"RETRY_BASE_S": "0.5", "RETRY_MAX_S": "3"}


def sim_root(stack: LocalStack) -> str:
    url = stack.resources.model_endpoint_url or ""
    return url.removesuffix("/v1")


def sim_stats(stack: LocalStack) -> dict[str, Any]:
    with urllib.request.urlopen(sim_root(stack) + "/_sim/stats", timeout=10) as resp:
        return dict(json.load(resp))


def sim_reset(stack: LocalStack, **config: Any) -> None:
    for path, body in (("/_sim/reset", {}), ("/_sim/config", {**TEST_SIMULATOR, **config})):
        req = urllib.request.Request(
            sim_root(stack) + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        urllib.request.urlopen(req, timeout=10).close()


def write_jobfile(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def chat_line(custom_id: str, text: str = "hello", max_tokens: int = 8) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "sim-model", "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens},
    }


async def enqueue_as_sdk(client: LlmbatchClient, lines: list[dict[str, Any]], *, endpoint: str) -> str:
    """Create a job and enqueue its lines, signed, as a program using the SDK would: unlike
    ``submit``, nothing checks them against the endpoint first (the worker's guards do)."""
    job_id, sign_key = await client.create_job(len(lines), endpoint=endpoint)
    requests = [
        BedrockRecordLine.model_validate(line).to_job_line()
        if is_bedrock_record(line)
        else JobLine.model_validate(line)
        for line in lines
    ]
    await client.enqueue(
        [
            RequestMessage.from_job_line(r, job_id=job_id, line_no=n, endpoint=endpoint, sign_key=sign_key).encode()
            for n, r in enumerate(requests, start=1)
        ]
    )
    return job_id


async def wait_finished(client: LlmbatchClient, job_id: str, timeout_s: float = 120.0) -> JobStatus:
    return await wait_status(client, job_id, lambda st: st.finished, timeout_s=timeout_s, what="finished")


async def wait_status(
    client: LlmbatchClient, job_id: str, until: Callable[[JobStatus], bool], *, timeout_s: float, what: str
) -> JobStatus:
    """The job's status once ``until`` holds for it, polled; fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        st = await client.status(job_id)
        if until(st):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"job not {what} in {timeout_s}s: {st.to_dict()}")
        await asyncio.sleep(0.25)


def template_variant(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    return template_copy(tmp_path, change)


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(simulator_config=TEST_SIMULATOR, container_env=FAST_RETRIES, write_state=False) as s:
        yield s


@pytest.fixture
def fresh_sim(stack: LocalStack) -> LocalStack:
    sim_reset(stack)
    return stack
