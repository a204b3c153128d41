"""Tests of the endpoint factory (shared/endpoints/factory.py) and its wiring into the
container: one client per (service, region, URL), routes a kind cannot serve refused
before any call, and every configured name reaching the worker."""

from __future__ import annotations

import asyncio
import json
import socket
from contextlib import AsyncExitStack

import pytest
from aiobotocore.session import get_session

from llmbatch.local.simulator import SimulatorConfig, start_simulator
from shared.config import WorkerConfig
from shared.container import Container
from shared.endpoints.factory import EndpointFactory
from shared.endpoints.specs import parse_endpoints
from shared.errors import EndpointConnectionError, PermanentError
from shared.messages import BEDROCK_RECORD_ROUTE

AWS = get_session()
AWS.set_credentials("testing", "testing")


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


async def test_endpoints_of_one_service_region_and_url_share_one_client() -> None:
    # GIVEN three Bedrock endpoints: two in one region, one in another
    url = closed_port_url()
    specs = parse_endpoints(
        json.dumps(
            {
                "haiku": {"kind": "bedrock", "region": "us-east-1", "default_model": "a.b", "endpoint_url": url},
                "sonnet": {"kind": "bedrock", "region": "us-east-1", "default_model": "a.c", "endpoint_url": url},
                "eu": {"kind": "bedrock", "region": "eu-west-1", "default_model": "a.b", "endpoint_url": url},
            }
        )
    )

    # WHEN the factory builds them
    async with AsyncExitStack() as stack:
        factory = EndpointFactory(stack, call_timeout_s=10, aws_session=AWS)
        endpoints = await factory.build(specs)

        # THEN every name has an endpoint, and two clients were made, one per region
        assert set(endpoints) == {"haiku", "sonnet", "eu"}
        assert set(factory.aws_clients) == {
            ("bedrock-runtime", "us-east-1", url),
            ("bedrock-runtime", "eu-west-1", url),
        }


async def test_a_route_the_kind_cannot_serve_is_refused_before_any_call() -> None:
    # GIVEN an OpenAI-compatible endpoint where nothing listens (any call would fail to connect)
    specs = parse_endpoints(json.dumps({"vllm": {"kind": "openai", "url": closed_port_url() + "/v1"}}))
    async with AsyncExitStack() as stack:
        vllm = (await EndpointFactory(stack, call_timeout_s=10).build(specs))["vllm"]

        # WHEN a Bedrock record and a chat request are sent to it
        with pytest.raises(PermanentError) as refused:
            await vllm.call(BEDROCK_RECORD_ROUTE, {"inputText": "x"}, timeout_s=5, custom_id="r1")
        with pytest.raises(EndpointConnectionError):
            await vllm.call("/v1/chat/completions", {"messages": []}, timeout_s=5, custom_id="c1")

    # THEN the record fails permanently as an unsupported route, naming the endpoint; the chat
    # request was tried (and could not connect)
    assert refused.value.code == "unsupported_route"
    assert "'vllm'" in refused.value.message and BEDROCK_RECORD_ROUTE in refused.value.message


def test_the_container_gives_the_worker_every_configured_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the worker's environment with the original endpoint and two named ones
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    env = {
        "JOBS_TABLE": "jobs",
        "RESULTS_TABLE": "results",
        "ENDPOINT_URL": closed_port_url() + "/v1",
        "ENDPOINTS": json.dumps(
            {
                "claude": {"kind": "bedrock", "region": "us-east-1", "default_model": "a.b"},
                "vllm": {"kind": "openai", "url": "http://127.0.0.1:1/v1"},
            }
        ),
    }

    # WHEN the container is made
    container = Container.create(WorkerConfig.from_env(env))
    try:
        # THEN the worker knows all three names
        assert set(container.worker.endpoints) == {"default", "claude", "vllm"}
    finally:
        container.close()
        asyncio.set_event_loop(None)  # the container set its own (now closed) loop as current


async def test_an_openai_endpoints_key_is_read_from_its_store_again_when_refused() -> None:
    # GIVEN a store whose key was rotated after the factory first read it, and a server that
    # takes only the new key
    reads: list[bool] = []

    def store(ref: str, *, fresh: bool = False) -> str | None:
        reads.append(fresh)
        return "sk-new" if fresh else "sk-old"

    server = await start_simulator(SimulatorConfig(api_key="sk-new", base_latency_s=0.0, jitter_s=0.0))
    specs = parse_endpoints(
        json.dumps({"vllm": {"kind": "openai", "url": server.url, "api_key_ref": "secretsmanager:vllm-key"}})
    )
    try:
        async with AsyncExitStack() as stack:
            factory = EndpointFactory(stack, call_timeout_s=10, resolve_key=store)
            endpoint = (await factory.build(specs))["vllm"]

            # WHEN it is called
            reply = await endpoint.call(
                "/v1/chat/completions",
                {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]},
                timeout_s=10,
                custom_id="rotated",
            )
    finally:
        await server.close()

    # THEN the key was read once when built and once, fresh, after the refusal, and the call answered
    assert reads == [False, True]
    assert reply.status_code == 200
