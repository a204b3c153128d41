"""Bedrock batch inference's record format and output translation, on their own:
shared/lanes/bedrock_batch.py and the batch functions of shared/endpoints/bedrock_translate.py."""

from __future__ import annotations

import json
import re
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ClientError

from shared.endpoints import bedrock_translate as tr
from shared.endpoints.specs import BedrockSpec, parse_endpoints
from shared.errors import PermanentError, TransientError
from shared.lanes.bedrock_batch import (
    DEFAULT_MAX_JOBS,
    STATES,
    bedrock_batch_refusal,
    bedrock_limits,
    classify_control_error,
    client_token,
    job_name,
    outcome,
    record_id,
    record_line,
)
from shared.lanes.native import NativeLimits, NativePart, NativeQuotaExceededError, NativeRecord
from shared.messages import BEDROCK_RECORD_ROUTE

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
PROFILE = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0"
TITAN_TEXT = "amazon.titan-text-express-v1"
TITAN_EMBED = "amazon.titan-embed-text-v2:0"

#: botocore's own model of the control plane: names, tokens and statuses are checked against it.
BEDROCK_MODEL = botocore.session.get_session().get_service_model("bedrock")


def shape(name: str) -> Any:
    return BEDROCK_MODEL.shape_for(name)


def matches(name: str, value: str) -> bool:
    s = shape(name)
    return s.metadata.get("min", 0) <= len(value) <= s.metadata["max"] and bool(
        re.fullmatch(s.metadata["pattern"], value)
    )


def spec(**settings: Any) -> BedrockSpec:
    parsed = parse_endpoints(json.dumps({"b": {"kind": "bedrock", "default_model": CLAUDE, **settings}}))["b"]
    assert isinstance(parsed, BedrockSpec)
    return parsed


def part(job_id: str = "job-20261201T020000Z-3f9a1c2e", number: int = 3) -> NativePart:
    return NativePart(job_id=job_id, endpoint="claude", part=number, input_key="k", records=100)


def chat_body(**extra: Any) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": [{"type": "text", "text": "Why?"}]},
        ],
        **extra,
    }


# --- limits, names, ids -----------------------------------------------------------------------


def test_limits_come_from_the_endpoints_settings_with_bedrocks_default_job_quota() -> None:
    assert bedrock_limits(spec()) == NativeLimits(
        min_records=100, max_records=50_000, max_concurrent_jobs=DEFAULT_MAX_JOBS, completion_window_s=24 * 3600
    )
    assert bedrock_limits(spec(batch_min_records=10, batch_max_records=20, batch_max_jobs=3)) == NativeLimits(
        min_records=10, max_records=20, max_concurrent_jobs=3
    )


@pytest.mark.parametrize("job_id", ["job-20261201T020000Z-3f9a1c2e", "weird id/with:chars é" + "x" * 120])
def test_job_names_and_tokens_fit_bedrocks_rules_and_differ_per_part(job_id: str) -> None:
    names = {job_name(part(job_id, n)) for n in range(3)}
    tokens = {client_token(part(job_id, n)) for n in range(3)}
    assert len(names) == len(tokens) == 3
    assert all(matches("ModelInvocationJobName", n) for n in names)
    assert all(matches("ModelInvocationIdempotencyToken", t) for t in tokens)
    assert client_token(part(job_id, 1)) == client_token(part(job_id, 1))


def test_record_ids_are_the_line_in_11_alphanumeric_characters() -> None:
    assert record_id(7) == "00000000007"
    assert record_id(99_999_999_999) == "99999999999"
    with pytest.raises(PermanentError):
        record_id(10**11)


def test_a_record_line_is_bedrocks_record_format() -> None:
    record = NativeRecord(line=12, custom_id="a custom id / not alphanumeric", url=CHAT, body=chat_body())
    line = json.loads(record_line(record, tr.batch_input(CHAT, record.body, default_model=CLAUDE)))
    assert set(line) == {"recordId", "modelInput"}
    assert line["recordId"] == "00000000012"


def test_every_bedrock_status_has_a_state() -> None:
    assert set(STATES) == set(shape("ModelInvocationJobStatus").enum)


# --- requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [CLAUDE, PROFILE])
def test_chat_becomes_an_anthropic_messages_body_for_anthropic_models(model: str) -> None:
    batch = tr.batch_input(CHAT, chat_body(model=model, temperature=0.2, stop="END"), default_model=None)
    assert batch.model == model and batch.format is tr.BatchFormat.ANTHROPIC_CHAT
    assert batch.model_input == {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": tr.ANTHROPIC_DEFAULT_MAX_TOKENS,
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
            {"role": "user", "content": [{"type": "text", "text": "Why?"}]},
        ],
        "temperature": 0.2,
        "stop_sequences": ["END"],
    }


