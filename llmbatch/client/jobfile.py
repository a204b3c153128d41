"""Reading and checking a job file before anything is enqueued.

The whole file is checked first; a file with any problem is refused as a whole, so a job
is never half-submitted because of bad input. Problems read ``FILE:LINE: reason``.

A line is either the OpenAI Batch format (``custom_id``, ``method``, ``url``, ``body``) or
Amazon Bedrock's batch-inference format (``recordId``, ``modelInput``), which becomes a
request on the ``bedrock:invoke-model`` route that only Bedrock endpoints serve.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shared.endpoints.failover import check_routing, routed_refusal
from shared.endpoints.specs import EndpointSpec
from shared.errors import JobFileError
from shared.limits.rate_math import named_token_fields
from shared.messages import (
    JSON_SAFE_INT_MAX,
    MESSAGE_VERSION,
    NOT_FINITE,
    SIGN_KEY_HEX_LEN,
    SUPPORTED_URLS,
    BedrockRecordLine,
    JobLine,
    RequestMessage,
    body_problem,
    describe_validation_error,
    parse_json,
    readable,
)

#: How many problems are reported in full; the rest are counted.
MAX_REPORTED_PROBLEMS = 50

#: SQS's own maximum message size; the queue's configured size is used when known.
SQS_MAX_MESSAGE_BYTES = 1_048_576


@dataclass(frozen=True)
class NumberedLine:
    line_no: int
    request: JobLine
    #: Its message's size at its largest (``largest_message_bytes``): submit sends the body
    #: of a line over the queue's limit by the claim check.
    largest_bytes: int


@dataclass
class JobFile:
    path: Path
    lines: list[NumberedLine] = field(default_factory=list)
    #: The message size the file was checked against (bigger bodies go by the claim check).
    max_message_bytes: int = SQS_MAX_MESSAGE_BYTES

    @property
    def total(self) -> int:
        return len(self.lines)


def _iter_raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as fh:
        yield from enumerate(fh, start=1)


def read_job_file(
    path: Path,
    *,
    max_message_bytes: int = SQS_MAX_MESSAGE_BYTES,
    endpoint: str = "default",
    max_requests: int | None = None,
    offload_max_bytes: int | None = None,
    max_tokens_per_request: int | None = None,
    endpoints: Mapping[str, EndpointSpec] | None = None,
) -> JobFile:
    """Parse and check every line of ``path``.

    With ``endpoints`` (the stack's, as its workers read them), a job on an endpoint not
    among them is refused, and so is each line that endpoint cannot serve (its route, or a
    body its translation refuses: :meth:`EndpointSpec.refusal`), judged by the endpoint its
    ``models`` map routes the line to (shared/endpoints/failover.py). With ``max_tokens_per_request``, every
    output-cap field a line names must be a whole number within it (a ``null`` is refused:
    it asks the server for no limit at all).

    Raises
    ------
    JobFileError
        Listing ``FILE:LINE: reason`` for the first problems found (all lines are checked).
    ConfigError
        The endpoints' ``fallback`` or ``models`` settings are inconsistent (the workers
        refuse to start with them).
    """
    problems: list[str] = []
    total_problems = 0
    seen: dict[str, int] = {}
    job = JobFile(path=path, max_message_bytes=max_message_bytes)

    def problem(line_no: int, reason: str) -> None:
        nonlocal total_problems
        total_problems += 1
        if len(problems) < MAX_REPORTED_PROBLEMS:
            problems.append(f"{path}:{line_no}: {reason}")

    if endpoints is not None:
        check_routing(endpoints)  # the workers refuse to start with these settings: so does submit
    spec = None if endpoints is None else endpoints.get(endpoint)
    if endpoints is not None and spec is None:
        configured = ", ".join(sorted(endpoints)) or "none"
        problem(1, f"endpoint {endpoint!r} is not configured on this stack (its endpoints: {configured})")

    for line_no, raw in _iter_raw_lines(path):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            problem(line_no, f"invalid JSON: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})")
            continue
        try:
            data, finite = parse_json(text)
        except ValueError as e:
            problem(line_no, f"invalid JSON: {e}")
            continue
        if not isinstance(data, dict):
            problem(line_no, "a line must be a JSON object")
            continue
        is_record = is_bedrock_record(data)
        try:
            request = (
                BedrockRecordLine.model_validate(data).to_job_line() if is_record else JobLine.model_validate(data)
            )
        except ValidationError as e:
            problem(line_no, _explain(e))
            continue
        if request.custom_id in seen:
            id_field = "recordId" if is_record else "custom_id"
            problem(
                line_no,
                f"duplicate {id_field} {request.custom_id!r} (first on line {seen[request.custom_id]})",
            )
            continue
        seen[request.custom_id] = line_no
        bad_body = NOT_FINITE if not finite else body_problem(request.body, text)
        if bad_body is not None:
            problem(line_no, bad_body)
            continue
        try:
            size = largest_message_bytes(request, line_no=line_no, endpoint=endpoint)
        except Exception as e:  # body_problem knows every case we know of; the worker refuses the rest
            problem(line_no, f"the request cannot be encoded as a message: {type(e).__name__}")
            continue
        if size > max(max_message_bytes, offload_max_bytes or 0):
            problem(
                line_no,
                f"request is {size} bytes as a message, over the queue's limit of {max_message_bytes}",
            )
            continue
        refused = None if endpoints is None else routed_refusal(endpoints, endpoint, request.url, request.body)
        if refused is not None:
            problem(line_no, refused)
            continue
        over = None if max_tokens_per_request is None else token_cap_problem(request, max_tokens_per_request)
        if over is not None:
            problem(line_no, over)
            continue
        job.lines.append(NumberedLine(line_no, request, size))

    if max_requests is not None and job.total > max_requests:
        first_over = job.lines[max_requests].line_no
        problem(first_over, f"the job has {job.total} requests, over the limit of {max_requests} per job")
    if not job.lines and not total_problems:
        problem(1, "the file holds no requests")
    if total_problems:
        raise JobFileError(problems, total_problems)
    return job


def token_cap_problem(request: JobLine, cap: int) -> str | None:
    """Why the request's output-cap fields break the per-request cap, or None.

    Every field it names is checked, not only the one the endpoint reads first (an OpenAI
    server may read either). ``null`` is refused rather than read as "the cap": to the
    server it means no limit, and the body is sent unchanged, so submit cannot fill it in.
    Leaving the field out is the way to ask for the endpoint's default.
    """
    for name, value in named_token_fields(request.url, request.body):
        if value is None:
            return f"{name} is null, which asks for no limit; give a whole number up to the limit of {cap} per request"
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"{name} must be a whole number of at least 1, got {readable(repr(value))}"
        if value > cap:
            return f"{name} {value} is over the limit of {cap} per request"
    return None


def largest_message_bytes(request: JobLine, *, line_no: int, endpoint: str) -> int:
    """The size of the request's message at its largest: with a job id longer than
    ``new_job_id``'s, a signature, and the ``receives`` a worker may add when it sends a
    fresh copy (which must fit the queue as well as the first).

    The line is already validated, so its message is only serialized here (no second
    validation, signature or copy: those were half of checking a file, issue 12); the
    signature and the receives are fixed-length ASCII, so they add the same bytes to every
    message (:func:`_signed_and_resent_extra`)."""
    bare = RequestMessage.model_construct(
        v=MESSAGE_VERSION,
        job_id=_LONGEST_JOB_ID,
        custom_id=request.custom_id,
        line=line_no,
        url=request.url,
        body=request.body,
        endpoint=endpoint,
        sig=None,
        receives=0,
    )
    return len(bare.encode().encode()) + _signed_and_resent_extra()


#: A job id longer than any ``new_job_id`` makes.
_LONGEST_JOB_ID = "j" * 32


@functools.cache
def _signed_and_resent_extra() -> int:
    """The bytes a signature and the largest ``receives`` add to any message."""
    probe = JobLine(custom_id="probe", method="POST", url=SUPPORTED_URLS[0], body={})
    bare = RequestMessage.from_job_line(probe, job_id=_LONGEST_JOB_ID, line_no=1, endpoint="e")
    signed = RequestMessage.from_job_line(
        probe, job_id=_LONGEST_JOB_ID, line_no=1, endpoint="e", sign_key="0" * SIGN_KEY_HEX_LEN
    )
    largest = signed.model_copy(update={"receives": JSON_SAFE_INT_MAX})
    return len(largest.encode().encode()) - len(bare.encode().encode())


def is_bedrock_record(data: dict[str, Any]) -> bool:
    """A line in Bedrock's batch-inference format (``recordId``, ``modelInput``) rather than
    OpenAI's; a line with ``custom_id`` is always read as OpenAI's, so its errors say so."""
    return "custom_id" not in data and ("recordId" in data or "modelInput" in data)


def _explain(e: ValidationError) -> str:
    for err in e.errors():
        if err["loc"] and err["loc"][0] == "url" and err["type"] == "literal_error":
            return f"unsupported url {readable(repr(err['input']))}; expected one of {', '.join(SUPPORTED_URLS)}"
        if err["type"] in ("missing", "extra_forbidden"):
            what = "missing" if err["type"] == "missing" else "unknown"
            return f"{what} field {readable(repr('.'.join(str(p) for p in err['loc'])))}"
    return describe_validation_error(e)
