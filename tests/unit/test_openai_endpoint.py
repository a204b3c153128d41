"""Tests of ``OpenAIHttpEndpoint`` (shared/endpoints/openai_http.py) over real HTTP against
the endpoint simulator: every kind of answer must become the right outcome."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from llmbatch.local.simulator import MISSING_MODEL, SimulatorConfig, SimulatorThread, start_simulator
from shared.endpoints.base import EndpointReply
from shared.endpoints.openai_http import OpenAIHttpEndpoint, join_url, parse_retry_after
from shared.errors import (
    EndpointConnectionError,
    EndpointHTTPError,
    EndpointTimeoutError,
    PermanentError,
    TransientError,
)

CHAT = "/v1/chat/completions"
SECRET = "sk-test-DO-NOT-LEAK-4f1d2c"
SIM_RETRY_AFTER_S = 3.0


def chat(text: str = "hello", model: str = "sim-model", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 5, **extra}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    config = SimulatorConfig(
        base_latency_s=0.0, per_output_token_s=0.0, jitter_s=0.0, retry_after_s=SIM_RETRY_AFTER_S, seed=7
    )
    thread = SimulatorThread(config)
    thread.start()
    yield thread
    thread.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def endpoint(sim: SimulatorThread, session: aiohttp.ClientSession) -> OpenAIHttpEndpoint:
    return OpenAIHttpEndpoint("default", session, sim.url)


async def call_error(endpoint: OpenAIHttpEndpoint, body: dict[str, Any], *, timeout_s: float = 10.0) -> Exception:
    try:
        reply = await endpoint.call(CHAT, body, timeout_s=timeout_s, custom_id="req-x")
    except Exception as e:
        return e
    raise AssertionError(f"expected a failure, got {reply!r}")


def free_closed_port() -> int:
    """A port nothing listens on: bound once to pick it, then closed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------------
# Success
# --------------------------------------------------------------------------------------------


async def test_a_200_answer_becomes_a_reply_with_body_usage_and_request_id(
    endpoint: OpenAIHttpEndpoint, sim: SimulatorThread
) -> None:
    # GIVEN the simulator serving chat completions
    # WHEN a chat completion is requested
    reply = await endpoint.call(CHAT, chat("tell me a story"), timeout_s=10.0, custom_id="req-ok-1")

    # THEN the reply carries the answer, its usage (read from the body) and the server's
    # request id (the x-request-id header, as OpenAI sends it; not the completion's id)
    assert isinstance(reply, EndpointReply)
    assert reply.status_code == 200
    assert reply.body["object"] == "chat.completion"
    body_usage = reply.body["usage"]
    assert reply.usage.prompt_tokens == body_usage["prompt_tokens"] > 0
    assert reply.usage.completion_tokens == body_usage["completion_tokens"] > 0
    assert reply.request_id is not None
    assert reply.request_id.startswith("req_")
    assert reply.request_id != reply.body["id"]
    # and the request was tagged with its custom_id
    assert sim.stats()["calls_by_custom_id"].get("req-ok-1") == 1


async def test_the_embeddings_route_is_reached_through_the_v1_base_url(endpoint: OpenAIHttpEndpoint) -> None:
    # GIVEN a base URL ending in /v1 and a route starting with /v1
    # WHEN an embedding is requested
    reply = await endpoint.call(
        "/v1/embeddings", {"model": "sim-model", "input": "abc"}, timeout_s=10.0, custom_id="emb-1"
    )

    # THEN the route was joined without a doubled /v1 and answered
    assert reply.status_code == 200
    assert reply.body["object"] == "list"
    assert reply.usage.prompt_tokens > 0


