"""Tests of the SQS request message (``shared.messages``): the public, versioned contract
between ``submit`` (or any program using the AWS SDK) and the worker."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
from typing import Any

import jsonschema
import pytest

from shared.errors import InvalidMessageError, PermanentError
from shared.messages import (
    CUSTOM_ID_MAX_BYTES,
    CUSTOM_ID_MAX_LEN,
    JOB_ID_MAX_LEN,
    MAX_BODY_NESTING,
    MESSAGE_VERSION,
    SIG_HEX_LEN,
    SIG_PATTERN,
    SIGN_KEY_HEX_LEN,
    SORT_KEY_MAX_BYTES,
    JobLine,
    RequestMessage,
    belongs_to,
    decode_body,
    decode_message,
    message_json_schema,
    new_sign_key,
    sign,
    signed_by,
    verify,
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


# --------------------------------------------------------------------------------------------
# Decoding is total: any input decodes (and encodes again) or is an InvalidMessageError
# --------------------------------------------------------------------------------------------


def _deep(levels: int) -> dict[str, Any]:
    body: dict[str, Any] = {}
    node = body
    for _ in range(levels - 1):
        node["a"] = {}
        node = node["a"]
    return body


#: Inputs no JSON-and-pydantic reader handles on its own: each once raised something else.
HOSTILE_RAW: list[Any] = [
    None,
    b'{"v": 1}',
    17,
    "",
    " ",
    "{",
    "[" * 100_000,
    "{" * 100_000,
    '{"a":' * 50_000,
    '{"v": 1, "line": ' + "9" * 5_000 + "}",
    "1e999",
    "NaN",
    "-Infinity",
    '"\\ud800"',
    "\ud800",
    '{"job_id": "\ud800"}',
    "[1, 2]",
    "null",
    "true",
    json.dumps(a_message_dict(line=10**40)),
    json.dumps(a_message_dict(receives=-1)),
    json.dumps(a_message_dict(body=_deep(10_000 // 20))),
]

#: Values for any field, of every JSON type and the sizes and texts that break keys.
NASTY_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    2**64,
    10**40,
    "",
    "x",
    "x" * 129,
    "x" * 513,
    "€" * 400,
    "\ud800",
    "a\udfffb",
    [],
    ["x"],
    {},
    {"k": "\ud800"},
    "0" * 32,
    "/v1/embeddings",
    "default",
]


def hostile_messages(n: int, seed: int = 11) -> list[str]:
    """``n`` mutations of a valid message, deterministic: fields set to nasty values,
    deleted, or added; some bodies made deep or given NaN, infinities and surrogates."""
    rng = random.Random(seed)
    names = [*a_message_dict(), "sig", "receives", "body_ref", "extra"]
    out = []
    for _ in range(n):
        data: dict[str, Any] = a_message_dict()
        for _ in range(rng.randint(1, 3)):
            name = rng.choice(names)
            roll = rng.random()
            if roll < 0.15:
                data.pop(name, None)
            elif roll < 0.25 and name == "body":
                data["body"] = rng.choice(
                    [_deep(rng.choice([63, 64, 65, 300])), {"t": float("nan")}, {"t": float("inf")}, {"\ud800": 1}]
                )
            else:
                data[name] = rng.choice(NASTY_VALUES)
        out.append(json.dumps(data))
    return out


def assert_total(raw: Any) -> None:
    """The property: a message that decodes encodes again to itself; a failure names
    only ids that keep DynamoDB's key rules (or none)."""
    try:
        msg = decode_message(raw)
    except InvalidMessageError as e:
        assert e.code == "invalid_message"
        e.message.encode("utf-8")  # storable as the failure's reason
        assert len(e.message) < 2_000
        for value, limit in ((e.job_id, JOB_ID_MAX_LEN), (e.custom_id, CUSTOM_ID_MAX_LEN)):
            if value is not None:
                assert 0 < len(value) <= limit
                assert len(value.encode("utf-8")) <= CUSTOM_ID_MAX_BYTES
        assert e.line >= 0
        assert e.sig is None or len(e.sig) == SIG_HEX_LEN
        return
    encoded = msg.encode()
    encoded.encode("utf-8")
    assert decode_message(encoded) == msg


@pytest.mark.parametrize("raw", HOSTILE_RAW, ids=range(len(HOSTILE_RAW)))
def test_hostile_input_decodes_or_fails_as_an_invalid_message_only(raw: Any) -> None:
    # GIVEN input that breaks json or pydantic on its own (recursion, int limits, surrogates)
    # WHEN / THEN decoding it keeps the property
    assert_total(raw)


