"""Amazon Bedrock batch inference (CreateModelInvocationJob) as a :class:`NativeBatchApi`.

One part of a job becomes one model invocation job:

- ``start`` writes the part's records in Bedrock's record format (``{"recordId", "modelInput"}``
  per line) to ``batch/{job_id}/bedrock/part-{NNNNN}/input.jsonl`` in the payload bucket and
  creates the job with the stack's ``BedrockBatchRole``; its output goes under
  ``.../part-{NNNNN}/output/``, where Bedrock writes ``{jobId}/input.jsonl.out`` and
  ``{jobId}/manifest.json.out``. The client request token is derived from the part, so a
  repeated start (a poller run that died after the call) finds the job it created. One
  token per part is enough because a part is never started again once its job exists: when
  Bedrock fails the whole job (``Failed``, ``Expired``) the poller fails the part's records
  with the job's message and ``llmbatch retry`` runs them online (shared/lanes/poller.py).
  A poller that restarted such parts would need an attempt number in the token, or Bedrock
  would hand back the failed job;
- a record's id is its job-file line, 11 digits (Bedrock's record ids are short and
  alphanumeric; a ``custom_id`` is neither), so the output maps back to ``custom_id`` exactly;
- ``progress`` maps the job's status and record counts; ``outcomes`` streams the output file
  and translates each ``modelOutput`` to the OpenAI shape of the record's route
  (:mod:`shared.endpoints.bedrock_translate`); ``cancel`` stops the job.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlparse

from botocore.exceptions import ClientError

from shared.endpoints import bedrock_translate as tr
from shared.endpoints.aws_sdk import classified_call, error_parts
from shared.endpoints.specs import BedrockSpec
from shared.errors import PermanentError, TransientError
from shared.lanes.native import (
    TERMINAL_STATES,
    NativeLimits,
    NativeOutcome,
    NativePart,
    NativeProgress,
    NativeQuotaExceededError,
    NativeRecord,
    NativeState,
)
from shared.results import Usage

SERVICE: Final = "Bedrock batch inference"
#: Bedrock's default quota on batch inference jobs in progress or submitted, per model
#: (adjustable: an endpoint's ``batch_max_jobs`` overrides it).
DEFAULT_MAX_JOBS: Final = 10
#: Time allowed for one control-plane or S3 call.
CALL_TIMEOUT_S: Final = 60.0
#: Record ids are the job-file line in this many digits (Bedrock's examples: 11 characters).
RECORD_ID_DIGITS: Final = 11
#: Bedrock's job names: ``[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\\+\\-\\.]){0,63}``, at most 63 characters.
JOB_NAME_MAX: Final = 63
_NAME_UNSAFE: Final = re.compile(r"[^a-zA-Z0-9-]+")
#: The ``outcome.error_code`` of a record the output does not mention.
MISSING: Final = "native_missing"
READ_CHUNK: Final = 64 * 1024

#: Bedrock's job statuses → llmbatch's.
STATES: Final[Mapping[str, NativeState]] = {
    "Submitted": NativeState.PENDING,
    "Validating": NativeState.PENDING,
    "Scheduled": NativeState.PENDING,
    "InProgress": NativeState.RUNNING,
    # Still running until Stopped: the poller keeps following it.
    "Stopping": NativeState.RUNNING,
    "Completed": NativeState.ENDED,
    "PartiallyCompleted": NativeState.ENDED,
    "Failed": NativeState.FAILED,
    "Expired": NativeState.FAILED,
    "Stopped": NativeState.STOPPED,
}

#: Control-plane error codes: worth another run later, or final.
_QUOTA: Final = frozenset({"ServiceQuotaExceededException"})
_TRANSIENT: Final = frozenset({"ThrottlingException", "InternalServerException", "ServiceUnavailableException"})
_PERMANENT: Final = frozenset(
    {"ValidationException", "AccessDeniedException", "ResourceNotFoundException", "ConflictException"}
)


def bedrock_limits(spec: BedrockSpec) -> NativeLimits:
    return NativeLimits(
        min_records=spec.batch_min_records,
        max_records=spec.batch_max_records,
        max_concurrent_jobs=spec.batch_max_jobs or DEFAULT_MAX_JOBS,
    )


def bedrock_batch_refusal(name: str, spec: BedrockSpec, route: str, body: Mapping[str, Any]) -> str | None:
    """Why a request cannot go to endpoint ``name``'s batch inference, or None (for submit)."""
    try:
        tr.batch_input(route, body, default_model=spec.default_model)
    except PermanentError as e:
        return f"endpoint {name!r} (bedrock batch inference) cannot send it: {e.message}"
    return None