def test_chat_becomes_one_titan_prompt_for_titan_text() -> None:
    batch = tr.batch_input(CHAT, chat_body(model=TITAN_TEXT, max_tokens=50), default_model=CLAUDE)
    assert batch.format is tr.BatchFormat.TITAN_TEXT_CHAT
    assert batch.model_input == {
        "inputText": "Be brief.\n\nUser: Hi\nBot: Hello\nUser: Why?\nBot:",
        "textGenerationConfig": {"maxTokenCount": 50},
    }


def test_one_embedding_input_per_record_and_records_as_they_are() -> None:
    batch = tr.batch_input(EMBEDDINGS, {"model": TITAN_EMBED, "input": "x", "dimensions": 256}, default_model=None)
    assert (batch.model_input, batch.format) == ({"inputText": "x", "dimensions": 256}, tr.BatchFormat.TITAN_EMBEDDING)
    record = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "messages": []}
    assert tr.batch_input(BEDROCK_RECORD_ROUTE, record, default_model=CLAUDE) == tr.BatchInput(
        CLAUDE, record, tr.BatchFormat.RECORD
    )


@pytest.mark.parametrize(
    ("route", "body", "code"),
    [
        (CHAT, chat_body(model="meta.llama3-8b-instruct-v1:0"), "unsupported_model"),
        (CHAT, chat_body(tools=[{"type": "function"}]), "unsupported_parameter"),
        (EMBEDDINGS, {"model": TITAN_EMBED, "input": ["a", "b"]}, "unsupported_parameter"),
        ("/v1/completions", {"prompt": "x"}, "unsupported_route"),
    ],
)
def test_what_batch_inference_cannot_send_is_refused_at_submit(route: str, body: dict[str, Any], code: str) -> None:
    with pytest.raises(PermanentError) as refused:
        tr.batch_input(route, body, default_model=CLAUDE)
    assert refused.value.code == code
    assert bedrock_batch_refusal("b", spec(), route, body) is not None
    assert bedrock_batch_refusal("b", spec(), CHAT, chat_body()) is None


# --- answers ----------------------------------------------------------------------------------


def record(url: str = CHAT, body: dict[str, Any] | None = None) -> NativeRecord:
    return NativeRecord(line=4, custom_id="c-4", url=url, body=body or chat_body())


def test_an_anthropic_output_becomes_a_chat_completion() -> None:
    r = record()
    output = {
        "content": [{"type": "text", "text": "Because."}],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 9, "output_tokens": 2},
    }
    got = outcome(
        r, tr.batch_input(r.url, r.body, default_model=CLAUDE), {"recordId": "x", "modelOutput": output}, created=5
    )
    assert got.succeeded and got.status_code == 200
    assert got.body is not None
    assert got.body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "Because."}, "finish_reason": "length"}
    ]
    assert got.body["usage"] == {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (9, 2)


def test_a_titan_text_output_becomes_a_chat_completion() -> None:
    batch = tr.BatchInput(TITAN_TEXT, {}, tr.BatchFormat.TITAN_TEXT_CHAT)
    output = {
        "inputTextTokenCount": 8,
        "results": [{"tokenCount": 3, "outputText": "blue", "completionReason": "FINISH"}],
    }
    body = tr.batch_answer(batch, output, body={}, request_id="r", created=1)
    assert body["choices"][0]["message"]["content"] == "blue"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] == 11


def test_an_error_line_carries_bedrocks_code_and_message() -> None:
    r = record()
    line = {"recordId": "x", "modelInput": {}, "error": {"errorCode": 400, "errorMessage": "bad request"}}
    got = outcome(r, tr.batch_input(r.url, r.body, default_model=CLAUDE), line, created=0)
    assert not got.succeeded
    assert (got.error_code, got.status_code, got.error_message) == ("400", 400, "bad request")


def test_an_output_not_of_the_promised_shape_fails_the_record_not_the_import() -> None:
    r = record()
    got = outcome(r, tr.batch_input(r.url, r.body, default_model=CLAUDE), {"modelOutput": {"nope": 1}}, created=0)
    assert got.error_code == "unexpected_response"


# --- control-plane errors ---------------------------------------------------------------------


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "CreateModelInvocationJob",
    )


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("ServiceQuotaExceededException", 400, NativeQuotaExceededError),
        ("ThrottlingException", 429, TransientError),
        ("InternalServerException", 500, TransientError),
        ("ValidationException", 400, PermanentError),
        ("AccessDeniedException", 403, PermanentError),
        ("SomethingNew", 503, TransientError),
        ("SomethingElse", 400, PermanentError),
    ],
)
def test_control_plane_errors_are_classified(code: str, status: int, kind: type[Exception]) -> None:
    error = classify_control_error(client_error(code, status))
    assert type(error) is kind