def test_two_thousand_mutated_messages_all_keep_the_property() -> None:
    # GIVEN 2,000 seeded mutations of a valid message (a property test without hypothesis:
    # deterministic, so a failure names its case)
    cases = hostile_messages(2_000)

    # WHEN / THEN every one decodes and encodes back, or fails as an invalid message
    for raw in cases:
        assert_total(raw)
    # ... and the mutations were hostile enough that most of them failed
    failed = 0
    for raw in cases:
        try:
            decode_message(raw)
        except InvalidMessageError:
            failed += 1
    assert failed > len(cases) // 2


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("[" * 100_000, "nested too deeply"),
        ('{"line": ' + "9" * 5_000 + "}", "more than 4300 digits"),
        ("{broken", "not JSON"),
        ("[]", "must be a JSON object, not an array"),
        ("null", "must be a JSON object, not null"),
    ],
    ids=["deep", "huge-number", "syntax", "array", "null"],
)
def test_an_unreadable_body_fails_with_a_reason_and_no_ids(raw: str, reason: str) -> None:
    error = decode_failure(raw)
    assert reason in error.message
    assert (error.job_id, error.custom_id, error.line, error.sig) == (None, None, 0, None)


@pytest.mark.parametrize(
    "body",
    [
        {"t": float("inf")},
        {"t": [1.0, float("-inf")]},
        {"t": float("nan")},
        {"m": [{"content": "\ud83d alone"}]},
        {"\udc00": 1},
        _deep(MAX_BODY_NESTING + 1),
    ],
    ids=["inf", "minus-inf", "nan", "surrogate-text", "surrogate-key", "too-deep"],
)
def test_a_body_that_cannot_travel_fails_with_every_readable_claim_kept(body: dict[str, Any]) -> None:
    # GIVEN a signed message whose body holds what neither DynamoDB nor an endpoint takes
    raw = json.dumps(a_message_dict(body=body, line=3, sig="a" * 32))

    # WHEN it is decoded
    error = decode_failure(raw)

    # THEN it fails, and what it claims can be checked against its job and recorded there
    assert "body" in error.message
    assert (error.job_id, error.custom_id, error.line, error.sig) == (
        "job-20261129T061500Z-3f9a1c2e",
        "req-7",
        3,
        "a" * 32,
    )


def test_a_number_written_1e999_is_refused_rather_than_read_as_infinity() -> None:
    raw = json.dumps(a_message_dict(body={"temperature": "X"})).replace('"X"', "1e999")
    assert "not finite" in decode_failure(raw).message


def test_a_body_nested_to_the_limit_decodes_and_encodes_again() -> None:
    msg = decode_message(json.dumps(a_message_dict(body=_deep(MAX_BODY_NESTING))))
    assert decode_message(msg.encode()) == msg


def test_big_but_convertible_numbers_in_a_body_are_carried_exactly() -> None:
    big = 10**4000 + 7
    msg = decode_message(json.dumps(a_message_dict(body={"seed": big})))
    assert json.loads(msg.encode())["body"]["seed"] == big


@pytest.mark.parametrize(
    ("field", "value"),
    [("line", "7"), ("line", 7.5), ("line", True), ("v", True), ("v", "1"), ("receives", "1"), ("receives", 0.5)],
    ids=["line-text", "line-fraction", "line-bool", "v-bool", "v-text", "receives-text", "receives-fraction"],
)
def test_fields_are_read_strictly_as_the_schema_says(field: str, value: Any) -> None:
    # GIVEN a message with a field of the wrong JSON type that Python could coerce
    raw = json.dumps(a_message_dict(**{field: value}))

    # WHEN it is decoded, THEN it is refused, as the published schema refuses it
    assert field in decode_failure(raw).message
    assert list(jsonschema.Draft202012Validator(message_json_schema()).iter_errors(json.loads(raw))) != []


def test_a_whole_number_written_with_a_fraction_is_a_json_schema_integer() -> None:
    # GIVEN a message from a program whose JSON writer puts 7.0 for 7 (Python's does, for floats)
    data = a_message_dict(v=1.0, line=7.0, receives=2.0)

    # WHEN / THEN the schema and the worker both take it, as the integers they are
    assert list(jsonschema.Draft202012Validator(message_json_schema()).iter_errors(data)) == []
    msg = decode_message(json.dumps(data))
    assert (msg.v, msg.line, msg.receives) == (1, 7, 2)
    assert '"line":7,' in msg.encode()


