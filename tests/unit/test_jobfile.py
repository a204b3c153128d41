"""Tests of ``llmbatch.client.jobfile.read_job_file``: the whole file is checked before anything is
enqueued, and every problem is reported as ``FILE:LINE: reason``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmbatch.client.jobfile import MAX_REPORTED_PROBLEMS, largest_message_bytes, read_job_file
from shared.errors import JobFileError
from shared.messages import (
    JSON_SAFE_INT_MAX,
    MAX_BODY_NESTING,
    SUPPORTED_URLS,
    JobLine,
    RequestMessage,
    decode_message,
)


def job_line(custom_id: Any = "req-1", **overrides: Any) -> str:
    line: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "sim-model", "messages": [{"role": "user", "content": f"hello {custom_id}"}]},
    }
    line.update(overrides)
    return json.dumps(line)


def nested(levels: int) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m"}
    for _ in range(levels - 1):
        body = {"a": body}
    return body


def write_lines(tmp_path: Path, lines: list[str], name: str = "job.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def problems_of(path: Path, **kwargs: Any) -> JobFileError:
    with pytest.raises(JobFileError) as info:
        read_job_file(path, **kwargs)
    return info.value


def line_of(problem: str, path: Path) -> int:
    """The LINE of a ``FILE:LINE: reason`` problem (asserting the FILE part on the way)."""
    prefix = f"{path}:"
    assert problem.startswith(prefix), problem
    line, sep, _reason = problem[len(prefix) :].partition(": ")
    assert sep, problem
    return int(line)


def reason_of(problem: str, path: Path) -> str:
    return problem[len(f"{path}:") :].partition(": ")[2]


# --------------------------------------------------------------------------------------------
# A valid file
# --------------------------------------------------------------------------------------------


def test_a_valid_file_yields_every_request_with_its_line_number(tmp_path: Path) -> None:
    # GIVEN a file of three valid requests on all three OpenAI Batch routes
    lines = [
        job_line("a"),
        job_line("b", url="/v1/completions", body={"model": "m", "prompt": "hi"}),
        job_line("c", url="/v1/embeddings", body={"model": "m", "input": ["x", "y"]}),
    ]
    path = write_lines(tmp_path, lines)

    # WHEN it is read
    job = read_job_file(path)

    # THEN every request comes back, in order, with its 1-based line number and its body unchanged
    assert job.path == path
    assert job.total == 3
    assert [(n.line_no, n.request.custom_id) for n in job.lines] == [(1, "a"), (2, "b"), (3, "c")]
    assert [n.request.url for n in job.lines] == list(SUPPORTED_URLS)
    assert job.lines[2].request.body == json.loads(lines[2])["body"]


def test_blank_lines_are_skipped_and_line_numbers_stay_physical(tmp_path: Path) -> None:
    # GIVEN requests separated by empty and whitespace-only lines (and CRLF endings)
    path = tmp_path / "job.jsonl"
    path.write_bytes(("\n" + job_line("a") + "\r\n" + "   \n\t\n" + job_line("b") + "\n\n").encode())

    # WHEN it is read
    job = read_job_file(path)

    # THEN only the two requests are kept, numbered by their line in the file
    assert [(n.line_no, n.request.custom_id) for n in job.lines] == [(2, "a"), (5, "b")]


# --------------------------------------------------------------------------------------------
# One problem at a time
# --------------------------------------------------------------------------------------------

BAD_LINES = [
    pytest.param("{not json", "invalid JSON", id="invalid-json"),
    pytest.param('{"custom_id": "\x80"}', "invalid JSON", id="not-utf8"),  # written as latin-1: byte 0x80
    pytest.param("[1, 2, 3]", "a line must be a JSON object", id="array-not-object"),
    pytest.param('"just a string"', "a line must be a JSON object", id="string-not-object"),
    pytest.param(
        json.dumps({"custom_id": "x", "method": "POST", "url": "/v1/chat/completions"}),
        "missing field 'body'",
        id="missing-body",
    ),
    pytest.param(
        json.dumps({"method": "POST", "url": "/v1/chat/completions", "body": {}}),
        "missing field 'custom_id'",
        id="missing-custom-id",
    ),
    pytest.param(job_line(123), "custom_id", id="custom-id-not-a-string"),
    pytest.param(job_line(body=["not", "an", "object"]), "body", id="body-not-an-object"),
    pytest.param(job_line(extra=1), "unknown field 'extra'", id="unknown-field"),
    pytest.param(job_line(method="GET"), "method: must be 'POST'", id="method-not-post"),
    pytest.param(job_line(url="/v1/images/generations"), "unsupported url '/v1/images/generations'", id="bad-url"),
    pytest.param(job_line(""), "custom_id", id="empty-custom-id"),
    # What the worker could not read or store is refused here, with the same rules.
    pytest.param(job_line("x\ud800"), "custom_id: must be valid Unicode", id="custom-id-lone-surrogate"),
    pytest.param(job_line("€" * 340), "at most 1018 bytes as UTF-8", id="custom-id-too-many-bytes"),
    pytest.param("[" * 100_000, "invalid JSON: nested too deeply", id="deep-nesting"),
    pytest.param('{"custom_id": ' + "9" * 5_000 + "}", "more than 4300 digits", id="huge-number"),
    pytest.param(job_line(body={"t": "X"}).replace('"X"', "1e999"), "not finite", id="body-1e999"),
    pytest.param(job_line(body={"t": float("nan")}), "not finite", id="body-nan"),
    pytest.param(job_line(body={"m": "\udc00"}), "lone surrogate", id="body-lone-surrogate"),
    pytest.param(job_line(body=nested(MAX_BODY_NESTING + 1)), f"more than {MAX_BODY_NESTING} levels", id="too-deep"),
]


@pytest.mark.parametrize(("bad", "expected"), BAD_LINES)
def test_a_bad_line_is_reported_with_its_file_line_and_reason(tmp_path: Path, bad: str, expected: str) -> None:
    # GIVEN a valid line, a blank line, then the bad line (physical line 3), then another valid line
    path = tmp_path / "job.jsonl"
    path.write_bytes((job_line("ok-1") + "\n\n").encode() + bad.encode("latin-1") + ("\n" + job_line("ok-2")).encode())

    # WHEN it is read
    error = problems_of(path)

    # THEN the whole file is refused with exactly one problem, at line 3, naming the cause
    assert error.total_problems == 1
    assert len(error.problems) == 1
    assert line_of(error.problems[0], path) == 3
    assert expected in reason_of(error.problems[0], path)


def test_the_unsupported_url_message_lists_the_supported_routes(tmp_path: Path) -> None:
    # GIVEN a line naming a route the Batch format does not support
    path = write_lines(tmp_path, [job_line(url="/v2/chat")])

    # WHEN it is read
    error = problems_of(path)

    # THEN the reason lists every supported route
    reason = reason_of(error.problems[0], path)
    assert all(route in reason for route in SUPPORTED_URLS)


def test_a_duplicate_custom_id_names_the_line_of_its_first_use(tmp_path: Path) -> None:
    # GIVEN "dup" on line 2 and again on line 4
    path = write_lines(tmp_path, [job_line("a"), job_line("dup"), job_line("b"), job_line("dup")])

    # WHEN it is read
    error = problems_of(path)

    # THEN the problem is on line 4 and points back at line 2
    assert error.total_problems == 1
    assert line_of(error.problems[0], path) == 4
    assert reason_of(error.problems[0], path) == "duplicate custom_id 'dup' (first on line 2)"


def test_a_line_too_big_for_one_queue_message_is_refused(tmp_path: Path) -> None:
    # GIVEN a small request and one whose prompt alone is bigger than the queue's message limit
    limit = 2_000
    big = job_line("big", body={"model": "m", "messages": [{"role": "user", "content": "x" * (limit + 1)}]})
    path = write_lines(tmp_path, [job_line("small"), big])

    # WHEN it is read against that limit
    error = problems_of(path, max_message_bytes=limit)

    # THEN only the big line is reported, with the limit in the reason
    assert error.total_problems == 1
    assert line_of(error.problems[0], path) == 2
    assert f"over the queue's limit of {limit}" in error.problems[0]


def test_the_same_big_line_is_accepted_when_the_queue_allows_it(tmp_path: Path) -> None:
    # GIVEN the same big request
    big = job_line("big", body={"model": "m", "messages": [{"role": "user", "content": "x" * 2_001}]})
    path = write_lines(tmp_path, [big])

    # WHEN it is read with the default (SQS maximum) limit
    job = read_job_file(path)

    # THEN it is accepted
    assert [n.request.custom_id for n in job.lines] == ["big"]


@pytest.mark.parametrize("content", ["", "\n\n  \n"], ids=["empty", "only-blank-lines"])
def test_a_file_without_requests_is_refused(tmp_path: Path, content: str) -> None:
    # GIVEN a file holding no request at all
    path = tmp_path / "empty.jsonl"
    path.write_text(content)

    # WHEN it is read
    error = problems_of(path)

    # THEN it is refused with one problem at line 1
    assert error.problems == [f"{path}:1: the file holds no requests"]
    assert error.total_problems == 1


# --------------------------------------------------------------------------------------------
# Many problems at once
# --------------------------------------------------------------------------------------------


def test_every_problem_of_a_file_is_reported_at_its_own_line(tmp_path: Path) -> None:
    # GIVEN a file mixing valid lines, blank lines and one of each problem
    lines = [
        job_line("a"),  # 1 ok
        "{oops",  # 2 invalid JSON
        "",  # 3 blank
        "42",  # 4 not an object
        json.dumps({"custom_id": "m", "method": "POST", "url": "/v1/completions"}),  # 5 missing body
        job_line(["t"]),  # 6 wrong type
        job_line("u", surprise=True),  # 7 unknown field
        job_line("g", method="PUT"),  # 8 method
        job_line("v", url="/v1/moderations"),  # 9 url
        job_line("a"),  # 10 duplicate of line 1
        job_line("z"),  # 11 ok
    ]
    path = write_lines(tmp_path, lines)

    # WHEN it is read
    error = problems_of(path)

    # THEN one problem per bad line, in file order, each at the right line
    assert [line_of(p, path) for p in error.problems] == [2, 4, 5, 6, 7, 8, 9, 10]
    assert error.total_problems == 8
    reasons = [reason_of(p, path) for p in error.problems]
    assert reasons[0].startswith("invalid JSON")
    assert reasons[1] == "a line must be a JSON object"
    assert reasons[2] == "missing field 'body'"
    assert "custom_id" in reasons[3]
    assert reasons[4] == "unknown field 'surprise'"
    assert "method" in reasons[5]
    assert reasons[6].startswith("unsupported url '/v1/moderations'")
    assert reasons[7] == "duplicate custom_id 'a' (first on line 1)"


def test_more_than_fifty_problems_are_all_counted_but_only_fifty_listed(tmp_path: Path) -> None:
    # GIVEN 70 bad lines between valid ones
    bad_count = MAX_REPORTED_PROBLEMS + 20
    lines = [job_line("first")] + ["{bad"] * bad_count + [job_line("last")]
    path = write_lines(tmp_path, lines)

    # WHEN it is read
    error = problems_of(path)

    # THEN every problem is counted, the first fifty are listed, in order from line 2
    assert error.total_problems == bad_count
    assert len(error.problems) == MAX_REPORTED_PROBLEMS
    assert [line_of(p, path) for p in error.problems] == list(range(2, 2 + MAX_REPORTED_PROBLEMS))
    assert str(bad_count) in str(error)


def test_a_job_over_the_request_limit_is_reported_at_the_first_line_over_it(tmp_path: Path) -> None:
    # GIVEN three requests on lines 2, 4 and 6 (blank lines between them) and a limit of two
    path = write_lines(tmp_path, ["", job_line("a"), "", job_line("b"), "", job_line("c")])

    # WHEN it is read with max_requests=2
    error = problems_of(path, max_requests=2)

    # THEN the problem points at line 6, the third request, the first one over the limit
    assert error.total_problems == 1
    assert line_of(error.problems[0], path) == 6
    assert "the job has 3 requests, over the limit of 2 per job" in error.problems[0]


def test_a_job_exactly_at_the_request_limit_is_accepted(tmp_path: Path) -> None:
    # GIVEN three requests and a limit of three
    path = write_lines(tmp_path, [job_line("a"), job_line("b"), job_line("c")])

    # WHEN it is read with max_requests=3
    job = read_job_file(path, max_requests=3)

    # THEN every request is kept
    assert job.total == 3


def test_a_body_nested_to_the_limit_is_accepted_and_the_worker_reads_it(tmp_path: Path) -> None:
    path = write_lines(tmp_path, [job_line("deep", body=nested(MAX_BODY_NESTING))])
    line = read_job_file(path).lines[0]
    message = RequestMessage.from_job_line(line.request, job_id="job-1", line_no=1, endpoint="default")
    assert decode_message(message.encode()) == message


def test_the_size_check_leaves_room_for_the_signature_and_a_workers_receives(tmp_path: Path) -> None:
    # GIVEN a line, and the size of its message without a signature or receives
    path = write_lines(tmp_path, [job_line("sized", body={"model": "m", "input": "x" * 5_000})])
    request = JobLine.model_validate(json.loads(path.read_text()))
    bare = len(RequestMessage.from_job_line(request, job_id="j" * 32, line_no=1, endpoint="default").encode())
    largest = largest_message_bytes(request, line_no=1, endpoint="default")

    # WHEN the queue's limit is the bare size, or the largest the message can become
    # THEN only the largest fits: the signed message, re-sent by a worker with its receives,
    # must still fit the queue
    assert largest > bare
    assert "over the queue's limit" in problems_of(path, max_message_bytes=bare).problems[0]
    assert read_job_file(path, max_message_bytes=largest).total == 1


@pytest.mark.parametrize(
    "custom_id, body",
    [
        ("ascii", {"model": "m", "input": "x" * 300}),
        ("dédoublé-é", {"model": "m", "messages": [{"role": "user", "content": "你好\uff0c世界 ☃ \u00e9" * 50}]}),
        ("nested", {"model": "m", "input": [[1.5, -2e-9], {"a": None, "b": True}], "max_tokens": 7}),
    ],
)
def test_the_largest_size_is_the_signed_message_resent_with_the_largest_receives(
    custom_id: str, body: dict[str, object]
) -> None:
    request = JobLine(custom_id=custom_id, method="POST", url="/v1/embeddings", body=body)
    signed = RequestMessage.from_job_line(request, job_id="j" * 32, line_no=123, endpoint="ep", sign_key="f" * 32)
    resent = signed.model_copy(update={"receives": JSON_SAFE_INT_MAX})
    assert largest_message_bytes(request, line_no=123, endpoint="ep") == len(resent.encode().encode())
