"""Tests of the OpenAI <-> Bedrock translation (shared/endpoints/bedrock_translate.py): pure
functions, no AWS and no network."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest

from shared.endpoints import bedrock_translate as tr
from shared.errors import PermanentError
from shared.results import Usage

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": list(messages), **extra}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def refusal(fn: Any, *args: Any, **kwargs: Any) -> PermanentError:
    with pytest.raises(PermanentError) as info:
        fn(*args, **kwargs)
    return info.value


# --------------------------------------------------------------------------------------------
# Chat completions -> Converse
# --------------------------------------------------------------------------------------------


def test_a_chat_request_becomes_a_converse_request_with_system_prompts_apart() -> None:
    # GIVEN a chat body with two system prompts, a user turn as a string and one as text parts
    body = chat(
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        user("Hello"),
        {"role": "assistant", "content": "Bonjour"},
        user([{"type": "text", "text": "How are "}, {"type": "text", "text": "you?"}]),
    )

    # WHEN it is translated
    request = tr.chat_to_converse(body)

    # THEN the system prompts go to `system`, the turns to `messages` as text blocks
    assert request["modelId"] == MODEL
    assert request["system"] == [{"text": "Be brief."}, {"text": "Answer in French."}]
    assert request["messages"] == [
        {"role": "user", "content": [{"text": "Hello"}]},
        {"role": "assistant", "content": [{"text": "Bonjour"}]},
        {"role": "user", "content": [{"text": "How are "}, {"text": "you?"}]},
    ]
    assert "inferenceConfig" not in request


def test_consecutive_turns_of_one_role_are_merged_since_converse_wants_them_to_alternate() -> None:
    # GIVEN two user messages in a row
    body = chat(user("first"), user("second"))

    # WHEN / THEN they become one user message with two blocks
    assert tr.chat_to_converse(body)["messages"] == [
        {"role": "user", "content": [{"text": "first"}, {"text": "second"}]}
    ]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"max_tokens": 64}, {"maxTokens": 64}),
        ({"max_completion_tokens": 32, "max_tokens": 64}, {"maxTokens": 32}),
        ({"temperature": 0.2, "top_p": 0.9}, {"temperature": 0.2, "topP": 0.9}),
        ({"stop": "END"}, {"stopSequences": ["END"]}),
        ({"stop": ["a", "b"]}, {"stopSequences": ["a", "b"]}),
        ({"temperature": 0}, {"temperature": 0}),
    ],
    ids=["max_tokens", "max_completion_tokens-wins", "sampling", "stop-string", "stop-list", "zero-temperature"],
)
def test_sampling_settings_become_the_inference_config(extra: dict[str, Any], expected: dict[str, Any]) -> None:
    # GIVEN / WHEN a chat body with sampling settings is translated
    request = tr.chat_to_converse(chat(user("hi"), **extra))

    # THEN they arrive under Converse's names
    assert request["inferenceConfig"] == expected


def test_the_model_comes_from_the_body_else_the_endpoints_default() -> None:
    # GIVEN a body without a model, and one with
    without = {"messages": [user("hi")]}

    # WHEN / THEN the default fills the gap, and the body's own model wins over it
    assert tr.chat_to_converse(without, default_model="amazon.nova-lite-v1:0")["modelId"] == "amazon.nova-lite-v1:0"
    assert tr.chat_to_converse(chat(user("hi")), default_model="amazon.nova-lite-v1:0")["modelId"] == MODEL
    assert refusal(tr.chat_to_converse, without).code == "invalid_request"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"model": MODEL}, "invalid_request"),
        (chat(), "invalid_request"),
        (chat({"role": "system", "content": "only a system prompt"}), "invalid_request"),
        (chat(user([{"type": "image_url", "image_url": {"url": "https://x/y.png"}}])), "invalid_request"),
        (chat(user(None)), "invalid_request"),
        (chat({"role": "tool", "content": "42", "tool_call_id": "c1"}), "unsupported_parameter"),
        (chat(user("hi"), tools=[{"type": "function", "function": {"name": "f"}}]), "unsupported_parameter"),
        (chat(user("hi"), response_format={"type": "json_object"}), "unsupported_parameter"),
        (chat(user("hi"), n=2), "unsupported_parameter"),
        (chat(user("hi"), stream=True), "unsupported_parameter"),
        (chat(user("hi"), stop=5), "invalid_request"),
    ],
    ids=[
        "no-messages",
        "empty-messages",
        "system-only",
        "image-part",
        "null-content",
        "tool-role",
        "tools",
        "json-mode",
        "n-2",
        "stream",
        "stop-number",
    ],
)
def test_what_converse_cannot_express_is_refused_permanently(body: dict[str, Any], code: str) -> None:
    # GIVEN / WHEN a body that cannot be translated faithfully
    error = refusal(tr.chat_to_converse, body)

    # THEN it is a permanent 400 with a reason, never a silently different request
    assert (error.status_code, error.code) == (400, code)
    assert error.message


def test_harmless_defaults_are_accepted() -> None:
    # GIVEN settings that ask for nothing Converse lacks
    body = chat(user("hi"), n=1, stream=False, logprobs=False, response_format={"type": "text"})

    # WHEN / THEN the body translates
    assert tr.chat_to_converse(body)["messages"] == [{"role": "user", "content": [{"text": "hi"}]}]


# --------------------------------------------------------------------------------------------
# Converse -> chat.completion
# --------------------------------------------------------------------------------------------


def converse_answer(stop_reason: str = "end_turn", *texts: str) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": t} for t in texts or ("Hi!",)]}},
        "stopReason": stop_reason,
        "usage": {"inputTokens": 11, "outputTokens": 3, "totalTokens": 14},
        "metrics": {"latencyMs": 120},
        "ResponseMetadata": {"RequestId": "req-1", "HTTPStatusCode": 200},
    }


def test_a_converse_answer_becomes_a_chat_completion() -> None:
    # GIVEN a Converse answer in two text blocks
    answer = converse_answer("end_turn", "Hello, ", "world")

    # WHEN it is translated
    body = tr.converse_to_chat(answer, model=MODEL, request_id="req-1", created=1_700_000_000)

    # THEN it has OpenAI's chat.completion shape, text joined, usage under OpenAI's names
    assert body == {
        "id": "chatcmpl-req-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello, world"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
    }
    assert Usage.from_body(body) == Usage(11, 3)


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
    ],
)
def test_stop_reasons_map_to_openai_finish_reasons(stop_reason: str, finish_reason: str) -> None:
    # GIVEN / WHEN a Converse answer that stopped for this reason is translated
    body = tr.converse_to_chat(converse_answer(stop_reason), model=MODEL, request_id="r", created=0)

    # THEN the finish reason is OpenAI's word for it
    assert body["choices"][0]["finish_reason"] == finish_reason


# --------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------


def test_embedding_inputs_are_one_string_per_call() -> None:
    # GIVEN / WHEN / THEN a string is one input, a list is many, in order
    assert tr.embedding_inputs({"input": "one"}) == ["one"]
    assert tr.embedding_inputs({"input": ["a", "b"]}) == ["a", "b"]
    assert tr.titan_embedding_request("a", {"dimensions": 256}) == {"inputText": "a", "dimensions": 256}
    assert tr.titan_embedding_request("a", {}) == {"inputText": "a"}


@pytest.mark.parametrize(
    "body",
    [{}, {"input": []}, {"input": [1, 2, 3]}, {"input": [[1, 2]]}, {"input": "x", "encoding_format": "int8"}],
    ids=["missing", "empty", "token-ids", "token-arrays", "bad-encoding"],
)
def test_embedding_inputs_titan_cannot_take_are_refused(body: dict[str, Any]) -> None:
    # GIVEN / WHEN / THEN the body is refused permanently
    assert refusal(tr.embedding_inputs, body).status_code == 400


def test_titan_answers_become_an_openai_embeddings_list() -> None:
    # GIVEN two Titan answers
    answers = [{"embedding": [0.5, -0.25], "inputTextTokenCount": 3}, {"embedding": [1, 0], "inputTextTokenCount": 2}]

    # WHEN they are read and assembled
    body = tr.embeddings_list([tr.titan_embedding(a) for a in answers], model="amazon.titan-embed-text-v2:0")

    # THEN the list is in input order and usage sums the inputs' tokens
    assert body["object"] == "list" and body["model"] == "amazon.titan-embed-text-v2:0"
    assert [(d["object"], d["index"], d["embedding"]) for d in body["data"]] == [
        ("embedding", 0, [0.5, -0.25]),
        ("embedding", 1, [1.0, 0.0]),
    ]
    assert body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}


def test_base64_embeddings_are_little_endian_float32_as_openai_sends_them() -> None:
    # GIVEN / WHEN a vector is asked for in base64
    body = tr.embeddings_list([([0.5, -2.0], 1)], model="m", encoding_format="base64")

    # THEN decoding it gives the vector back
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert struct.unpack("<2f", raw) == (0.5, -2.0)


def test_an_answer_without_an_embedding_is_a_permanent_failure() -> None:
    # GIVEN / WHEN / THEN a text model's answer on the embeddings route is refused
    assert refusal(tr.titan_embedding, {"results": []}).code == "unexpected_response"


# --------------------------------------------------------------------------------------------
# Bedrock records
# --------------------------------------------------------------------------------------------


def test_record_usage_comes_from_bedrocks_token_count_headers() -> None:
    # GIVEN headers as botocore reports them (lower case), and a body with other numbers
    headers = {"x-amzn-bedrock-input-token-count": "17", "x-amzn-bedrock-output-token-count": "5"}
    body = {"usage": {"input_tokens": 1, "output_tokens": 1}}

    # WHEN / THEN the headers win, in any letter case
    assert tr.record_usage(headers, body) == Usage(17, 5)
    assert tr.record_usage({"X-Amzn-Bedrock-Input-Token-Count": "4"}, body) == Usage(4, 0)


def test_record_usage_falls_back_to_the_body_without_the_headers() -> None:
    # GIVEN / WHEN / THEN an Anthropic body's own usage is read when no header came
    assert tr.record_usage({}, {"usage": {"input_tokens": 9, "output_tokens": 4}}) == Usage(9, 4)
