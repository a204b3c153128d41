"""Tests of the result record (shared/results.py), the derived job state (shared/jobs.py)
and configuration (shared/config.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.config import RuntimeLimits, WorkerConfig
from shared.errors import ConfigError
from shared.jobs import Counts, JobMeta, JobState, JobStatus, new_job_id
from shared.results import RequestResult, RequestStatus, Usage
from shared.store import from_ddb, to_ddb

FLOATY_BODY: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ünïcode ✓"}, "logprobs": None}],
    "scores": [0.1, 0.2 + 0.1, 1e-7, 3.141592653589793, -0.0, 1e308, 123456789.123456789],
    "embedding": [0.007812500000000001, -0.33333333333333331],
    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
}


def a_success(**overrides: Any) -> RequestResult:
    fields: dict[str, Any] = {
        "job_id": "job-20261129T061500Z-3f9a1c2e",
        "custom_id": "req-3",
        "line": 3,
        "status": RequestStatus.SUCCEEDED,
        "attempt": 2,
        "endpoint": "default",
        "latency_ms": 812,
        "status_code": 200,
        "request_id": "req_abc",
        "response_body": FLOATY_BODY,
        "usage": Usage(11, 7),
        "finished_at": "2026-11-29T06:15:00.123+00:00",
    }
    fields.update(overrides)
    return RequestResult(**fields)


def a_failure(**overrides: Any) -> RequestResult:
    fields: dict[str, Any] = {
        "job_id": "job-20261129T061500Z-3f9a1c2e",
        "custom_id": "req-9",
        "line": 9,
        "status": RequestStatus.FAILED,
        "attempt": 1,
        "endpoint": "default",
        "status_code": 400,
        "error_code": "invalid_request_error",
        "error_message": "HTTP 400: bad things",
    }
    fields.update(overrides)
    return RequestResult(**fields)


# --------------------------------------------------------------------------------------------
# RequestResult
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "result",
    [
        a_success(),
        a_failure(),
        a_failure(
            status=RequestStatus.CANCELLED, status_code=None, error_code="cancelled", error_message="job cancelled"
        ),
    ],
    ids=["succeeded", "failed", "cancelled"],
)
def test_a_result_survives_a_round_trip_through_a_dynamodb_item(result: RequestResult) -> None:
    # GIVEN a terminal result
    # WHEN it becomes a DynamoDB item (typed, as stored) and is read back
    item = from_ddb(to_ddb(result.to_item()))
    back = RequestResult.from_item(item)

    # THEN it is equal in every field
    assert back == result


def test_floats_in_the_response_body_survive_exactly() -> None:
    # GIVEN a body full of floats that DynamoDB numbers would turn into Decimals or round
    result = a_success()

    # WHEN it is stored and read back
    back = RequestResult.from_item(from_ddb(to_ddb(result.to_item())))

    # THEN every float is bit-for-bit the same Python float
    assert back.response_body == FLOATY_BODY
    for before, after in zip(FLOATY_BODY["scores"], back.response_body["scores"], strict=True):
        assert type(after) is float
        assert after.hex() == before.hex()


def test_absent_optional_fields_are_left_out_of_the_item() -> None:
    # GIVEN a cancelled result without status code, request id, body or error message
    result = RequestResult("job-1", "c", 1, RequestStatus.CANCELLED, 1, "default", error_code="cancelled")

    # WHEN it becomes an item
    item = result.to_item()

    # THEN no attribute is stored as null (DynamoDB would store NULLs), and it still reads back
    assert None not in item.values()
    assert {"status_code", "request_id", "response_body", "error_message"}.isdisjoint(item)
    assert RequestResult.from_item(from_ddb(to_ddb(item))) == result


def test_a_success_becomes_an_openai_batch_output_line() -> None:
    # GIVEN a successful result
    result = a_success()

    # WHEN it is exported
    line = result.to_output_line()

    # THEN it has the OpenAI Batch output shape: id, custom_id, response{status_code, request_id, body}, error
    assert line == {
        "id": "batch_req_job-20261129T061500Z-3f9a1c2e_3",
        "custom_id": "req-3",
        "response": {"status_code": 200, "request_id": "req_abc", "body": FLOATY_BODY},
        "error": None,
    }
    assert json.loads(json.dumps(line)) == line


def test_an_http_failure_keeps_its_status_in_the_response_and_explains_itself_in_error() -> None:
    # GIVEN a request the endpoint refused with 400
    result = a_failure()

    # WHEN it is exported
    line = result.to_output_line()

    # THEN the response carries the status and the error carries code and message
    assert set(line) == {"id", "custom_id", "response", "error"}
    assert line["custom_id"] == "req-9"
    assert line["response"]["status_code"] == 400
    assert line["error"] == {"code": "invalid_request_error", "message": "HTTP 400: bad things"}


def test_a_failure_without_an_http_answer_has_no_response_and_a_status_based_code() -> None:
    # GIVEN a request cancelled before any call
    result = a_failure(status=RequestStatus.CANCELLED, status_code=None, error_code=None, error_message=None)

    # WHEN it is exported
    line = result.to_output_line()

    # THEN response is null, and error falls back to the status as code
    assert line["response"] is None
    assert line["error"] == {"code": "cancelled", "message": ""}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}, Usage(3, 4)),
        ({"usage": {"input_tokens": 5, "output_tokens": 6}}, Usage(5, 6)),
        ({"usage": {"prompt_tokens": 8, "total_tokens": 8}}, Usage(8, 0)),
        ({"usage": None}, Usage()),
        ({}, Usage()),
        (["not", "a", "dict"], Usage()),
    ],
    ids=["chat", "responses-style", "embeddings", "null-usage", "no-usage", "not-an-object"],
)
def test_usage_is_read_from_any_openai_style_body(body: Any, expected: Usage) -> None:
    # GIVEN / WHEN usage is read from an answer body
    usage = Usage.from_body(body)

    # THEN the token counts are found (or zero), and the total is their sum
    assert usage == expected
    assert usage.total_tokens == expected.prompt_tokens + expected.completion_tokens


# --------------------------------------------------------------------------------------------
# JobStatus.state
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sealed", "cancel_requested", "terminal", "expected"),
    [
        (False, False, 0, JobState.SUBMITTING),
        (False, False, 2, JobState.SUBMITTING),
        (True, False, 0, JobState.QUEUED),
        (True, False, 1, JobState.IN_PROGRESS),
        (True, False, 3, JobState.IN_PROGRESS),
        (True, False, 4, JobState.COMPLETED),
        (True, True, 1, JobState.CANCELLING),
        (True, True, 4, JobState.CANCELLED),
        (False, True, 0, JobState.CANCELLED),
    ],
)
def test_the_job_state_follows_from_its_counters_and_flags(
    sealed: bool, cancel_requested: bool, terminal: int, expected: JobState
) -> None:
    # GIVEN a job of 4 requests with some terminal results, spread over the three statuses
    kinds = [i % 3 for i in range(terminal)]
    counts = Counts(succeeded=kinds.count(0), failed=kinds.count(1), cancelled=kinds.count(2))
    status = JobStatus(JobMeta("job-1", total=4, sealed=sealed, cancel_requested=cancel_requested), counts)

    # WHEN / THEN its derived state is
    assert status.state is expected
    assert status.pending == 4 - terminal
    assert status.finished == (expected in (JobState.COMPLETED, JobState.CANCELLED))
    assert status.to_dict()["status"] == expected.value


def test_counts_add_field_by_field() -> None:
    # GIVEN two counter shards
    a = Counts(succeeded=1, failed=2, cancelled=3, prompt_tokens=40, completion_tokens=50)
    b = Counts(succeeded=10, failed=20, cancelled=30, prompt_tokens=400, completion_tokens=500)

    # WHEN they are summed
    total = a + b

    # THEN each field is the sum
    assert total == Counts(11, 22, 33, 440, 550)
    assert total.terminal == 66


def test_job_ids_sort_by_creation_time() -> None:
    # GIVEN / WHEN two ids made a second apart
    first = new_job_id(datetime(2026, 11, 29, 6, 15, 0, tzinfo=UTC))
    second = new_job_id(datetime(2026, 11, 29, 6, 15, 1, tzinfo=UTC))

    # THEN they sort in creation order and carry the timestamp
    assert first < second
    assert first.startswith("job-20261129T061500Z-")


# --------------------------------------------------------------------------------------------
# RuntimeLimits
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_concurrency": 1},
        {"max_concurrency": 1000},
        {"max_concurrency": 16, "rpm_limit": 1, "tpm_limit": 1},
        {"max_concurrency": 16, "rpm_limit": 10_000_000, "tpm_limit": 1_000_000_000},
        {"max_concurrency": 16, "rpm_limit": None, "tpm_limit": None},
    ],
)
def test_limits_on_the_bounds_are_accepted(kwargs: dict[str, Any]) -> None:
    # GIVEN / WHEN limits at the edge of their range
    limits = RuntimeLimits(**kwargs)

    # THEN they are kept as given
    for name, value in kwargs.items():
        assert getattr(limits, name) == value


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_concurrency": 0},
        {"max_concurrency": 1001},
        {"max_concurrency": None},
        {"max_concurrency": 4.0},
        {"max_concurrency": True},
        {"max_concurrency": "16"},
        {"rpm_limit": 0},
        {"rpm_limit": 10_000_001},
        {"tpm_limit": 0},
        {"tpm_limit": 1_000_000_001},
    ],
)
def test_limits_out_of_bounds_or_not_whole_numbers_are_refused(kwargs: dict[str, Any]) -> None:
    # GIVEN / WHEN / THEN an out-of-range limit is a configuration error naming the field
    with pytest.raises(ConfigError) as info:
        RuntimeLimits(**kwargs)
    assert next(iter(kwargs)) in str(info.value)


def test_limits_from_json_ignore_unknown_keys() -> None:
    # GIVEN the limits parameter written by a newer console, with a key this worker does not know
    raw = json.dumps({"max_concurrency": 32, "rpm_limit": 600, "tpm_limit": None, "adaptive": True})

    # WHEN it is read
    limits = RuntimeLimits.from_json(raw)

    # THEN the known keys are used and the rest ignored
    assert limits == RuntimeLimits(max_concurrency=32, rpm_limit=600, tpm_limit=None)


def test_limits_from_json_take_defaults_for_missing_keys_and_round_trip() -> None:
    # GIVEN a parameter naming only the concurrency (also given as a mapping)
    # WHEN it is read
    from_text = RuntimeLimits.from_json('{"max_concurrency": 5}')
    from_mapping = RuntimeLimits.from_json({"max_concurrency": 5})

    # THEN the rest take their defaults, and to_json/from_json round-trips
    assert from_text == from_mapping == RuntimeLimits(max_concurrency=5)
    assert RuntimeLimits.from_json(from_text.to_json()) == from_text


def test_limits_from_json_still_check_bounds() -> None:
    # GIVEN / WHEN / THEN a parameter with an out-of-range value is refused
    with pytest.raises(ConfigError):
        RuntimeLimits.from_json('{"max_concurrency": 0}')


# --------------------------------------------------------------------------------------------
# WorkerConfig
# --------------------------------------------------------------------------------------------

REQUIRED_ENV = {"JOBS_TABLE": "jobs", "RESULTS_TABLE": "results", "ENDPOINT_URL": "http://model/v1"}


def test_the_worker_config_takes_defaults_for_everything_optional() -> None:
    # GIVEN only the required variables
    # WHEN the config is read
    config = WorkerConfig.from_env(dict(REQUIRED_ENV))

    # THEN the required values are used and the rest are the documented defaults
    assert (config.jobs_table, config.results_table, config.endpoint_url) == ("jobs", "results", "http://model/v1")
    assert config.endpoint_name == "default"
    assert config.endpoint_api_key_ref == ""
    assert config.call_timeout_s == 60.0
    assert config.default_limits == RuntimeLimits(max_concurrency=16)
    assert config.counter_shards == 8


def test_the_worker_config_reads_every_variable_the_template_sets() -> None:
    # GIVEN a full environment, as template.yaml gives the function
    env = {
        **REQUIRED_ENV,
        "ENDPOINT_NAME": "vllm",
        "ENDPOINT_API_KEY_REF": "ssm:/llmbatch/key",
        "CALL_TIMEOUT_S": "45",
        "WRITE_RESERVE_S": "8",
        "MIN_CALL_S": "1.5",
        "COUNTER_SHARDS": "4",
        "LIMITS_PARAMETER": "/stack/limits",
        "LIMITS_MAX_AGE_S": "7",
        "MAX_CONCURRENCY": "32",
        "REQUEST_QUEUE_URL": "http://sqs/q",
        "DEAD_LETTER_QUEUE_URL": "http://sqs/dlq",
        "RETRY_BASE_S": "3",
        "RETRY_MAX_S": "120",
    }

    # WHEN the config is read
    config = WorkerConfig.from_env(env)

    # THEN every value arrives, numbers as numbers
    assert config.endpoint_name == "vllm"
    assert config.endpoint_api_key_ref == "ssm:/llmbatch/key"
    assert (config.call_timeout_s, config.write_reserve_s, config.min_call_s) == (45.0, 8.0, 1.5)
    assert config.counter_shards == 4
    assert (config.limits_parameter, config.limits_max_age_s) == ("/stack/limits", 7.0)
    assert config.default_limits.max_concurrency == 32
    assert (config.request_queue_url, config.dead_letter_queue_url) == ("http://sqs/q", "http://sqs/dlq")
    assert (config.retry_base_s, config.retry_max_s) == (3.0, 120.0)


@pytest.mark.parametrize("missing", sorted(REQUIRED_ENV))
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_a_missing_required_variable_is_a_config_error_naming_it(missing: str, how: str) -> None:
    # GIVEN an environment without one required variable (or with it empty)
    env = dict(REQUIRED_ENV)
    if how == "absent":
        del env[missing]
    else:
        env[missing] = ""

    # WHEN / THEN reading the config fails, naming the variable
    with pytest.raises(ConfigError) as info:
        WorkerConfig.from_env(env)
    assert missing in str(info.value)


@pytest.mark.parametrize(("name", "value"), [("CALL_TIMEOUT_S", "sixty"), ("MAX_CONCURRENCY", "0")])
def test_a_bad_number_is_a_config_error(name: str, value: str) -> None:
    # GIVEN a variable that is not a number (or out of range)
    env = {**REQUIRED_ENV, name: value}

    # WHEN / THEN the config is refused
    with pytest.raises(ConfigError):
        WorkerConfig.from_env(env)
