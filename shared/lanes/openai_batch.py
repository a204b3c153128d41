"""The OpenAI Batch API (``/v1/files`` + ``/v1/batches``) as a :class:`NativeBatchApi`.

A part becomes one batch: its records are uploaded as a JSONL file (``purpose=batch``), one
line per record in the Batch input format, and a batch is created on it with the 24-hour
completion window. Progress is the batch's ``status`` and ``request_counts``; outcomes are
the lines of its output file (answers) and error file (refused or failed requests), mapped
back to the records by ``custom_id``. Works with OpenAI itself and any server implementing
the same routes (the local endpoint simulator does).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import aiohttp

from shared.endpoints.openai_http import TRANSIENT_STATUS, error_message, join_url
from shared.endpoints.specs import OpenAISpec
from shared.errors import PermanentError, TransientError
from shared.lanes.native import (
    NativeLimits,
    NativeOutcome,
    NativePart,
    NativeProgress,
    NativeQuotaExceededError,
    NativeRecord,
    NativeState,
)
from shared.results import Usage

#: OpenAI's own limits of one batch: requests per input file, and its completion window.
OPENAI_MAX_REQUESTS: Final = 50_000
COMPLETION_WINDOW: Final = "24h"
COMPLETION_WINDOW_S: Final = 24 * 3600
#: A record the batch reported nothing for.
MISSING_CODE: Final = "native_missing"

#: The batch's status in llmbatch's words. ``expired`` batches keep the outputs of the
#: requests finished in time (the rest are in the error file), so they end with outcomes.
_STATES: Final = {
    "validating": NativeState.PENDING,
    "in_progress": NativeState.RUNNING,
    "finalizing": NativeState.RUNNING,
    "cancelling": NativeState.RUNNING,
    "completed": NativeState.ENDED,
    "expired": NativeState.ENDED,
    "failed": NativeState.FAILED,
    "cancelled": NativeState.STOPPED,
}
#: Error codes of a refused batch creation that mean "too many batches or tokens queued now".
_QUOTA_CODES: Final = frozenset({"batch_limit_exceeded", "token_limit_exceeded", "rate_limit_exceeded"})


def openai_limits(spec: OpenAISpec) -> NativeLimits:
    """No minimum; at most 50,000 requests a batch (or fewer, by setting); 24 hours."""
    return NativeLimits(
        min_records=1,
        max_records=min(spec.batch_max_records, OPENAI_MAX_REQUESTS),
        max_concurrent_jobs=spec.batch_max_jobs,
        completion_window_s=COMPLETION_WINDOW_S,
    )


def input_line(record: NativeRecord) -> dict[str, Any]:
    """One line of a Batch input file."""
    return {"custom_id": record.custom_id, "method": "POST", "url": record.url, "body": record.body}


class OpenAIBatchApi:
    """The Batch API of one ``openai`` endpoint."""

    def __init__(
        self,
        name: str,
        spec: OpenAISpec,
        *,
        session: aiohttp.ClientSession,
        api_key: str | None,
        call_timeout_s: float = 60.0,
    ) -> None:
        self.name = name
        self._spec = spec
        self._session = session
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = aiohttp.ClientTimeout(total=call_timeout_s)
        self._limits = openai_limits(spec)

    @property
    def limits(self) -> NativeLimits:
        return self._limits

    def _url(self, path: str) -> str:
        return join_url(self._spec.url, "/v1" + path)

    async def start(self, part: NativePart, records: Sequence[NativeRecord]) -> str:
        if not records:
            raise PermanentError("a batch needs at least one request", code="native_refused")
        routes = {r.url for r in records}
        if len(routes) != 1:
            raise PermanentError(f"a batch serves one route, this part has {sorted(routes)}", code="native_refused")
        content = "".join(json.dumps(input_line(r), separators=(",", ":")) + "\n" for r in records).encode()
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field(
            "file", content, filename=f"{part.job_id}-part-{part.part:05d}.jsonl", content_type="application/jsonl"
        )
        uploaded = await self._call("POST", "/files", data=form)
        batch = await self._call(
            "POST",
            "/batches",
            json={
                "input_file_id": uploaded["id"],
                "endpoint": routes.pop(),
                "completion_window": COMPLETION_WINDOW,
                "metadata": {"llmbatch_job": part.job_id, "llmbatch_part": str(part.part)},
            },
        )
        return str(batch["id"])

    async def progress(self, native_id: str) -> NativeProgress:
        batch = await self._call("GET", f"/batches/{native_id}")
        status = str(batch.get("status", ""))
        state = _STATES.get(status)
        if state is None:
            raise TransientError(f"batch {native_id} has an unknown status {status!r}", code="native_status")
        counts = batch.get("request_counts") or {}
        message = ""
        if state is NativeState.FAILED or status == "expired":
            message = _batch_errors(batch) or f"the batch {status}"
        return NativeProgress(
            state,
            total=int(counts.get("total") or 0),
            completed=int(counts.get("completed") or 0),
            failed=int(counts.get("failed") or 0),
            message=message,
        )

    async def outcomes(self, native_id: str, records: Sequence[NativeRecord]) -> AsyncIterator[NativeOutcome]:
        batch = await self._call("GET", f"/batches/{native_id}")
        by_id: dict[str, NativeOutcome] = {}
        wanted = {r.custom_id: r for r in records}
        for file_key in ("output_file_id", "error_file_id"):
            file_id = batch.get(file_key)
            if not file_id:
                continue
            text = await self._content(str(file_id))
            for raw in text.splitlines():
                if not raw.strip():
                    continue
                outcome = _outcome(json.loads(raw), wanted)
                if outcome is not None and outcome.custom_id not in by_id:
                    by_id[outcome.custom_id] = outcome
        for r in records:
            yield by_id.get(r.custom_id) or NativeOutcome(
                r.line,
                r.custom_id,
                error_code=MISSING_CODE,
                error_message=f"batch {native_id} ({batch.get('status')}) reported nothing for this request",
            )

    async def cancel(self, native_id: str) -> None:
        try:
            await self._call("POST", f"/batches/{native_id}/cancel")
        except PermanentError as e:
            # A batch already finished or cancelled cannot be cancelled: nothing to stop.
            if e.status_code not in (400, 409):
                raise

    async def _content(self, file_id: str) -> str:
        try:
            async with self._session.get(
                self._url(f"/files/{file_id}/content"), headers=self._headers, timeout=self._timeout
            ) as resp:
                raw = await resp.read()
                if resp.status >= 300:
                    _raise(resp.status, _json_or_text(raw), f"file {file_id}")
                return raw.decode()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise TransientError(f"reading file {file_id} failed: {e!r}", code="native_call") from e

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            async with self._session.request(
                method, self._url(path), headers=self._headers, timeout=self._timeout, **kwargs
            ) as resp:
                body = _json_or_text(await resp.read())
                if resp.status >= 300:
                    _raise(resp.status, body, f"{method} {path}")
                if not isinstance(body, dict):
                    raise TransientError(f"{method} {path}: not a JSON object", code="native_call")
                return body
        except (aiohttp.ClientError, TimeoutError) as e:
            raise TransientError(f"{method} {path} failed: {e!r}", code="native_call") from e


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw.decode(errors="replace")[:500]


def _raise(status: int, body: Any, what: str) -> None:
    message, code = error_message(body, str(body)[:300])
    text = f"{what}: HTTP {status}: {message}"
    if status == 429 and code in _QUOTA_CODES:
        raise NativeQuotaExceededError(text, code=code)
    if status >= 500 or status in TRANSIENT_STATUS:
        raise TransientError(text, code=code or f"http_{status}")
    raise PermanentError(text, status_code=status, code=code or f"http_{status}")


def _batch_errors(batch: dict[str, Any]) -> str:
    errors = batch.get("errors") or {}
    data = errors.get("data") if isinstance(errors, dict) else None
    if not data:
        return ""
    parts = []
    for e in data[:3]:
        where = f" (line {e['line']})" if e.get("line") is not None else ""
        parts.append(f"{e.get('code') or 'error'}: {e.get('message') or ''}{where}")
    more = f" and {len(data) - 3} more" if len(data) > 3 else ""
    return "; ".join(parts) + more


def _outcome(line: dict[str, Any], wanted: dict[str, NativeRecord]) -> NativeOutcome | None:
    """A line of an output or error file: ``{"id", "custom_id", "response": {"status_code",
    "request_id", "body"} | null, "error": {"code", "message"} | null}``."""
    record = wanted.get(str(line.get("custom_id")))
    if record is None:
        return None
    response = line.get("response") or {}
    error = line.get("error")
    status = response.get("status_code")
    body = response.get("body")
    if isinstance(error, dict):
        return NativeOutcome(
            record.line,
            record.custom_id,
            status_code=status,
            error_code=str(error.get("code") or "native_error"),
            error_message=str(error.get("message") or ""),
        )
    if status is not None and 200 <= int(status) < 300 and isinstance(body, dict):
        return NativeOutcome(
            record.line, record.custom_id, body=body, status_code=int(status), usage=Usage.from_body(body)
        )
    message, code = error_message(body, f"HTTP {status}")
    return NativeOutcome(
        record.line,
        record.custom_id,
        body=None,
        status_code=int(status) if status is not None else None,
        error_code=code or f"http_{status}",
        error_message=message,
    )
