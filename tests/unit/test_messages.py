"""Tests of the SQS request message (``shared.messages``): the public, versioned contract
between ``submit`` (or any program using the AWS SDK) and the worker."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from shared.errors import InvalidMessageError, PermanentError
from shared.messages import (
    MESSAGE_VERSION,
    JobLine,
    RequestMessage,
    decode_message,
    message_json_schema,
)


def a_job_line(**overrides: Any) -> JobLine:
    data: dict[str, Any] = {
        "custom_id": "req-7",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "sim-model",
            "temperature": 0.1,
            "top_p": 1e-7,
            "messages": [{"role": "user", "content": 'héllo ✓ "quoted"\n'}],
        },
    }
    data.update(overrides)
    return JobLine.model_validate(data)


def a_message_dict(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "v": MESSAGE_VERSION,
        "job_id": "job-20261129T061500Z-3f9a1c2e",
        "custom_id": "req-7",
        "line": 7,
        "url": "/v1/embeddings",
        "body": {"model": "m", "input": "x"},
        "endpoint": "default",
    }
    data.update(overrides)
    return data


def decode_failure(raw: str) -> InvalidMessageError:
    with pytest.raises(InvalidMessageError) as info:
        decode_message(raw)
    return info.value


# --------------------------------------------------------------------------------------------
# Round trip
# --------------------------------------------------------------------------------------------


def test_a_message_built_from_a_job_line_decodes_back_to_an_equal_message() -> None:
    # GIVEN a message built from a job line, as submit builds it
    line = a_job_line()
    message = RequestMessage.from_job_line(line, job_id="job-1", line_no=12, endpoint="vllm")

    # WHEN it is encoded for SQS and decoded by the worker
    decoded = decode_message(message.encode())

    # THEN nothing is lost: ids, line, route, endpoint and the body (floats, unicode) exactly
    assert decoded == message
    assert (decoded.v, decoded.job_id, decoded.custom_id, decoded.line) == (MESSAGE_VERSION, "job-1", "req-7", 12)
    assert decoded.url == "/v1/chat/completions"
    assert decoded.endpoint == "vllm"
    assert decoded.body == line.body
    assert decoded.body["top_p"] == 1e-7


def test_the_encoded_message_is_plain_json_with_the_documented_fields() -> None:
    # GIVEN a message
    message = RequestMessage.from_job_line(a_job_line(), job_id="job-1", line_no=1, endpoint="default")

    # WHEN it is encoded
    data = json.loads(message.encode())

    # THEN it carries exactly the schema's fields
    assert set(data) == {"v", "job_id", "custom_id", "line", "url", "body", "endpoint"}


def test_a_message_without_endpoint_uses_the_default_endpoint() -> None:
    # GIVEN a message written by another program that leaves out the optional endpoint
    raw = a_message_dict()
    del raw["endpoint"]

    # WHEN it is decoded
    decoded = decode_message(json.dumps(raw))

    # THEN it goes to the endpoint named "default"
    assert decoded.endpoint == "default"


# --------------------------------------------------------------------------------------------
# Invalid messages
# --------------------------------------------------------------------------------------------


def test_a_body_that_is_not_json_fails_without_ids() -> None:
    # GIVEN an SQS body that is not JSON
    # WHEN it is decoded
    error = decode_failure("this is {not json")

    # THEN it is a permanent, invalid-message error that names no job or request
    assert isinstance(error, PermanentError)
    assert error.code == "invalid_message"
    assert error.job_id is None
    assert error.custom_id is None
    assert "not JSON" in error.message


@pytest.mark.parametrize("raw", ["[1, 2]", '"a string"', "null", "17"], ids=["array", "string", "null", "number"])
def test_json_that_is_not_an_object_fails_without_ids(raw: str) -> None:
    # GIVEN a JSON body that is not an object
    # WHEN it is decoded
    error = decode_failure(raw)

    # THEN no ids can be read from it
    assert (error.job_id, error.custom_id) == (None, None)


def test_a_message_of_another_version_fails_with_its_ids_filled_in() -> None:
    # GIVEN a well-formed message of schema version 2
    raw = json.dumps(a_message_dict(v=2))

    # WHEN it is decoded
    error = decode_failure(raw)

    # THEN it is refused, but the failure can be recorded against its request
    assert error.job_id == "job-20261129T061500Z-3f9a1c2e"
    assert error.custom_id == "req-7"
    assert f"schema v{MESSAGE_VERSION}" in error.message
    assert "v:" in error.message


@pytest.mark.parametrize(
    ("missing", "job_id", "custom_id"),
    [
        ("body", "job-20261129T061500Z-3f9a1c2e", "req-7"),
        ("line", "job-20261129T061500Z-3f9a1c2e", "req-7"),
        ("custom_id", "job-20261129T061500Z-3f9a1c2e", None),
        ("job_id", None, "req-7"),
    ],
)
def test_a_message_missing_a_field_fails_naming_the_field_and_keeping_readable_ids(
    missing: str, job_id: str | None, custom_id: str | None
) -> None:
    # GIVEN a message without one required field
    raw = a_message_dict()
    del raw[missing]

    # WHEN it is decoded
    error = decode_failure(json.dumps(raw))

    # THEN the field is named, and whichever ids are still there are kept
    assert missing in error.message
    assert (error.job_id, error.custom_id) == (job_id, custom_id)


def test_a_message_with_an_unsupported_url_fails_with_its_ids_filled_in() -> None:
    # GIVEN a message routed to an endpoint path the worker does not serve
    raw = json.dumps(a_message_dict(url="/v1/images/generations"))

    # WHEN it is decoded
    error = decode_failure(raw)

    # THEN the url is named and both ids are kept
    assert "url" in error.message
    assert (error.job_id, error.custom_id) == ("job-20261129T061500Z-3f9a1c2e", "req-7")


@pytest.mark.parametrize(
    "overrides",
    [{"job_id": 42, "custom_id": ["x"]}, {"job_id": "", "custom_id": ""}, {"job_id": None, "custom_id": {"a": 1}}],
    ids=["wrong-types", "empty-strings", "null-and-object"],
)
def test_ids_that_are_not_usable_strings_are_not_reported(overrides: dict[str, Any]) -> None:
    # GIVEN a message whose ids are present but not usable strings
    raw = json.dumps(a_message_dict(**overrides))

    # WHEN it is decoded
    error = decode_failure(raw)

    # THEN no id is reported, so nothing is recorded under a made-up key
    assert (error.job_id, error.custom_id) == (None, None)


def test_an_unknown_field_is_refused() -> None:
    # GIVEN a message with a field the schema does not have
    raw = json.dumps(a_message_dict(priority="high"))

    # WHEN it is decoded
    error = decode_failure(raw)

    # THEN it is refused, naming the field
    assert "priority" in error.message


# --------------------------------------------------------------------------------------------
# The published JSON schema
# --------------------------------------------------------------------------------------------


def test_the_schema_is_identified_by_its_version() -> None:
    # GIVEN / WHEN the published schema
    schema = message_json_schema()

    # THEN its $id names the message version, and it is a valid 2020-12 schema
    assert schema["$id"].endswith(f"request-message-v{MESSAGE_VERSION}.json")
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_a_real_encoded_message_validates_against_the_schema() -> None:
    # GIVEN the schema, and a message encoded exactly as submit encodes it
    validator = jsonschema.Draft202012Validator(message_json_schema())
    encoded = RequestMessage.from_job_line(a_job_line(), job_id="job-1", line_no=3, endpoint="default").encode()

    # WHEN the encoded message is validated
    errors = list(validator.iter_errors(json.loads(encoded)))

    # THEN it conforms
    assert errors == []


@pytest.mark.parametrize(
    "overrides",
    [{"v": 2}, {"line": 0}, {"url": "/v1/other"}, {"surprise": 1}, {"custom_id": ""}, {"body": []}],
    ids=["version", "line-zero", "url", "extra-field", "empty-custom-id", "body-not-object"],
)
def test_the_schema_rejects_what_the_worker_rejects(overrides: dict[str, Any]) -> None:
    # GIVEN a message the worker refuses
    data = a_message_dict(**overrides)
    with pytest.raises(InvalidMessageError):
        decode_message(json.dumps(data))

    # WHEN it is validated against the published schema
    errors = list(jsonschema.Draft202012Validator(message_json_schema()).iter_errors(data))

    # THEN the schema refuses it too, so SDK users find out before enqueueing
    assert errors != []