@pytest.mark.parametrize("name", ["n" * 10_000, "\ud800" + "n" * 10_000], ids=["long", "long-surrogate"])
def test_an_unknown_field_with_a_hostile_name_is_named_safely(name: str) -> None:
    # GIVEN an extra field whose name is 10,000 characters (and holds a lone surrogate)
    raw = json.dumps(a_message_dict(**{name: 1}))

    # WHEN it is decoded
    error = decode_failure(raw)

    # THEN the reason is short and valid UTF-8 (it is stored as the request's error)
    assert len(error.message) < 400
    error.message.encode("utf-8")
    assert (error.job_id, error.custom_id) == ("job-20261129T061500Z-3f9a1c2e", "req-7")


# --------------------------------------------------------------------------------------------
# Key rules: the same for whole messages, failed messages and job files
# --------------------------------------------------------------------------------------------

ID_CASES = [
    ("job_id", "j" * JOB_ID_MAX_LEN, True),
    ("job_id", "j" * (JOB_ID_MAX_LEN + 1), False),
    ("job_id", "job-\ud800", False),
    ("job_id", "", False),
    ("custom_id", "c" * CUSTOM_ID_MAX_LEN, True),
    ("custom_id", "c" * (CUSTOM_ID_MAX_LEN + 1), False),
    ("custom_id", "é" * (CUSTOM_ID_MAX_BYTES // 2), True),  # 509 characters, 1,018 bytes
    ("custom_id", "é" * (CUSTOM_ID_MAX_BYTES // 2) + "x", False),  # 1,019 bytes
    ("custom_id", "€" * 341, False),  # 341 characters, 1,023 bytes: a sort key, not a retry# one
    ("custom_id", "x\udfff", False),
    ("custom_id", "", False),
]


@pytest.mark.parametrize(("field", "value", "valid"), ID_CASES, ids=range(len(ID_CASES)))
def test_an_id_is_kept_by_a_failed_message_exactly_when_a_whole_message_may_carry_it(
    field: str, value: str, valid: bool
) -> None:
    # GIVEN an id at or past a limit, in a message that is otherwise valid, and in one that
    # fails for another reason (a bad url)
    whole = json.dumps(a_message_dict(**{field: value}))
    failing = json.dumps(a_message_dict(**{field: value}, url="/v1/other"))

    # WHEN both are decoded
    error = decode_failure(failing)

    # THEN the whole message decodes exactly when the failed one still reports the id
    if valid:
        assert getattr(decode_message(whole), field) == value
        assert getattr(error, field) == value
    else:
        decode_failure(whole)
        assert getattr(error, field) is None


def test_the_custom_id_byte_limit_leaves_room_for_the_jobs_tables_longest_item_prefix() -> None:
    assert CUSTOM_ID_MAX_BYTES + len("retry#") == SORT_KEY_MAX_BYTES


@pytest.mark.parametrize("body_ref", ["", "k" * 1025, "€" * 342, "ref-\ud800"], ids=["empty", "long", "bytes", "surr"])
def test_a_body_ref_must_be_an_s3_key(body_ref: str) -> None:
    assert "body_ref" in decode_failure(json.dumps(a_message_dict(body={}, body_ref=body_ref))).message


@pytest.mark.parametrize("endpoint", ["", "has space", "x" * 65, "-lead", "e\ud800"])
def test_an_endpoint_name_must_be_one_a_stack_could_configure(endpoint: str) -> None:
    assert "endpoint" in decode_failure(json.dumps(a_message_dict(endpoint=endpoint))).message


# --------------------------------------------------------------------------------------------
# receives (decision 1) and sig (decision 2)
# --------------------------------------------------------------------------------------------


def test_receives_defaults_to_zero_and_is_left_out_of_the_encoding_when_zero() -> None:
    msg = decode_message(json.dumps(a_message_dict()))
    assert msg.receives == 0
    assert "receives" not in json.loads(msg.encode())

    again = decode_message(msg.model_copy(update={"receives": 3}).encode())
    assert again.receives == 3
    assert json.loads(again.encode())["receives"] == 3


@pytest.mark.parametrize("receives", [-1, 1.5, "2", None, 2**60])
def test_receives_must_be_a_whole_number_from_zero(receives: Any) -> None:
    assert "receives" in decode_failure(json.dumps(a_message_dict(receives=receives))).message


KEY = "00112233445566778899aabbccddeeff"


def test_the_signature_is_the_documented_hmac_so_any_language_can_make_it() -> None:
    # GIVEN the algorithm as the README gives it to SDK producers
    expected = hmac.new(KEY.encode(), b"job-1\nreq-\xc3\xa9\n12", hashlib.sha256).hexdigest()[:32]

    # WHEN / THEN sign computes exactly that: 32 lowercase hex digits
    assert sign(KEY, "job-1", "req-é", 12) == expected
    assert re.fullmatch(SIG_PATTERN, expected)


def test_submit_signs_with_the_jobs_key_and_the_signature_verifies() -> None:
    # GIVEN a message built as submit builds it, with a new job key
    key = new_sign_key()
    msg = RequestMessage.from_job_line(a_job_line(), job_id="job-1", line_no=4, endpoint="default", sign_key=key)

    # WHEN it travels through SQS
    decoded = decode_message(msg.encode())

    # THEN it verifies with that key, belongs to the job, and with any other key it does not
    assert len(key) == SIGN_KEY_HEX_LEN and re.fullmatch("[0-9a-f]+", key)
    assert verify(key, decoded) and belongs_to(key, decoded)
    assert not verify(new_sign_key(), decoded) and not belongs_to(new_sign_key(), decoded)


@pytest.mark.parametrize(
    "change",
    [{"custom_id": "req-8"}, {"line": 5}, {"job_id": "job-2"}, {"sig": None}],
    ids=["other-custom-id", "other-line", "other-job", "unsigned"],
)
def test_a_signature_moved_to_other_claims_does_not_verify(change: dict[str, Any]) -> None:
    signed = RequestMessage.from_job_line(a_job_line(), job_id="job-1", line_no=4, endpoint="default", sign_key=KEY)
    moved = signed.model_copy(update=change)
    assert not belongs_to(KEY, moved)


def test_a_job_without_a_key_takes_unsigned_and_signed_messages() -> None:
    unsigned = RequestMessage.from_job_line(a_job_line(), job_id="job-1", line_no=1, endpoint="default")
    assert unsigned.sig is None
    assert belongs_to("", unsigned)
    assert belongs_to("", unsigned.model_copy(update={"sig": "f" * 32}))
    assert not verify("", unsigned)


def test_receives_is_not_signed_so_a_workers_fresh_copy_still_belongs() -> None:
    signed = RequestMessage.from_job_line(a_job_line(), job_id="job-1", line_no=4, endpoint="default", sign_key=KEY)
    copy = decode_message(signed.model_copy(update={"receives": 7}).encode())
    assert belongs_to(KEY, copy)


@pytest.mark.parametrize(
    ("job_id", "custom_id", "line", "sig"),
    [
        ("job-1", "c", 1, "A" * 32),
        ("job-1", "c", 1, "a" * 31),
        ("job-1", "c", 1, "é" * 32),
        ("job-1", "c", 0, "a" * 32),
        ("job-1", "c\ud800", 1, "a" * 32),
        ("job-1", "c", 1, ""),
        ("job-1", "c", 1, None),
    ],
    ids=["upper", "short", "non-ascii", "line-0", "surrogate", "empty", "none"],
)
def test_signed_by_refuses_every_malformed_claim_without_raising(
    job_id: str, custom_id: str, line: int, sig: str | None
) -> None:
    assert signed_by(KEY, job_id, custom_id, line, sig) is False
    assert signed_by("", job_id, custom_id, line, sig) is True


def test_a_schema_field_sig_must_be_32_lowercase_hex_digits() -> None:
    for bad in ["A" * 32, "a" * 33, "xyz", 5]:
        assert "sig" in decode_failure(json.dumps(a_message_dict(sig=bad))).message
    assert decode_message(json.dumps(a_message_dict(sig="0a" * 16))).sig == "0a" * 16


# --------------------------------------------------------------------------------------------
# A body read on its own (the claim check's object)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b"[1]", "must be a JSON object, not an array"),
        (b'{"t": NaN}', "not finite"),
        (b'{"t": 1e999}', "not finite"),
        (b'{"t": "\\ud800"}', "lone surrogate"),
        (json.dumps(_deep(MAX_BODY_NESTING + 1)).encode(), "nested more than"),
    ],
    ids=["not-utf8", "deep", "array", "nan", "1e999", "surrogate", "too-deep"],
)
def test_a_body_read_from_the_payload_bucket_keeps_the_rules_of_a_body_in_a_message(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessageError) as info:
        decode_body(raw)
    assert reason in info.value.message
    info.value.message.encode("utf-8")


def test_a_good_body_read_on_its_own_is_returned_whole() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "héllo ✓"}], "temperature": 0.5}
    assert decode_body(json.dumps(body).encode()) == body
    assert decode_body(json.dumps(body)) == body