# --------------------------------------------------------------------------------------------
# Errors the request is to blame for: permanent
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 403, 404, 422])
async def test_a_4xx_from_the_endpoint_is_a_permanent_error(endpoint: OpenAIHttpEndpoint, status: int) -> None:
    # GIVEN a request the simulator answers with a client error
    # WHEN it is called
    error = await call_error(endpoint, chat(f"[[sim:{status}]]"))

    # THEN it is permanent (recorded as the answer), never transient, with the status kept
    assert isinstance(error, PermanentError)
    assert not isinstance(error, TransientError)
    assert error.status_code == status
    assert str(status) in error.message


async def test_a_wrong_api_key_is_a_permanent_401(session: aiohttp.ClientSession) -> None:
    # GIVEN a simulator that requires an API key, and an endpoint configured with another one
    running = await start_simulator(SimulatorConfig(api_key="the-right-key", base_latency_s=0.0, jitter_s=0.0))
    try:
        wrong = OpenAIHttpEndpoint("default", session, running.url, api_key=SECRET)
        right = OpenAIHttpEndpoint("default", session, running.url, api_key="the-right-key")

        # WHEN each calls the simulator
        error = await call_error(wrong, chat())
        reply = await right.call(CHAT, chat(), timeout_s=10.0, custom_id="auth-ok")
    finally:
        await running.close()

    # THEN the wrong key is a permanent 401 with OpenAI's code, and the right key is served
    assert isinstance(error, PermanentError)
    assert not isinstance(error, TransientError)
    assert error.status_code == 401
    assert error.code == "invalid_api_key"
    assert SECRET not in error.message
    assert reply.status_code == 200


async def test_a_missing_api_key_is_a_permanent_401(session: aiohttp.ClientSession) -> None:
    # GIVEN a simulator that requires an API key, and an endpoint configured with none
    running = await start_simulator(SimulatorConfig(api_key="the-right-key", base_latency_s=0.0, jitter_s=0.0))
    try:
        no_key = OpenAIHttpEndpoint("default", session, running.url)

        # WHEN it calls
        error = await call_error(no_key, chat())
    finally:
        await running.close()

    # THEN it is refused permanently
    assert isinstance(error, PermanentError)
    assert error.status_code == 401


async def test_an_unknown_model_is_a_permanent_404_with_openais_code(endpoint: OpenAIHttpEndpoint) -> None:
    # GIVEN a request naming a model the server does not have
    # WHEN it is called
    error = await call_error(endpoint, chat(model=MISSING_MODEL))

    # THEN it is a permanent 404 carrying the error code from the body
    assert isinstance(error, PermanentError)
    assert not isinstance(error, TransientError)
    assert error.status_code == 404
    assert error.code == "model_not_found"
    assert MISSING_MODEL in error.message


# --------------------------------------------------------------------------------------------
# Errors worth retrying: transient
# --------------------------------------------------------------------------------------------


async def test_a_429_is_transient_and_carries_the_retry_after(endpoint: OpenAIHttpEndpoint) -> None:
    # GIVEN a request the simulator rate-limits (its Retry-After is 3 s)
    # WHEN it is called
    error = await call_error(endpoint, chat("[[sim:429]]"))

    # THEN it is an HTTP error worth retrying, after the time the endpoint asked for
    assert isinstance(error, EndpointHTTPError)
    assert error.status_code == 429
    assert error.code == "rate_limit_exceeded"
    assert error.retry_after_s == pytest.approx(SIM_RETRY_AFTER_S)


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503])
async def test_timeouts_conflicts_and_5xx_answers_are_transient(endpoint: OpenAIHttpEndpoint, status: int) -> None:
    # GIVEN a request the simulator answers with a retryable status
    # WHEN it is called
    error = await call_error(endpoint, chat(f"[[sim:{status}]]"))

    # THEN it is a transient HTTP error with that status
    assert isinstance(error, EndpointHTTPError)
    assert error.status_code == status
    assert error.retry_after_s is None


