"""``SageMakerEndpoint`` (shared/endpoints/sagemaker.py) over real HTTP: the real aiobotocore
client against moto's server, whose InvokeEndpoint answers with bodies queued through
moto's API (``/moto-api/static/sagemaker/endpoint-results``). The answers are a recorded
TGI answer and an LMI answer of the documented shape; moto, running in this process,
also shows what reached it, so the request's wire form is checked too."""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiobotocore.session import get_session
from moto.sagemakerruntime.models import sagemakerruntime_backends

from llmbatch.local.moto_server import MotoServer
from shared.endpoints.factory import model_client_config
from shared.endpoints.sagemaker import SageMakerEndpoint, inference_id
from shared.endpoints.sagemaker_mapping import MAPPINGS
from shared.errors import EndpointHTTPError, PermanentError
from shared.results import Usage
from tests.unit.test_sagemaker_mapping import (
    LMI_DOCUMENTED,
    LMI_DOCUMENTED_PROMPT,
    TGI_RECORDED,
    TGI_RECORDED_PROMPT,
)

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
ACCOUNT, REGION = "123456789012", "us-east-1"

#: A real answer of TGI's Messages API (TGI 2.0.5, TinyLlama-1.1B-Chat), recorded by TGI's
#: integration tests (integration-tests/models/__snapshots__/test_chat_llama/
#: test_flash_llama_simple.json), quirks included ("object": "text_completion", "id": "").
TGI_MESSAGES_RECORDED: dict[str, Any] = {
    "choices": [
        {
            "finish_reason": "length",
            "index": 0,
            "logprobs": None,
            "message": {
                "content": "As of your last question, the weather in Brooklyn, New York, is typically hot and humid "
                "throughout the year. The suburbs around New York City are jealously sheltered, and at least in "
                "the Lower Bronx, there are very few outdoor environments to explore in the middle of urban "
                "confines. In fact, typical times for humidity levels in Brooklyn include:\n\n- Early morning: "
                "80-85% humidity, with occas",
                "name": None,
                "role": "assistant",
                "tool_calls": None,
            },
            "usage": None,
        }
    ],
    "created": 1716553098,
    "id": "",
    "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    "object": "text_completion",
    "system_fingerprint": "2.0.5-dev0-native",
    "usage": {"completion_tokens": 100, "prompt_tokens": 62, "total_tokens": 162},
}


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with MotoServer() as server:
        yield server.url


def moto_api(url: str, path: str, payload: dict[str, Any] | None = None) -> None:
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url + path, data=data, method="POST", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).close()


@pytest.fixture
def moto(moto_url: str) -> str:
    """moto emptied: no queued answers, nothing received."""
    moto_api(moto_url, "/moto-api/reset")
    return moto_url


def queue_answer(url: str, body: Any, content_type: str = "application/json") -> None:
    text = body if isinstance(body, str) else json.dumps(body)
    moto_api(
        url, "/moto-api/static/sagemaker/endpoint-results", {"results": [{"Body": text, "ContentType": content_type}]}
    )


def received() -> list[dict[str, Any]]:
    """Every InvokeEndpoint moto answered since the reset: its Accept and SageMaker headers and body."""
    backend = sagemakerruntime_backends[ACCOUNT][REGION]
    return [json.loads(base64.b64decode(key)) for per_endpoint in backend.results.values() for key in per_endpoint]


@pytest.fixture
async def client(moto_url: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "sagemaker-runtime",
        region_name=REGION,
        endpoint_url=moto_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=model_client_config(30.0),
    ) as c:
        yield c


async def test_a_recorded_tgi_answer_comes_back_as_an_openai_text_completion(moto: str, client: Any) -> None:
    # GIVEN a TGI endpoint answering with TGI's recorded answer
    queue_answer(moto, TGI_RECORDED)
    endpoint = SageMakerEndpoint("llama", client, "llama-3-8b-tgi", "tgi")
    body = {"model": "llama-3-8b", "prompt": TGI_RECORDED_PROMPT, "max_tokens": 10, "temperature": 0}
    # WHEN a completions request is made
    reply = await endpoint.call(COMPLETIONS, body, timeout_s=10.0, custom_id="req-tgi-1")
    # THEN the answer is OpenAI's, with TGI's text and token count
    assert reply.status_code == 200
    assert reply.body["object"] == "text_completion"
    assert reply.body["choices"][0]["text"] == TGI_RECORDED[0]["generated_text"]
    assert reply.body["choices"][0]["finish_reason"] == "length"
    assert reply.usage.completion_tokens == TGI_RECORDED[0]["details"]["generated_tokens"]
    assert reply.body["usage"]["estimated"] == ["prompt_tokens"]
    # AND the request id is SageMaker's (from the response metadata), also in the answer's id
    assert reply.request_id
    assert reply.body["id"] == f"cmpl-{reply.request_id}"
    # AND moto received TGI's native request as JSON, with the request's id as InferenceId
    [sent] = received()
    assert json.loads(sent["Body"]) == MAPPINGS["tgi"].request(COMPLETIONS, body, default_model=None)
    assert sent["Accept"] == "application/json"
    assert {k.lower(): v for k, v in sent.items()}["x-amzn-sagemaker-inference-id"] == "req-tgi-1"


