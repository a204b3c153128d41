"""Tests of the SageMaker container mappings (shared/endpoints/sagemaker_mapping.py), without
AWS: OpenAI requests become the JSON each container takes, and each container's answer
becomes an OpenAI answer, with usage counted where the container reports it and estimated
(and flagged) where it does not."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from shared.endpoints.sagemaker_mapping import CHARS_PER_TOKEN, MAPPINGS, chat_prompt, mapping_for
from shared.errors import ConfigError, PermanentError
from shared.results import Usage

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"

#: A real answer of TGI's native API, recorded by TGI's own integration tests
#: (huggingface/text-generation-inference, integration-tests/models/__snapshots__/
#: test_flash_llama/test_flash_llama.json, prompt "Test request", max_new_tokens 10,
#: decoder_input_details on), wrapped in the one-item list that TGI's SageMaker route
#: (``compat_generate``: "wrap generation inside a Vec") answers with.
TGI_RECORDED: list[dict[str, Any]] = [
    {
        "details": {
            "best_of_sequences": None,
            "finish_reason": "length",
            "generated_tokens": 10,
            "prefill": [
                {"id": 1, "logprob": None, "text": "<s>"},
                {"id": 4321, "logprob": -8.6875, "text": "Test"},
                {"id": 2009, "logprob": -11.546875, "text": "request"},
            ],
            "seed": None,
            "tokens": [
                {"id": 363, "logprob": -1.5351562, "special": False, "text": " for"},
                {"id": 847, "logprob": -2.5722656, "special": False, "text": " /"},
                {"id": 2754, "logprob": -2.2714844, "special": False, "text": "api"},
                {"id": 29914, "logprob": -0.03414917, "special": False, "text": "/"},
                {"id": 29894, "logprob": -0.95996094, "special": False, "text": "v"},
                {"id": 29896, "logprob": -0.3635254, "special": False, "text": "1"},
                {"id": 29914, "logprob": -0.013031006, "special": False, "text": "/"},
                {"id": 16418, "logprob": -3.1523438, "special": False, "text": "projects"},
                {"id": 29914, "logprob": -0.43701172, "special": False, "text": "/"},
                {"id": 29896, "logprob": -1.9394531, "special": False, "text": "1"},
            ],
            "top_tokens": None,
        },
        "generated_text": " for /api/v1/projects/1",
    }
]
TGI_RECORDED_PROMPT = "Test request"

#: An LMI rolling-batch answer with ``details: true``: the fields are those LMI's JSON output
#: formatter writes (deepjavalibrary/djl-serving, djl_python/output_formatter.py); the values
#: are the example of docs/lmi/user_guides/lmi_input_output_schema.md, whose token list the
#: docs elide, filled in to the 8 tokens it counts. (No recorded LMI answer was at hand.)
LMI_DOCUMENTED: dict[str, Any] = {
    "generated_text": " Deep Learning is a really cool field",
    "details": {
        "finish_reason": "eos_token",
        "generated_tokens": 8,
        "inputs": "What is Deep Learning?",
        "tokens": [
            {"id": 304, "text": " Deep", "log_prob": -0.052432529628276825},
            {"id": 11157, "text": " Learning", "log_prob": -1.2865009307861328},
            {"id": 278, "text": " is", "log_prob": -0.007458459585905075},
            {"id": 263, "text": " a", "log_prob": -0.2301},
            {"id": 2289, "text": " really", "log_prob": -0.8812},
            {"id": 12528, "text": " cool", "log_prob": -0.4410},
            {"id": 1746, "text": " field", "log_prob": -0.6950479745864868},
            {"id": 2, "text": "</s>", "log_prob": -0.1012},
        ],
    },
}
LMI_DOCUMENTED_PROMPT = "What is Deep Learning?"


def chat_body(*messages: tuple[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "llama-3-8b", "messages": [{"role": r, "content": c} for r, c in messages], **extra}


def request(mapping: str, route: str, body: dict[str, Any], default_model: str | None = None) -> dict[str, Any]:
    return MAPPINGS[mapping].request(route, body, default_model=default_model)


def refusal(mapping: str, route: str, body: dict[str, Any]) -> PermanentError:
    with pytest.raises(PermanentError) as info:
        request(mapping, route, body)
    return info.value


def answer(mapping: str, route: str, body: dict[str, Any], raw: Any) -> tuple[dict[str, Any], Usage]:
    got = MAPPINGS[mapping].answer(route, body, raw, model="llama-3-8b", request_id="req-abc", created=1_700_000_000)
    return got.body, got.usage


def estimate(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


# --------------------------------------------------------------------------------------------
# Requests to TGI and LMI
# --------------------------------------------------------------------------------------------


def test_chat_messages_become_one_prompt_with_the_documented_role_template() -> None:
    # GIVEN a conversation with a system prompt and an earlier exchange
    messages = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": [{"type": "text", "text": "Name a "}, {"type": "text", "text": "colour."}]},
    ]
    # WHEN it is flattened
    prompt = chat_prompt(messages)
    # THEN each turn is "Role: text", a blank line apart, ending with the assistant's cue
    assert prompt == "System: Be terse.\n\nUser: Hi\n\nAssistant: Hello.\n\nUser: Name a colour.\n\nAssistant:"


@pytest.mark.parametrize(("mapping", "stop_field"), [("tgi", "stop"), ("lmi", "stop_sequences")])
def test_a_chat_request_becomes_inputs_and_parameters_with_the_containers_stop_field(
    mapping: str, stop_field: str
) -> None:
    # GIVEN an OpenAI chat body with the usual sampling settings
    body = chat_body(("user", "Hello"), max_tokens=64, temperature=0.7, top_p=0.9, stop="\n\n", seed=42)
    # WHEN it is mapped for the container
    sent = request(mapping, CHAT, body)
    # THEN the prompt and every setting arrive under the container's names
    assert sent == {
        "inputs": "User: Hello\n\nAssistant:",
        "parameters": {
            "details": True,
            "return_full_text": False,
            "max_new_tokens": 64,
            "temperature": 0.7,
            "top_p": 0.9,
            "do_sample": True,
            stop_field: ["\n\n"],
            "seed": 42,
        },
    }
    # AND the result is plain JSON
    json.dumps(sent)


@pytest.mark.parametrize("mapping", ["tgi", "lmi"])
def test_temperature_zero_means_greedy_decoding_without_a_temperature(mapping: str) -> None:
    # GIVEN temperature 0 (which TGI refuses as a value) and a top_p that greedy decoding ignores
    body = chat_body(("user", "Hello"), temperature=0, top_p=0.5)
    # WHEN mapped
    params = request(mapping, CHAT, body)["parameters"]
    # THEN sampling is off and neither value is sent
    assert params["do_sample"] is False
    assert "temperature" not in params
    assert "top_p" not in params


def test_a_top_p_of_one_filters_nothing_and_is_left_out() -> None:
    # GIVEN top_p 1.0, which TGI refuses as a value
    params = request("tgi", CHAT, chat_body(("user", "Hello"), top_p=1.0, max_completion_tokens=9))["parameters"]
    # THEN it is not sent, and max_completion_tokens counts as max_tokens
    assert "top_p" not in params
    assert "do_sample" not in params
    assert params["max_new_tokens"] == 9


def test_without_sampling_settings_the_containers_defaults_apply() -> None:
    params = request("lmi", COMPLETIONS, {"prompt": "Once upon a time"})["parameters"]
    assert params == {"details": True, "return_full_text": False}


@pytest.mark.parametrize("prompt", ["Once upon a time", ["Once upon a time"]])
def test_a_completions_prompt_is_sent_as_the_inputs(prompt: Any) -> None:
    sent = request("tgi", COMPLETIONS, {"model": "m", "prompt": prompt, "max_tokens": 5})
    assert sent["inputs"] == "Once upon a time"
    assert sent["parameters"]["max_new_tokens"] == 5


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"prompt": ["one", "two"]}, "unsupported_parameter"),
        ({"prompt": [1, 2, 3]}, "invalid_request"),
        ({}, "invalid_request"),
        ({"prompt": "x", "max_tokens": 0}, "invalid_request"),
        ({"prompt": "x", "max_tokens": "ten"}, "invalid_request"),
        ({"prompt": "x", "temperature": "hot"}, "invalid_request"),
        ({"prompt": "x", "stop": 7}, "invalid_request"),
        ({"prompt": "x", "echo": True}, "unsupported_parameter"),
        ({"prompt": "x", "best_of": 3}, "unsupported_parameter"),
    ],
)
def test_a_completions_body_that_cannot_be_sent_is_refused_permanently(body: dict[str, Any], code: str) -> None:
    error = refusal("tgi", COMPLETIONS, body)
    assert error.code == code
    assert error.status_code == 400


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tool definitions"),
        ({"n": 2}, "n > 1"),
        ({"logprobs": True}, "logprobs"),
        ({"stream": True}, "streaming"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ],
)
@pytest.mark.parametrize("mapping", ["tgi", "lmi"])
def test_a_feature_the_native_api_cannot_express_is_refused_naming_it(
    mapping: str, extra: dict[str, Any], named: str
) -> None:
    error = refusal(mapping, CHAT, chat_body(("user", "Hello"), **extra))
    assert error.code == "unsupported_parameter"
    assert named in error.message
    assert "'openai' mapping" in error.message


def test_neutral_values_of_those_features_are_accepted() -> None:
    body = chat_body(
        ("user", "Hello"),
        n=1,
        stream=False,
        logprobs=False,
        presence_penalty=0,
        frequency_penalty=0.0,
        response_format={"type": "text"},
        tools=[],
    )
    assert request("tgi", CHAT, body)["inputs"] == "User: Hello\n\nAssistant:"


@pytest.mark.parametrize(
    ("messages", "code"),
    [
        ([], "invalid_request"),
        ([{"role": "tool", "content": "42"}], "unsupported_parameter"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "invalid_request"),
        ([{"role": "user", "content": 5}], "invalid_request"),
        (["hello"], "invalid_request"),
    ],
)
def test_messages_that_cannot_become_a_prompt_are_refused(messages: list[Any], code: str) -> None:
    assert refusal("lmi", CHAT, {"messages": messages}).code == code


@pytest.mark.parametrize("mapping", ["tgi", "lmi"])
def test_embeddings_are_refused_as_an_unsupported_route(mapping: str) -> None:
    assert EMBEDDINGS not in MAPPINGS[mapping].routes
    assert refusal(mapping, EMBEDDINGS, {"input": "hello"}).code == "unsupported_route"


# --------------------------------------------------------------------------------------------
# Answers of TGI and LMI
# --------------------------------------------------------------------------------------------


def test_a_recorded_tgi_answer_becomes_a_text_completion_with_its_generated_token_count() -> None:
    # GIVEN TGI's recorded answer to a completions request
    body = {"model": "llama-3-8b", "prompt": TGI_RECORDED_PROMPT, "max_tokens": 10}
    # WHEN it is read
    got, usage = answer("tgi", COMPLETIONS, body, TGI_RECORDED)
    # THEN it is OpenAI's text_completion with the generated text unchanged
    assert got["object"] == "text_completion"
    assert got["id"] == "cmpl-req-abc"
    assert got["model"] == "llama-3-8b"
    assert got["created"] == 1_700_000_000
    assert got["choices"] == [
        {"index": 0, "text": " for /api/v1/projects/1", "logprobs": None, "finish_reason": "length"}
    ]
    # AND the completion count is TGI's, the prompt count an estimate, and flagged as one
    assert got["usage"] == {
        "prompt_tokens": estimate(TGI_RECORDED_PROMPT),
        "completion_tokens": 10,
        "total_tokens": estimate(TGI_RECORDED_PROMPT) + 10,
        "estimated": ["prompt_tokens"],
    }
    assert usage == Usage(estimate(TGI_RECORDED_PROMPT), 10)


@pytest.mark.parametrize("raw", [LMI_DOCUMENTED, [LMI_DOCUMENTED]], ids=["object", "tgi-compatible-list"])
def test_an_lmi_answer_becomes_a_chat_completion(raw: Any) -> None:
    # GIVEN LMI's answer to a chat request, as an object or in the TGI-compatible list
    body = chat_body(("user", LMI_DOCUMENTED_PROMPT))
    # WHEN it is read
    got, usage = answer("lmi", CHAT, body, raw)
    # THEN the reply is the assistant's message, without the space that follows "Assistant:"
    assert got["object"] == "chat.completion"
    assert got["id"] == "chatcmpl-req-abc"
    assert got["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Deep Learning is a really cool field"},
            "finish_reason": "stop",
        }
    ]
    # AND the prompt estimate is of the prompt actually sent (with its role template)
    sent_prompt = request("lmi", CHAT, body)["inputs"]
    assert usage == Usage(estimate(sent_prompt), 8)
    assert got["usage"]["estimated"] == ["prompt_tokens"]


def test_without_details_both_counts_are_estimated_and_the_finish_reason_is_stop() -> None:
    # GIVEN LMI with dynamic batching, which answers a list of bare generated texts
    raw = [{"generated_text": "Paris is the capital."}]
    got, usage = answer("lmi", COMPLETIONS, {"prompt": "The capital of France?"}, raw)
    assert got["choices"][0]["finish_reason"] == "stop"
    assert usage == Usage(estimate("The capital of France?"), estimate("Paris is the capital."))
    assert got["usage"]["estimated"] == ["prompt_tokens", "completion_tokens"]


def test_counts_the_container_reports_are_not_flagged() -> None:
    # GIVEN LMI's legacy handlers, which report the prompt's token count too
    raw = {"generated_text": "Hi", "details": {"finish_reason": "length", "generated_tokens": 2, "prompt_tokens": 17}}
    got, usage = answer("lmi", COMPLETIONS, {"prompt": "Say hi"}, raw)
    assert usage == Usage(17, 2)
    assert "estimated" not in got["usage"]
    assert got["choices"][0]["finish_reason"] == "length"


def test_a_generation_error_reported_in_a_200_answer_is_a_permanent_failure() -> None:
    raw = {"generated_text": "", "details": {"finish_reason": "error", "generated_tokens": None, "inputs": None}}
    with pytest.raises(PermanentError) as info:
        answer("lmi", COMPLETIONS, {"prompt": "x"}, raw)
    assert info.value.code == "generation_error"


@pytest.mark.parametrize(
    "raw",
    [
        {"choices": [{"message": {"content": "hi"}}]},
        [{"generated_text": "a"}, {"generated_text": "b"}],
        [],
        "plain text",
        {"generated_text": None},
    ],
    ids=["openai-shape", "two-generations", "empty-list", "string", "null-text"],
)
def test_an_answer_of_another_shape_is_refused_as_unexpected(raw: Any) -> None:
    with pytest.raises(PermanentError) as info:
        answer("tgi", COMPLETIONS, {"prompt": "x"}, raw)
    assert info.value.code == "unexpected_response"
    assert "mapping" in info.value.message


# --------------------------------------------------------------------------------------------
# The openai mapping
# --------------------------------------------------------------------------------------------


def test_the_openai_mapping_sends_the_body_unchanged() -> None:
    body = chat_body(("user", "Hello"), temperature=0, tools=[{"type": "function", "function": {"name": "f"}}])
    sent = request("openai", CHAT, body, default_model="other")
    assert sent == body
    assert sent is not body


def test_the_openai_mapping_fills_in_the_default_model_only_when_the_body_has_none() -> None:
    sent = request("openai", CHAT, {"messages": [{"role": "user", "content": "Hi"}]}, default_model="tgi")
    assert sent["model"] == "tgi"


def test_the_openai_mapping_returns_the_answer_as_is_with_its_usage() -> None:
    raw = {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
    got, usage = answer("openai", CHAT, chat_body(("user", "Hello")), raw)
    assert got == raw
    assert usage == Usage(12, 3)


def test_the_openai_mapping_serves_every_openai_route() -> None:
    assert {CHAT, COMPLETIONS, EMBEDDINGS} <= MAPPINGS["openai"].routes


def test_an_unknown_mapping_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="tgi, lmi, openai"):
        mapping_for("vllm")