async def test_a_request_failing_twice_then_succeeding_is_transient_then_answered(
    endpoint: OpenAIHttpEndpoint,
) -> None:
    # GIVEN a request the simulator fails twice with 503
    body = chat("[[sim:fail-first-2:503]] flaky one")

    # WHEN it is called three times
    first = await call_error(endpoint, body)
    second = await call_error(endpoint, body)
    third = await endpoint.call(CHAT, body, timeout_s=10.0, custom_id="flaky")

    # THEN the first two are transient and the third is answered
    assert isinstance(first, EndpointHTTPError) and first.status_code == 503
    assert isinstance(second, EndpointHTTPError) and second.status_code == 503
    assert third.status_code == 200


async def test_a_hung_call_times_out_as_a_transient_error(endpoint: OpenAIHttpEndpoint) -> None:
    # GIVEN a request the simulator never answers
    # WHEN it is called with a 0.3 s timeout
    error = await call_error(endpoint, chat("[[sim:hang]]"), timeout_s=0.3)

    # THEN it is a timeout, worth retrying
    assert isinstance(error, EndpointTimeoutError)
    assert error.code == "timeout"


async def test_a_slow_answer_beyond_the_timeout_is_a_timeout(endpoint: OpenAIHttpEndpoint) -> None:
    # GIVEN a request the simulator answers after 2 s
    # WHEN it is called with a 0.3 s timeout
    error = await call_error(endpoint, chat("[[sim:sleep=2]]"), timeout_s=0.3)

    # THEN it timed out
    assert isinstance(error, EndpointTimeoutError)


async def test_a_closed_port_is_a_transient_connection_error(session: aiohttp.ClientSession) -> None:
    # GIVEN an endpoint on a port where nothing listens
    closed = OpenAIHttpEndpoint("default", session, f"http://127.0.0.1:{free_closed_port()}/v1")

    # WHEN it is called
    error = await call_error(closed, chat())

    # THEN it is a connection error, worth retrying
    assert isinstance(error, EndpointConnectionError)
    assert error.code == "connection"


# --------------------------------------------------------------------------------------------
# Helpers and hygiene
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "route", "expected"),
    [
        ("http://host/v1", "/v1/chat/completions", "http://host/v1/chat/completions"),
        ("http://host/v1/", "/v1/embeddings", "http://host/v1/embeddings"),
        ("http://host", "/v1/completions", "http://host/v1/completions"),
        ("http://host/", "/v1/completions", "http://host/v1/completions"),
        (
            "https://api.example.com/openai/v1",
            "/v1/chat/completions",
            "https://api.example.com/openai/v1/chat/completions",
        ),
        ("http://host:8000/api", "/v1/embeddings", "http://host:8000/api/v1/embeddings"),
    ],
)
def test_join_url_never_doubles_the_v1_prefix(base: str, route: str, expected: str) -> None:
    # GIVEN a base URL as OpenAI clients take it and a Batch-format route
    # WHEN they are joined
    url = join_url(base, route)

    # THEN the result is the route under the base, with /v1 once
    assert url == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500", "Retry-After": "9"}, 1.5),
        ({"Retry-After": "4"}, 4.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({}, None),
    ],
    ids=["ms-wins", "seconds", "http-date-ignored", "none"],
)
def test_retry_after_headers_are_read_in_seconds(headers: dict[str, str], expected: float | None) -> None:
    # GIVEN response headers
    # WHEN the retry delay is read
    value = parse_retry_after(headers)

    # THEN it is in seconds (or None)
    assert value == expected


def test_the_repr_never_shows_the_api_key(session: aiohttp.ClientSession) -> None:
    # GIVEN an endpoint configured with an API key
    endpoint = OpenAIHttpEndpoint("prod", session, "https://api.example.com/v1", api_key=SECRET)

    # WHEN it is shown (logs, tracebacks, debuggers)
    shown = [repr(endpoint), str(endpoint), f"{endpoint!r}", repr([endpoint])]

    # THEN the key appears nowhere, while the name and URL do
    assert all(SECRET not in text for text in shown)
    assert "prod" in repr(endpoint)
    assert "https://api.example.com/v1" in repr(endpoint)