async def test_an_lmi_answer_comes_back_as_an_openai_chat_completion(moto: str, client: Any) -> None:
    # GIVEN an LMI endpoint with a default model name for the answers
    queue_answer(moto, LMI_DOCUMENTED)
    endpoint = SageMakerEndpoint("mistral", client, "mistral-lmi", "lmi", default_model="mistral-7b")
    body = {"messages": [{"role": "user", "content": LMI_DOCUMENTED_PROMPT}], "max_tokens": 32, "stop": ["\n"]}
    # WHEN a chat request is made
    reply = await endpoint.call(CHAT, body, timeout_s=10.0, custom_id="req-lmi-1")
    # THEN it is a chat.completion named after the default model
    assert reply.body["object"] == "chat.completion"
    assert reply.body["model"] == "mistral-7b"
    assert reply.body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Deep Learning is a really cool field",
    }
    assert reply.body["choices"][0]["finish_reason"] == "stop"
    assert reply.usage.completion_tokens == LMI_DOCUMENTED["details"]["generated_tokens"]
    # AND LMI got its stop sequences under its own name
    [sent] = received()
    params = json.loads(sent["Body"])["parameters"]
    assert params["stop_sequences"] == ["\n"]
    assert params["max_new_tokens"] == 32


async def test_the_openai_mapping_passes_a_recorded_messages_api_answer_through(moto: str, client: Any) -> None:
    # GIVEN a TGI endpoint served through its Messages API
    queue_answer(moto, TGI_MESSAGES_RECORDED)
    endpoint = SageMakerEndpoint("tiny", client, "tinyllama", "openai", default_model="tgi")
    body = {"messages": [{"role": "user", "content": "What is the weather like in Brooklyn?"}], "max_tokens": 100}
    # WHEN called
    reply = await endpoint.call(CHAT, body, timeout_s=10.0, custom_id="req-openai-1")
    # THEN the answer is returned exactly as the container sent it, with its usage recorded
    assert reply.body == TGI_MESSAGES_RECORDED
    assert reply.usage == Usage(62, 100)
    # AND the body went unchanged, with the endpoint's model filled in
    [sent] = received()
    assert json.loads(sent["Body"]) == {**body, "model": "tgi"}


async def test_an_answer_that_is_not_json_is_transient(moto: str, client: Any) -> None:
    # GIVEN a container answering plain text (a proxy's error page, say)
    queue_answer(moto, "<html>upstream busy</html>", content_type="text/html")
    endpoint = SageMakerEndpoint("llama", client, "llama-3-8b-tgi", "tgi")
    with pytest.raises(EndpointHTTPError) as info:
        await endpoint.call(COMPLETIONS, {"prompt": "x"}, timeout_s=10.0, custom_id="req-html")
    assert info.value.code == "bad_body"
    assert info.value.status_code == 200


async def test_a_json_answer_of_the_wrong_shape_is_permanent(moto: str, client: Any) -> None:
    # GIVEN an endpoint configured as TGI whose container speaks the Messages API
    queue_answer(moto, TGI_MESSAGES_RECORDED)
    endpoint = SageMakerEndpoint("llama", client, "llama-3-8b-tgi", "tgi")
    with pytest.raises(PermanentError) as info:
        await endpoint.call(COMPLETIONS, {"prompt": "x"}, timeout_s=10.0, custom_id="req-shape")
    assert info.value.code == "unexpected_response"


async def test_embeddings_through_tgi_are_refused_before_any_call(moto: str, client: Any) -> None:
    endpoint = SageMakerEndpoint("llama", client, "llama-3-8b-tgi", "tgi")
    with pytest.raises(PermanentError) as info:
        await endpoint.call("/v1/embeddings", {"input": "hello"}, timeout_s=10.0, custom_id="req-emb")
    assert info.value.code == "unsupported_route"
    assert received() == []


@pytest.mark.parametrize(
    ("custom_id", "sent"),
    [("request-1", "request-1"), ("x" * 64, "x" * 64), ("x" * 65, None), ("résumé-1", None), (" padded", None)],
)
def test_the_request_id_is_sent_as_inference_id_only_when_sagemaker_accepts_it(
    custom_id: str, sent: str | None
) -> None:
    # SageMaker refuses an InferenceId over 64 characters or outside printable ASCII: such a
    # request goes without one rather than fail.
    assert inference_id(custom_id) == sent
