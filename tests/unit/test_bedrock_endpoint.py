"""Tests of ``BedrockEndpoint`` (shared/endpoints/bedrock.py): the real aiobotocore client,
built by the endpoint factory, against the Bedrock fake over real HTTP (moto implements
only an empty InvokeModel for bedrock-runtime); and the error classification on its own."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

from llmbatch.local.bedrock_fake import ERROR_STATUS, FakeBedrock, RunningFake, start_bedrock_fake
from shared.endpoints.aws_sdk import classify_botocore_error
from shared.endpoints.base import Endpoint
from shared.endpoints.bedrock import PERMANENT_CODES, TRANSIENT_CODES, classify_client_error
from shared.endpoints.factory import EndpointFactory
from shared.endpoints.specs import parse_endpoints
from shared.errors import EndpointConnectionError as OurConnectionError
from shared.errors import EndpointHTTPError, EndpointTimeoutError, PermanentError, TransientError
from shared.messages import BEDROCK_RECORD_ROUTE
from shared.results import Usage

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
TITAN_EMBED = "amazon.titan-embed-text-v2:0"


@pytest.fixture
async def fake() -> AsyncIterator[RunningFake]:
    running = await start_bedrock_fake(FakeBedrock())
    yield running
    await running.close()


#: One SDK session for the module: it caches the service model, which each client would
#: otherwise load again (clients, which belong to a loop, are still made per test).
AWS = get_session()
AWS.set_credentials("testing", "testing")


async def build(specs_json: str) -> tuple[dict[str, Endpoint], AsyncExitStack]:
    stack = AsyncExitStack()
    endpoints = await EndpointFactory(stack, call_timeout_s=30, aws_session=AWS).build(parse_endpoints(specs_json))
    return endpoints, stack


@pytest.fixture
async def bedrock(fake: RunningFake) -> AsyncIterator[Endpoint]:
    spec = f'{{"claude": {{"kind": "bedrock", "region": "us-east-1", "default_model": "{CLAUDE}", "endpoint_url": "{fake.url}"}}}}'
    endpoints, stack = await build(spec)
    async with stack:
        yield endpoints["claude"]


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


async def failure(endpoint: Endpoint, route: str, body: dict[str, Any], timeout_s: float = 10.0) -> Exception:
    try:
        reply = await endpoint.call(route, body, timeout_s=timeout_s, custom_id="req-x")
    except Exception as e:
        return e
    raise AssertionError(f"expected a failure, got {reply!r}")


# --------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------


async def test_a_chat_request_is_answered_through_converse_in_openai_shape(
    bedrock: Endpoint, fake: RunningFake
) -> None:
    # GIVEN a chat body with a system prompt and a token limit, and no model (the default's)
    body = {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "one two three four"}],
        "max_tokens": 3,
    }

    # WHEN it is sent
    reply = await bedrock.call(CHAT, body, timeout_s=10, custom_id="c1")

    # THEN the answer is a chat.completion, cut at max_tokens, with Converse's usage
    assert reply.status_code == 200
    assert reply.body["object"] == "chat.completion" and reply.body["model"] == CLAUDE
    choice = reply.body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "echo: one two"}
    assert choice["finish_reason"] == "length"
    assert reply.usage == Usage(prompt_tokens=2 + 4, completion_tokens=3)
    assert reply.request_id and reply.body["id"] == f"chatcmpl-{reply.request_id}"
    assert fake.fake.stats.calls["converse"] == 1


async def test_stop_sequences_reach_bedrock(bedrock: Endpoint) -> None:
    # GIVEN / WHEN a request with a stop string that the answer contains
    reply = await bedrock.call(CHAT, chat("alpha beta gamma", stop="gamma"), timeout_s=10, custom_id="c1")

    # THEN the answer stops before it
    assert reply.body["choices"][0]["message"]["content"] == "echo: alpha beta "
    assert reply.body["choices"][0]["finish_reason"] == "stop"


async def test_embeddings_make_one_invoke_model_call_per_input(bedrock: Endpoint, fake: RunningFake) -> None:
    # GIVEN an embeddings body with three inputs
    body = {"model": TITAN_EMBED, "input": ["a b", "c", "d e f"], "dimensions": 4}

    # WHEN it is sent
    reply = await bedrock.call(EMBEDDINGS, body, timeout_s=10, custom_id="e1")

    # THEN three calls answered, in input order, usage from Titan's input token counts
    assert fake.fake.stats.calls["invoke"] == 3
    assert [d["index"] for d in reply.body["data"]] == [0, 1, 2]
    assert all(len(d["embedding"]) == 4 for d in reply.body["data"])
    assert reply.body["data"][0]["embedding"] != reply.body["data"][1]["embedding"]
    assert reply.usage == Usage(prompt_tokens=2 + 1 + 3, completion_tokens=0)


async def test_a_bedrock_record_runs_unchanged_on_the_default_model(bedrock: Endpoint, fake: RunningFake) -> None:
    # GIVEN a Bedrock batch record's modelInput for Claude, in Anthropic's own format
    model_input = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "summarise this"}]}],
    }

    # WHEN it is sent on the record route
    reply = await bedrock.call(BEDROCK_RECORD_ROUTE, model_input, timeout_s=10, custom_id="r1")

    # THEN the model's own JSON comes back, usage from Bedrock's token-count headers
    assert reply.body["type"] == "message"
    assert reply.body["content"][0]["text"] == "echo: summarise this"
    assert reply.usage == Usage(prompt_tokens=2, completion_tokens=3)
    assert fake.fake.stats.calls["invoke"] == 1


async def test_a_record_needs_the_endpoints_default_model(fake: RunningFake) -> None:
    # GIVEN a Bedrock endpoint without a default model
    endpoints, stack = await build(
        f'{{"b": {{"kind": "bedrock", "region": "us-east-1", "endpoint_url": "{fake.url}"}}}}'
    )
    async with stack:
        # WHEN a record is sent to it
        error = await failure(endpoints["b"], BEDROCK_RECORD_ROUTE, {"inputText": "x"})

    # THEN it is refused permanently, without a call
    assert isinstance(error, PermanentError) and "default_model" in error.message
    assert sum(fake.fake.stats.calls.values()) == 0


async def test_the_completions_route_is_refused_as_unsupported(bedrock: Endpoint, fake: RunningFake) -> None:
    # GIVEN / WHEN a legacy completions body is sent to Bedrock
    error = await failure(bedrock, "/v1/completions", {"prompt": "hi"})

    # THEN it fails permanently as an unsupported route, and Bedrock is not called
    assert isinstance(error, PermanentError) and error.code == "unsupported_route"
    assert sum(fake.fake.stats.calls.values()) == 0


# --------------------------------------------------------------------------------------------
# Failures, as Bedrock sends them
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(TRANSIENT_CODES))
async def test_bedrocks_transient_errors_go_back_to_sqs_after_one_attempt(
    bedrock: Endpoint, fake: RunningFake, code: str
) -> None:
    # GIVEN a request Bedrock answers with this error
    text = f"[[bedrock:{code}]] please"

    # WHEN it is sent
    error = await failure(bedrock, CHAT, chat(text))

    # THEN it is transient, with Bedrock's status and code, and the SDK did not retry it
    assert isinstance(error, EndpointHTTPError)
    assert (error.status_code, error.code) == (ERROR_STATUS[code], code)
    assert fake.fake.stats.attempts_by_request[text] == 1


@pytest.mark.parametrize("code", sorted(PERMANENT_CODES))
async def test_bedrocks_permanent_errors_are_recorded(bedrock: Endpoint, fake: RunningFake, code: str) -> None:
    # GIVEN / WHEN a request Bedrock refuses with this error
    error = await failure(bedrock, CHAT, chat(f"[[bedrock:{code}]] please"))

    # THEN it is permanent, with Bedrock's status, code and message
    assert isinstance(error, PermanentError)
    assert (error.status_code, error.code) == (ERROR_STATUS[code], code)
    assert code in error.message


async def test_bedrocks_own_validation_is_a_permanent_failure(bedrock: Endpoint) -> None:
    # GIVEN a conversation Bedrock refuses (blank text), and a model id it does not know
    blank = await failure(bedrock, CHAT, chat(" "))
    unknown = await failure(bedrock, CHAT, chat("hi", model="gpt-4o-mini"))

    # WHEN / THEN both are ValidationException, recorded as 400s
    for error in (blank, unknown):
        assert isinstance(error, PermanentError) and (error.status_code, error.code) == (400, "ValidationException")


async def test_a_parameter_botocore_refuses_is_a_permanent_failure_without_a_call(
    bedrock: Endpoint, fake: RunningFake
) -> None:
    # GIVEN / WHEN a temperature of the wrong type
    error = await failure(bedrock, CHAT, chat("hi", temperature="hot"))

    # THEN botocore's own check refuses it before sending, and it is recorded, not retried
    assert isinstance(error, PermanentError) and error.code == "invalid_request"
    assert sum(fake.fake.stats.calls.values()) == 0


async def test_a_slow_model_times_out_as_a_transient_failure(bedrock: Endpoint) -> None:
    # GIVEN / WHEN a call that answers later than its timeout
    error = await failure(bedrock, CHAT, chat("[[bedrock:sleep-3]] slow"), timeout_s=0.3)

    # THEN it is a transient timeout
    assert isinstance(error, EndpointTimeoutError) and error.code == "timeout"


async def test_an_unreachable_bedrock_is_a_transient_connection_failure() -> None:
    # GIVEN a Bedrock endpoint URL where nothing listens
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoints, stack = await build(
        f'{{"b": {{"kind": "bedrock", "region": "us-east-1", "default_model": "{CLAUDE}", "endpoint_url": "http://127.0.0.1:{port}"}}}}'
    )
    async with stack:
        # WHEN a request is sent
        error = await failure(endpoints["b"], CHAT, chat("hi"))

    # THEN it is transient
    assert isinstance(error, OurConnectionError) and error.code == "connection"


# --------------------------------------------------------------------------------------------
# Classification on its own (no network)
# --------------------------------------------------------------------------------------------


def client_error(code: str, status: int, message: str = "m") -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "Converse")


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("ThrottlingException", 429, TransientError),
        ("ServiceUnavailableException", 503, TransientError),
        ("InternalServerException", 500, TransientError),
        ("ModelNotReadyException", 429, TransientError),
        ("ModelTimeoutException", 408, TransientError),
        ("ServiceQuotaExceededException", 400, TransientError),
        ("ValidationException", 400, PermanentError),
        ("AccessDeniedException", 403, PermanentError),
        ("ResourceNotFoundException", 404, PermanentError),
        ("ModelErrorException", 424, PermanentError),
        ("SomethingNewException", 502, TransientError),
        ("SomethingNewException", 429, TransientError),
        ("UnrecognizedClientException", 403, PermanentError),
    ],
)
def test_client_errors_are_classified_by_code_then_by_status(code: str, status: int, kind: type) -> None:
    # GIVEN / WHEN an error answer is classified
    error = classify_client_error(client_error(code, status, "why"))

    # THEN it has the right type, keeps the status and code, and says why
    assert isinstance(error, kind)
    assert (error.status_code, error.code) == (status, code)
    assert "why" in error.message


def test_sdk_failures_are_classified_like_http_ones() -> None:
    # GIVEN / WHEN / THEN timeouts and connection failures are transient
    assert isinstance(classify_botocore_error("Bedrock", ReadTimeoutError(endpoint_url="u"), 5), EndpointTimeoutError)
    assert isinstance(
        classify_botocore_error("Bedrock", ConnectTimeoutError(endpoint_url="u"), 5), EndpointTimeoutError
    )
    assert isinstance(
        classify_botocore_error("Bedrock", EndpointConnectionError(endpoint_url="u"), 5), OurConnectionError
    )
