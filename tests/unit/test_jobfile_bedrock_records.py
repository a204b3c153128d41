"""Tests of job files in Amazon Bedrock's batch-inference format (``recordId``,
``modelInput``): read as requests on the ``bedrock:invoke-model`` route, with the same
``FILE:LINE: reason`` problems as OpenAI Batch lines, and encoded as schema-valid messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from llmbatch.client.jobfile import read_job_file
from shared.errors import JobFileError
from shared.messages import BEDROCK_RECORD_ROUTE, RequestMessage, decode_message, message_json_schema

CLAUDE_INPUT = {
    "anthropic_version": "bedrock-2023-05-31",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": [{"type": "text", "text": "Summarise: ..."}]}],
}


def record(record_id: Any = "CALL0000001", **overrides: Any) -> str:
    line: dict[str, Any] = {"recordId": record_id, "modelInput": CLAUDE_INPUT}
    line.update(overrides)
    return json.dumps(line)


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "input.jsonl"
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def problems(path: Path, **kwargs: Any) -> list[str]:
    with pytest.raises(JobFileError) as info:
        read_job_file(path, **kwargs)
    return info.value.problems


def test_a_bedrock_batch_input_file_reads_unchanged(tmp_path: Path) -> None:
    # GIVEN a file exactly as Bedrock's batch inference takes it
    path = write(tmp_path, [record("CALL0000001"), record("CALL0000002")])

    # WHEN it is read
    job = read_job_file(path)

    # THEN each record is a request: its recordId the custom_id, its modelInput the body
    assert [(n.line_no, n.request.custom_id, n.request.url) for n in job.lines] == [
        (1, "CALL0000001", BEDROCK_RECORD_ROUTE),
        (2, "CALL0000002", BEDROCK_RECORD_ROUTE),
    ]
    assert job.lines[0].request.body == CLAUDE_INPUT


def test_records_and_openai_lines_may_share_a_file(tmp_path: Path) -> None:
    # GIVEN a record and an OpenAI Batch line
    openai = {"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}}
    path = write(tmp_path, [record("r1"), json.dumps(openai)])

    # WHEN / THEN both are read, each on its own route
    assert [n.request.url for n in read_job_file(path).lines] == [BEDROCK_RECORD_ROUTE, "/v1/chat/completions"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (json.dumps({"modelInput": CLAUDE_INPUT}), "missing field 'recordId'"),
        (json.dumps({"recordId": "r1"}), "missing field 'modelInput'"),
        (record("r1", modelInput=[1, 2]), "modelInput"),
        (record(7), "recordId"),
        (record(""), "recordId"),
        (record("r1", modelOutput={}), "unknown field 'modelOutput'"),
        (record("€" * 340), "recordId: must be at most 1018 bytes as UTF-8"),
        (record("r\ud800"), "recordId"),
    ],
    ids=[
        "no-record-id",
        "no-model-input",
        "input-not-object",
        "id-not-string",
        "empty-id",
        "extra-field",
        "id-too-many-bytes",
        "id-lone-surrogate",
    ],
)
def test_a_bad_record_is_refused_with_its_line_and_reason(tmp_path: Path, line: str, reason: str) -> None:
    # GIVEN a good record and then a bad one
    path = write(tmp_path, [record("ok"), line])

    # WHEN / THEN the file is refused, naming line 2 and the reason
    found = problems(path)
    assert len(found) == 1
    assert found[0].startswith(f"{path}:2: ") and reason in found[0], found[0]


def test_a_duplicate_record_id_is_refused_naming_the_first_line(tmp_path: Path) -> None:
    # GIVEN the same recordId twice
    path = write(tmp_path, [record("r1"), record("r2"), record("r1")])

    # WHEN / THEN the third line is refused, pointing at the first
    assert problems(path) == [f"{path}:3: duplicate recordId 'r1' (first on line 1)"]


def test_a_records_max_tokens_is_held_to_the_per_request_limit(tmp_path: Path) -> None:
    # GIVEN a record asking for more tokens than the stack allows (Anthropic's max_tokens)
    path = write(tmp_path, [record("r1")])

    # WHEN / THEN it is refused like an OpenAI line would be
    assert "over the limit of 50" in problems(path, max_tokens_per_request=50)[0]


def test_a_record_becomes_a_schema_valid_message_the_worker_reads_back(tmp_path: Path) -> None:
    # GIVEN a record read from a file, encoded as submit encodes it
    line = read_job_file(write(tmp_path, [record("r1")])).lines[0]
    encoded = RequestMessage.from_job_line(line.request, job_id="job-1", line_no=1, endpoint="claude").encode()

    # WHEN it is validated against the published schema and decoded by the worker
    errors = list(jsonschema.Draft202012Validator(message_json_schema()).iter_errors(json.loads(encoded)))
    message = decode_message(encoded)

    # THEN both accept it, route and body intact
    assert errors == []
    assert (message.url, message.body, message.endpoint) == (BEDROCK_RECORD_ROUTE, CLAUDE_INPUT, "claude")


def test_the_published_schema_file_is_the_one_the_code_generates() -> None:
    # GIVEN the schema in docs/, written by `python -m shared.messages`
    published = Path(__file__).resolve().parents[2] / "docs" / "request-message-v1.schema.json"

    # WHEN / THEN it matches the model, Bedrock's route included
    assert json.loads(published.read_text()) == message_json_schema()
