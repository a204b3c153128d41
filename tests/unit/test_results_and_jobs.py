"""Tests of the result record (shared/results.py) and the derived job state (shared/jobs.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.jobs import Counts, JobMeta, JobState, JobStatus, new_job_id
from shared.results import RequestResult, RequestStatus, Usage
from shared.store.item_size import from_ddb, to_ddb

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


def test_jobs_made_in_one_second_order_by_creation_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a clock that moves a millisecond between two jobs (list_jobs orders by created_at)
    ticks = iter([datetime(2026, 12, 1, 13, 2, 27, 999000, tzinfo=UTC), datetime(2026, 12, 1, 13, 2, 28, tzinfo=UTC)])
    monkeypatch.setattr("shared.results.datetime", type("Clock", (), {"now": staticmethod(lambda tz: next(ticks))}))
    earlier = JobMeta(job_id="job-b", total=1)
    later = JobMeta(job_id="job-a", total=1)
    # and a job recorded when created_at held whole seconds, made in the later one's second
    old_record = JobMeta(job_id="job-c", total=1, created_at="2026-12-01T13:02:28+00:00")

    # THEN newest first is later, then the older record of its second, then earlier,
    # whatever their ids say, and every one reads as a time
    newest_first = sorted([earlier, old_record, later], key=lambda m: m.created_at, reverse=True)
    assert [m.job_id for m in newest_first] == ["job-a", "job-c", "job-b"]
    assert all(datetime.fromisoformat(m.created_at).tzinfo for m in newest_first)