# --- names and keys ---------------------------------------------------------------------------


def record_id(line: int) -> str:
    if not 0 < line < 10**RECORD_ID_DIGITS:
        raise PermanentError(f"line {line} does not fit a Bedrock record id", code="invalid_request")
    return f"{line:0{RECORD_ID_DIGITS}d}"


def part_prefix(part: NativePart) -> str:
    return f"batch/{part.job_id}/bedrock/part-{part.part:05d}/"


def input_key(part: NativePart) -> str:
    return part_prefix(part) + "input.jsonl"


def output_prefix(part: NativePart) -> str:
    return part_prefix(part) + "output/"


def client_token(part: NativePart) -> str:
    """The same for every start of one part (Bedrock's token: letters, digits and hyphens)."""
    return hashlib.sha256(f"{part.endpoint}\n{part.job_id}\n{part.part}".encode()).hexdigest()


def job_name(part: NativePart) -> str:
    """Readable and unique per part: ``llmbatch-{job id}-p{part}-{hash}``, cut to Bedrock's length."""
    tail = f"-p{part.part:05d}-{client_token(part)[:8]}"
    head = _NAME_UNSAFE.sub("-", f"llmbatch-{part.job_id}").strip("-")
    return head[: JOB_NAME_MAX - len(tail)].rstrip("-") + tail


def record_line(record: NativeRecord, batch: tr.BatchInput) -> str:
    return json.dumps({"recordId": record_id(record.line), "modelInput": batch.model_input}, separators=(",", ":"))


