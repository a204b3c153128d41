"""Amazon Bedrock's batch inference control plane (service ``bedrock``), for the Bedrock fake.

moto 5.2 has no model invocation jobs, so :mod:`llmbatch.local.bedrock_fake` serves these
four operations too, at the REST-JSON paths of botocore's ``bedrock`` model, so the real
aiobotocore client talks to it unchanged:

- ``POST /model-invocation-job`` (CreateModelInvocationJob): checks the request as Bedrock's
  model does (name, token, role and S3 URI patterns, timeout 24-168 h), then reads the input
  from S3 (moto's server, at ``s3_endpoint_url``): ``.jsonl`` objects of ``{"recordId",
  "modelInput"}`` lines, at least ``min_records`` and at most ``max_records`` of them, or a
  ``ValidationException``; more than ``max_jobs`` unfinished jobs of one model is a
  ``ServiceQuotaExceededException``. A repeated ``clientRequestToken`` returns the job it made.
- ``GET /model-invocation-job/{jobIdentifier}`` (ARN or id), ``GET /model-invocation-jobs``
  (filters, sort, pages), ``POST /model-invocation-job/{jobIdentifier}/stop``.

A job moves Submitted → Validating → Scheduled → InProgress every ``step_s`` seconds, then
answers ``records_per_step`` records per step (0: all at once) with the runtime fake's own
model, and ends Completed (PartiallyCompleted when a record failed) after writing
``{output}/{jobId}/{input name}.out`` and ``{output}/{jobId}/manifest.json.out``. A record
carrying a fault marker (``[[bedrock:ValidationException]]``...) gets an ``error`` line
instead; ``fail-first-N`` markers fail it too (a batch job tries each record once here) and
``sleep`` markers are ignored. Stop ends a job Stopped at once (Stopping in between), with the
output of the records answered so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import unquote, urlparse

from aiobotocore.session import get_session
from aiohttp import web

FakeAnswer = Callable[[str, Any], tuple[dict[str, Any], dict[str, str]]]
#: ``(raw model input) -> (error code, message) | None``: the runtime fake's fault markers.
FakeFault = Callable[[str], tuple[str, str] | None]

#: Patterns and ranges of botocore's ``bedrock`` model (2023-04-20).
JOB_NAME: Final = re.compile(r"^[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}$")
JOB_NAME_MAX: Final = 63
TOKEN: Final = re.compile(r"^[a-zA-Z0-9]{1,256}(-*[a-zA-Z0-9]){0,256}$")
ROLE_ARN: Final = re.compile(r"^arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+$")
S3_URI: Final = re.compile(
    r"^s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9](?:/[-!_*'().a-z0-9A-Z]+(?:/[-!_*'().a-z0-9A-Z]+)*)?/?$"
)
TIMEOUT_HOURS: Final = (24, 168)
RECORD_ID: Final = re.compile(r"^[a-zA-Z0-9]+$")

ACTIVE: Final = frozenset({"Submitted", "Validating", "Scheduled", "InProgress", "Stopping"})
_ADVANCE: Final = {"Submitted": "Validating", "Validating": "Scheduled", "Scheduled": "InProgress"}


class BatchFault(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass
class BatchConfig:
    """Quotas (Bedrock's defaults, adjustable) and speed of the fake's batch jobs."""

    min_records: int = 100
    max_records: int = 50_000
    #: Unfinished jobs (Submitted to Stopping) per model.
    max_jobs: int = 10
    step_s: float = 0.5
    #: Records answered per step once InProgress; 0 answers all in one step.
    records_per_step: int = 0

    def update(self, changes: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        for name, value in changes.items():
            if name not in names:
                raise BatchFault("ValidationException", f"unknown setting {name!r}")
            setattr(self, name, type(getattr(self, name))(value))


@dataclass
class _Input:
    key: str
    lines: list[dict[str, Any]]


@dataclass
class BatchJob:
    arn: str
    request: dict[str, Any]
    inputs: list[_Input]
    status: str = "Submitted"
    message: str | None = None
    submit_time: float = field(default_factory=time.time)
    last_modified: float = field(default_factory=time.time)
    end_time: float | None = None
    #: Output lines answered so far, per input key.
    answered: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    success: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    task: asyncio.Task[None] | None = None
    #: Set by Stop (and :meth:`FakeBatchJobs.step`): the next step comes at once, not after ``step_s``.
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def job_id(self) -> str:
        return self.arn.rsplit("/", 1)[-1]

    @property
    def total(self) -> int:
        return sum(len(i.lines) for i in self.inputs)

    @property
    def processed(self) -> int:
        return self.success + self.errors

    def set_status(self, status: str, message: str | None = None) -> None:
        self.status, self.last_modified = status, time.time()
        if message is not None:
            self.message = message
        if status not in ACTIVE:
            self.end_time = self.last_modified

    def describe(self) -> dict[str, Any]:
        r = self.request
        out: dict[str, Any] = {
            "jobArn": self.arn,
            "jobName": r["jobName"],
            "modelId": r["modelId"],
            "roleArn": r["roleArn"],
            "status": self.status,
            "submitTime": _iso(self.submit_time),
            "lastModifiedTime": _iso(self.last_modified),
            "inputDataConfig": r["inputDataConfig"],
            "outputDataConfig": r["outputDataConfig"],
            "timeoutDurationInHours": r.get("timeoutDurationInHours", TIMEOUT_HOURS[0]),
            "jobExpirationTime": _iso(self.submit_time + 3600 * r.get("timeoutDurationInHours", TIMEOUT_HOURS[0])),
            "modelInvocationType": r.get("modelInvocationType", "InvokeModel"),
            "totalRecordCount": self.total,
            "processedRecordCount": self.processed,
            "successRecordCount": self.success,
            "errorRecordCount": self.errors,
        }
        if r.get("clientRequestToken"):
            out["clientRequestToken"] = r["clientRequestToken"]
        if self.message:
            out["message"] = self.message
        if self.end_time is not None:
            out["endTime"] = _iso(self.end_time)
        return out


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FakeBatchJobs:
    """The jobs, and the handlers of the four operations."""

    def __init__(
        self,
        answer: FakeAnswer,
        fault: FakeFault,
        *,
        config: BatchConfig | None = None,
        s3_endpoint_url: str | None = None,
        region: str = "us-east-1",
        account: str = "123456789012",
    ) -> None:
        self._answer, self._fault = answer, fault
        self.config = config or BatchConfig()
        self.s3_endpoint_url = s3_endpoint_url
        self._region, self._account = region, account
        self.jobs: dict[str, BatchJob] = {}
        self._by_token: dict[str, str] = {}
        self._s3: Any = None
        self._s3_exit: contextlib.AsyncExitStack | None = None

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/model-invocation-job", self.create)
        app.router.add_get("/model-invocation-jobs", self.list_jobs)
        app.router.add_post(r"/model-invocation-job/{jobIdentifier:.+}/stop", self.stop)
        app.router.add_get(r"/model-invocation-job/{jobIdentifier:.+}", self.get)
        app.router.add_post("/_fake/batch/config", self.set_config)
        app.on_cleanup.append(self._close)

    async def _close(self, _: web.Application) -> None:
        for job in self.jobs.values():
            if job.task is not None:
                job.task.cancel()
        if self._s3_exit is not None:
            await self._s3_exit.aclose()
            self._s3_exit = self._s3 = None

    async def _client(self) -> Any:
        if self._s3 is None:
            session = get_session()
            session.set_credentials("testing", "testing")
            self._s3_exit = contextlib.AsyncExitStack()
            self._s3 = await self._s3_exit.enter_async_context(
                session.create_client("s3", region_name=self._region, endpoint_url=self.s3_endpoint_url)
            )
        return self._s3

    async def use_s3(self, s3_endpoint_url: str | None) -> None:
        """Read and write S3 at ``s3_endpoint_url`` from the next job on (a fake started
        before the moto server it is to use: the local stack's, say)."""
        if self._s3_exit is not None:
            await self._s3_exit.aclose()
            self._s3_exit = self._s3 = None
        self.s3_endpoint_url = s3_endpoint_url

    def step(self, job_id: str) -> None:
        """Take the job's next step now (tests drive a slow job step by step)."""
        self.jobs[job_id.rsplit("/", 1)[-1]].wake.set()

    # --- handlers ---------------------------------------------------------------------------

    async def set_config(self, request: web.Request) -> web.Response:
        return await _answer(lambda: self._set_config(request))

    async def _set_config(self, request: web.Request) -> dict[str, Any]:
        self.config.update(await request.json())
        return {f.name: getattr(self.config, f.name) for f in fields(self.config)}

    async def create(self, request: web.Request) -> web.Response:
        return await _answer(lambda: self._create(request))

    async def get(self, request: web.Request) -> web.Response:
        return await _answer(lambda: self._get(request))

    async def list_jobs(self, request: web.Request) -> web.Response:
        return await _answer(lambda: self._list(request))

    async def stop(self, request: web.Request) -> web.Response:
        return await _answer(lambda: self._stop(request))

    async def _create(self, request: web.Request) -> dict[str, Any]:
        _check_signature(request)
        body = await _json_body(request)
        token = body.get("clientRequestToken")
        if token is not None and not (isinstance(token, str) and TOKEN.match(token)):
            raise BatchFault("ValidationException", "clientRequestToken does not match the required pattern")
        if token in self._by_token:
            job = self.jobs[self._by_token[token]]
            if {k: v for k, v in job.request.items() if k != "tags"} != {k: v for k, v in body.items() if k != "tags"}:
                raise BatchFault("ConflictException", "The clientRequestToken was used with different parameters.")
            return {"jobArn": job.arn}
        _check_request(body)
        model = body["modelId"]
        running = sum(1 for j in self.jobs.values() if j.request["modelId"] == model and j.status in ACTIVE)
        if running >= self.config.max_jobs:
            raise BatchFault(
                "ServiceQuotaExceededException",
                f"You have reached the maximum number of batch inference jobs ({self.config.max_jobs}) "
                f"in progress or submitted for model {model}.",
            )
        inputs = await self._read_inputs(body["inputDataConfig"]["s3InputDataConfig"]["s3Uri"])
        total = sum(len(i.lines) for i in inputs)
        if total < self.config.min_records:
            raise BatchFault(
                "ValidationException",
                f"The number of records ({total}) is less than the minimum records per batch inference job "
                f"({self.config.min_records}).",
            )
        if total > self.config.max_records:
            raise BatchFault(
                "ValidationException",
                f"The number of records ({total}) exceeds the records per batch inference job "
                f"({self.config.max_records}).",
            )
        arn = f"arn:aws:bedrock:{self._region}:{self._account}:model-invocation-job/{_short_id()}"
        job = BatchJob(arn=arn, request=body, inputs=inputs)
        self.jobs[job.job_id] = job
        if token:
            self._by_token[token] = job.job_id
        job.task = asyncio.get_running_loop().create_task(self._run(job))
        return {"jobArn": arn}

    def _find(self, request: web.Request) -> BatchJob:
        _check_signature(request)
        identifier = unquote(request.match_info["jobIdentifier"])
        job = self.jobs.get(identifier.rsplit("/", 1)[-1])
        if job is None or (identifier.startswith("arn:") and identifier != job.arn):
            raise BatchFault("ResourceNotFoundException", f"The specified job {identifier} was not found.", 404)
        return job

    async def _get(self, request: web.Request) -> dict[str, Any]:
        return self._find(request).describe()

    async def _stop(self, request: web.Request) -> dict[str, Any]:
        job = self._find(request)
        if job.status not in ACTIVE:
            raise BatchFault("ValidationException", f"The job is in status {job.status} and cannot be stopped.")
        if job.status != "Stopping":
            job.set_status("Stopping")
            job.wake.set()
        return {}

    async def _list(self, request: web.Request) -> dict[str, Any]:
        _check_signature(request)
        q = request.query
        jobs = sorted(self.jobs.values(), key=lambda j: j.submit_time, reverse=q.get("sortOrder") == "Descending")
        if "statusEquals" in q:
            jobs = [j for j in jobs if j.status == q["statusEquals"]]
        if "nameContains" in q:
            jobs = [j for j in jobs if q["nameContains"] in j.request["jobName"]]
        for name, keep in (("submitTimeAfter", 1), ("submitTimeBefore", -1)):
            if name in q:
                bound = _parse_time(q[name])
                jobs = [j for j in jobs if (j.submit_time - bound) * keep > 0]
        start = int(q.get("nextToken", "0") or 0)
        size = int(q.get("maxResults", "1000"))
        if not 1 <= size <= 1000:
            raise BatchFault("ValidationException", "maxResults must be between 1 and 1000")
        page = jobs[start : start + size]
        out: dict[str, Any] = {"invocationJobSummaries": [j.describe() for j in page]}
        if start + size < len(jobs):
            out["nextToken"] = str(start + size)
        return out

    # --- S3 ---------------------------------------------------------------------------------

    async def _read_inputs(self, uri: str) -> list[_Input]:
        bucket, key = _s3_location(uri)
        s3 = await self._client()
        try:
            if key.endswith(".jsonl"):
                keys = [key]
            else:
                listed = await s3.list_objects_v2(Bucket=bucket, Prefix=key)
                keys = [o["Key"] for o in listed.get("Contents", []) if o["Key"].endswith(".jsonl")]
            inputs = []
            for k in keys:
                response = await s3.get_object(Bucket=bucket, Key=k)
                async with response["Body"] as stream:
                    inputs.append(_Input(k, _parse_records(k, await stream.read())))
        except BatchFault:
            raise
        except Exception as e:  # the service role cannot read it, say
            raise BatchFault("ValidationException", f"Unable to read the input data at {uri}: {e}") from e
        if not inputs:
            raise BatchFault("ValidationException", f"No .jsonl input files found at {uri}.")
        return inputs

    async def _write_output(self, job: BatchJob) -> None:
        bucket, prefix = _s3_location(job.request["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"])
        folder = (prefix.rstrip("/") + "/" if prefix else "") + job.job_id + "/"
        s3 = await self._client()
        for item in job.inputs:
            lines = job.answered.get(item.key, [])
            body = "".join(json.dumps(line) + "\n" for line in lines).encode()
            await s3.put_object(Bucket=bucket, Key=folder + item.key.rsplit("/", 1)[-1] + ".out", Body=body)
        manifest = {
            "totalRecordCount": job.total,
            "processedRecordCount": job.processed,
            "successRecordCount": job.success,
            "errorRecordCount": job.errors,
            "inputTokenCount": job.input_tokens,
            "outputTokenCount": job.output_tokens,
        }
        await s3.put_object(Bucket=bucket, Key=folder + "manifest.json.out", Body=json.dumps(manifest).encode())

    # --- the job's life ---------------------------------------------------------------------

    async def _run(self, job: BatchJob) -> None:
        pending = [(item, line) for item in job.inputs for line in item.lines]
        while job.status in ACTIVE:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job.wake.wait(), self.config.step_s)
            job.wake.clear()
            if job.status == "Stopping":
                await self._end(job, "Stopped")
            elif job.status in _ADVANCE:
                job.set_status(_ADVANCE[job.status])
            else:
                step = self.config.records_per_step or len(pending)
                for item, line in pending[:step]:
                    job.answered.setdefault(item.key, []).append(self._record(job, line))
                del pending[:step]
                if not pending:
                    await self._end(job, "PartiallyCompleted" if job.errors else "Completed")

    async def _end(self, job: BatchJob, status: str) -> None:
        try:
            await self._write_output(job)
        except Exception as e:
            job.set_status("Failed", f"Unable to write the output: {e}")
            return
        job.set_status(status)

    def _record(self, job: BatchJob, line: dict[str, Any]) -> dict[str, Any]:
        model_input = line["modelInput"]
        out: dict[str, Any] = {"recordId": line["recordId"], "modelInput": model_input}
        fault = self._fault(json.dumps(model_input))
        if fault is None:
            try:
                answer, headers = self._answer(job.request["modelId"], model_input)
            except Exception as e:  # the runtime fake's BedrockFault: a refused record
                fault = (str(getattr(e, "code", "ValidationException")), str(getattr(e, "message", e)))
            else:
                job.success += 1
                lowered = {k.lower(): v for k, v in headers.items()}
                job.input_tokens += int(lowered.get("x-amzn-bedrock-input-token-count", 0))
                job.output_tokens += int(lowered.get("x-amzn-bedrock-output-token-count", 0))
                return out | {"modelOutput": answer}
        job.errors += 1
        status = 429 if fault[0] == "ThrottlingException" else 500 if "Internal" in fault[0] else 400
        return out | {"error": {"errorCode": status, "errorMessage": f"{fault[0]}: {fault[1]}"}}


def _short_id() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(12))