def s3_location(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def job_short_id(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def classify_control_error(error: ClientError) -> PermanentError | TransientError:
    code, message, status = error_parts(error)
    text = f"{SERVICE} {code or 'error'}" + (f" (HTTP {status})" if status else "") + f": {message}"
    if code in _QUOTA:
        return NativeQuotaExceededError(text, status_code=status, code=code)
    if code in _TRANSIENT or (code not in _PERMANENT and status is not None and (status == 429 or status >= 500)):
        return TransientError(text, status_code=status, code=code or f"http_{status}")
    return PermanentError(text, status_code=status, code=code or "bedrock_error")


# --- outcomes ---------------------------------------------------------------------------------


def outcome(record: NativeRecord, batch: tr.BatchInput, line: Mapping[str, Any], *, created: int) -> NativeOutcome:
    """One output line (``modelOutput`` or ``error``) as the record's outcome."""
    error = line.get("error")
    if "modelOutput" not in line or error is not None:
        code, message = (
            (error.get("errorCode"), error.get("errorMessage")) if isinstance(error, Mapping) else (None, error)
        )
        status = code if isinstance(code, int) and 100 <= code <= 599 else None
        return NativeOutcome(
            line=record.line,
            custom_id=record.custom_id,
            status_code=status,
            error_code=str(code) if code is not None else "bedrock_error",
            error_message=str(message or "Bedrock reported an error for this record"),
        )
    try:
        body = tr.batch_answer(
            batch, line["modelOutput"], body=record.body, request_id=str(line.get("recordId")), created=created
        )
    except PermanentError as e:
        return NativeOutcome(
            line=record.line,
            custom_id=record.custom_id,
            error_code=e.code or "unexpected_response",
            error_message=e.message,
        )
    return NativeOutcome(
        line=record.line, custom_id=record.custom_id, body=body, status_code=200, usage=Usage.from_body(body)
    )


def missing(record: NativeRecord) -> NativeOutcome:
    return NativeOutcome(
        line=record.line,
        custom_id=record.custom_id,
        error_code=MISSING,
        error_message="Bedrock's output has no line for this record",
    )


class BedrockBatchApi:
    """Batch inference for one ``bedrock`` endpoint, in the stack's payload bucket."""

    def __init__(self, name: str, spec: BedrockSpec, *, bedrock: Any, s3: Any, bucket: str, role_arn: str) -> None:
        self.name = name
        self._spec = spec
        self._bedrock = bedrock
        self._s3 = s3
        self._bucket = bucket
        self._role_arn = role_arn
        self._limits = bedrock_limits(spec)

    def __repr__(self) -> str:
        return f"BedrockBatchApi(name={self.name!r}, default_model={self._spec.default_model!r})"

    @property
    def limits(self) -> NativeLimits:
        return self._limits

    def _inputs(self, records: Sequence[NativeRecord]) -> list[tr.BatchInput]:
        return [tr.batch_input(r.url, r.body, default_model=self._spec.default_model) for r in records]

    async def start(self, part: NativePart, records: Sequence[NativeRecord]) -> str:
        inputs = self._inputs(records)
        models = sorted({b.model for b in inputs})
        if len(models) != 1:
            raise PermanentError(
                f"a Bedrock batch job runs one model; part {part.part} of {part.job_id} names {', '.join(models) or 'none'}",
                code="invalid_request",
            )
        payload = "".join(record_line(r, b) + "\n" for r, b in zip(records, inputs, strict=True)).encode()
        async with classified_call(SERVICE, CALL_TIMEOUT_S, classify_control_error):
            await self._s3.put_object(
                Bucket=self._bucket, Key=input_key(part), Body=payload, ContentType="application/jsonl"
            )
            response = await self._bedrock.create_model_invocation_job(
                jobName=job_name(part),
                roleArn=self._role_arn,
                clientRequestToken=client_token(part),
                modelId=models[0],
                inputDataConfig={
                    "s3InputDataConfig": {"s3Uri": f"s3://{self._bucket}/{input_key(part)}", "s3InputFormat": "JSONL"}
                },
                outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{self._bucket}/{output_prefix(part)}"}},
                timeoutDurationInHours=self._limits.completion_window_s // 3600,
            )
        return str(response["jobArn"])

    async def _job(self, native_id: str) -> dict[str, Any]:
        async with classified_call(SERVICE, CALL_TIMEOUT_S, classify_control_error):
            return dict(await self._bedrock.get_model_invocation_job(jobIdentifier=native_id))

    async def progress(self, native_id: str) -> NativeProgress:
        job = await self._job(native_id)
        status = str(job.get("status", "Submitted"))
        state = STATES.get(status, NativeState.PENDING)
        counts = job
        if "totalRecordCount" not in job and state in TERMINAL_STATES:
            counts = await self._manifest(job) or job
        return NativeProgress(
            state=state,
            total=int(counts.get("totalRecordCount", 0)),
            completed=int(counts.get("successRecordCount", 0)),
            failed=int(counts.get("errorRecordCount", 0)),
            message=f"{status}: {job['message']}" if job.get("message") else _failure(state, status),
        )

    def _output_folder(self, job: Mapping[str, Any]) -> tuple[str, str]:
        bucket, prefix = s3_location(job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"])
        return bucket, (prefix.rstrip("/") + "/" if prefix else "") + job_short_id(str(job["jobArn"])) + "/"

    async def _manifest(self, job: Mapping[str, Any]) -> dict[str, Any] | None:
        bucket, folder = self._output_folder(job)
        async with classified_call(SERVICE, CALL_TIMEOUT_S, classify_control_error):
            try:
                response = await self._s3.get_object(Bucket=bucket, Key=folder + "manifest.json.out")
            except ClientError as e:
                if error_parts(e)[0] in ("NoSuchKey", "404"):
                    return None
                raise
            async with response["Body"] as stream:
                return dict(json.loads(await stream.read()))

    async def _output_keys(self, bucket: str, folder: str) -> list[str]:
        keys: list[str] = []
        async with classified_call(SERVICE, CALL_TIMEOUT_S, classify_control_error):
            async for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder):
                keys.extend(o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".jsonl.out"))
        return sorted(keys)

    async def outcomes(self, native_id: str, records: Sequence[NativeRecord]) -> AsyncIterator[NativeOutcome]:
        job = await self._job(native_id)
        by_id = {record_id(r.line): r for r in records}
        inputs = dict(zip(by_id, self._inputs(records), strict=True))
        seen: set[str] = set()
        created = int(time.time())
        bucket, folder = self._output_folder(job)
        for key in await self._output_keys(bucket, folder):
            async with classified_call(SERVICE, CALL_TIMEOUT_S, classify_control_error):
                response = await self._s3.get_object(Bucket=bucket, Key=key)
            async with response["Body"] as stream:
                async for raw in stream.iter_lines(READ_CHUNK):
                    line = _json_object(raw)
                    rid = str(line.get("recordId")) if line else None
                    if line is None or rid not in by_id or rid in seen:
                        continue
                    seen.add(rid)
                    yield outcome(by_id[rid], inputs[rid], line, created=created)
        for rid, record in by_id.items():
            if rid not in seen:
                yield missing(record)

    async def cancel(self, native_id: str) -> None:
        try:
            async with classified_call(SERVICE, CALL_TIMEOUT_S, classify_control_error):
                await self._bedrock.stop_model_invocation_job(jobIdentifier=native_id)
        except PermanentError:
            # Stopping a job that has already ended is refused: nothing left to stop.
            if (await self.progress(native_id)).state not in TERMINAL_STATES:
                raise


def _failure(state: NativeState, status: str) -> str:
    """The message of a job that failed without one (Expired, say): its status."""
    return status if state is NativeState.FAILED else ""


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None