def _s3_location(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def _parse_time(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _parse_records(key: str, raw: bytes) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for n, text in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except json.JSONDecodeError as e:
            raise BatchFault("ValidationException", f"Invalid JSON on line {n} of {key}.") from e
        if not isinstance(line, dict) or not isinstance(line.get("modelInput"), dict):
            raise BatchFault("ValidationException", f"Line {n} of {key} has no modelInput object.")
        rid = line.get("recordId")
        if rid is None:
            line["recordId"] = f"{len(records) + 1:011d}"  # Bedrock adds one in the output
        elif not (isinstance(rid, str) and RECORD_ID.match(rid)):
            raise BatchFault("ValidationException", f"Line {n} of {key}: recordId must be an alphanumeric string.")
        records.append(line)
    return records


def _check_request(body: dict[str, Any]) -> None:
    for name in ("jobName", "roleArn", "modelId", "inputDataConfig", "outputDataConfig"):
        if name not in body:
            raise BatchFault("ValidationException", f"1 validation error detected: '{name}' must not be null")
    name = body["jobName"]
    if not (isinstance(name, str) and len(name) <= JOB_NAME_MAX and JOB_NAME.match(name)):
        raise BatchFault("ValidationException", "jobName does not satisfy the required pattern or length")
    if not (isinstance(body["roleArn"], str) and ROLE_ARN.match(body["roleArn"])):
        raise BatchFault("ValidationException", "roleArn does not satisfy the required pattern")
    try:
        s3_in = body["inputDataConfig"]["s3InputDataConfig"]
        s3_out = body["outputDataConfig"]["s3OutputDataConfig"]
    except (KeyError, TypeError) as e:
        raise BatchFault("ValidationException", "inputDataConfig and outputDataConfig need an S3 location") from e
    for what, uri in (("input", s3_in.get("s3Uri")), ("output", s3_out.get("s3Uri"))):
        if not (isinstance(uri, str) and S3_URI.match(uri)):
            raise BatchFault("ValidationException", f"The {what} S3 URI {uri!r} is not valid.")
    if s3_in.get("s3InputFormat", "JSONL") != "JSONL":
        raise BatchFault("ValidationException", "s3InputFormat must be JSONL")
    hours = body.get("timeoutDurationInHours", TIMEOUT_HOURS[0])
    if not (isinstance(hours, int) and TIMEOUT_HOURS[0] <= hours <= TIMEOUT_HOURS[1]):
        raise BatchFault("ValidationException", "timeoutDurationInHours must be between 24 and 168")
    if body.get("modelInvocationType", "InvokeModel") != "InvokeModel":
        raise BatchFault("ValidationException", "The fake runs InvokeModel jobs only.")


def _check_signature(request: web.Request) -> None:
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 ") or "/bedrock/aws4_request" not in auth:
        raise BatchFault("AccessDeniedException", "Missing or invalid SigV4 signature for service bedrock.", 403)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except json.JSONDecodeError as e:
        raise BatchFault("ValidationException", "The request body is not valid JSON.") from e
    if not isinstance(body, dict):
        raise BatchFault("ValidationException", "The request body must be a JSON object.")
    return body


async def _answer(handler: Callable[[], Any]) -> web.Response:
    request_id = secrets.token_hex(16)
    try:
        payload = await handler()
    except BatchFault as fault:
        return web.json_response(
            {"message": fault.message},
            status=fault.status,
            headers={
                "x-amzn-ErrorType": f"{fault.code}:http://internal.amazon.com/coral/com.amazon.bedrock/",
                "x-amzn-RequestId": request_id,
            },
        )
    return web.json_response(payload, headers={"x-amzn-RequestId": request_id})
