"""The OpenAI Batch API, simulated: ``/v1/files`` and ``/v1/batches`` with OpenAI's shapes.

A batch's state advances with time, computed when it is read (no background task):
``validating`` for ``batch_step_s``, then ``in_progress`` at ``batch_records_per_s``
requests a second, ``finalizing`` for ``batch_step_s``, then ``completed``; a batch whose
input breaks OpenAI's rules (a line that is not a request object, a ``url`` other than the
batch's endpoint, a duplicate ``custom_id``, more than ``batch_max_requests`` lines) goes
from ``validating`` to ``failed`` with ``errors``. ``cancel`` moves a running batch to
``cancelling``, and ``cancelled`` a step later, keeping the outputs of the requests done
before it. Each request is answered as the online routes would answer it (the same
parsing, generated text and fault markers: ``[[sim:500]]`` or ``[[sim:fail-first-N:S]]``
in a prompt fails that request), at no slot and no rate limit. docs/endpoints.md lists
what is reproduced and what is not.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from llmbatch.local.simulator.config import SimulatorConfig
from llmbatch.local.simulator.faults import _has_fail_first, _parse_markers
from llmbatch.local.simulator.openai_api import (
    _ApiError,
    _invalid,
    _parse_chat,
    _parse_completion,
    _parse_embeddings,
    _Work,
)

#: The routes a batch may serve, with the parser of each (``/v1/responses`` is not simulated).
_PARSERS: dict[str, Callable[[Mapping[str, Any], SimulatorConfig], _Work]] = {
    "/v1/chat/completions": _parse_chat,
    "/v1/completions": _parse_completion,
    "/v1/embeddings": _parse_embeddings,
}
_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
_ACTIVE = frozenset({"validating", "in_progress", "finalizing", "cancelling"})


def _not_found(kind: str, object_id: str) -> _ApiError:
    return _ApiError(404, f"No such {kind}: {object_id}", type_="invalid_request_error", param="id")


@dataclass
class _File:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


@dataclass
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, Any] | None
    #: Monotonic times of each step (the wall-clock fields are derived from them).
    created: float
    wall0: float
    requests: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: Outcomes of the requests done so far, in input order: (ok, output line).
    outcomes: list[tuple[bool, dict[str, Any]]] = field(default_factory=list)
    validated: bool = False
    cancel_at: float | None = None
    done_at_cancel: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    finished: bool = False


class BatchService:
    """Files and batches of one simulator."""

    def __init__(
        self,
        config: Callable[[], SimulatorConfig],
        fail_first_calls: Callable[[], dict[str, int]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._clock = clock
        self.files: dict[str, _File] = {}
        self.batches: dict[str, _Batch] = {}
        own: dict[str, int] = {}
        #: The simulator's fail-first counts, shared with the online routes: a request failed
        #: by ``[[sim:fail-first-1:S]]`` in a batch succeeds when retried online.
        self._fail_first = fail_first_calls or (lambda: own)

    # ---- files ----------------------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.Response:
        config = self._config()
        if not request.content_type.startswith("multipart/"):
            raise _invalid("Expected a multipart/form-data request with 'file' and 'purpose'.", None)
        form = await request.post()
        purpose = form.get("purpose")
        upload = form.get("file")
        if not isinstance(purpose, str) or purpose not in _PURPOSES:
            raise _invalid(f"'purpose' must be one of {', '.join(sorted(_PURPOSES))}", "purpose")
        if not isinstance(upload, web.FileField):
            raise _invalid("Missing required parameter: 'file'.", "file")
        content = upload.file.read()
        if len(content) > config.batch_max_file_bytes:
            raise _invalid(
                f"File is too large: {len(content)} bytes; the maximum for purpose 'batch' is "
                f"{config.batch_max_file_bytes} bytes.",
                "file",
            )
        if purpose == "batch" and not upload.filename.endswith(".jsonl"):
            raise _invalid("Invalid file format for Batch API. Must be .jsonl", "file")
        f = _File(f"file-{uuid.uuid4().hex[:24]}", upload.filename, purpose, content)
        self.files[f.id] = f
        return web.json_response(f.to_dict())

    def file(self, file_id: str) -> _File:
        f = self.files.get(file_id)
        if f is None:
            raise _not_found("File", file_id)
        return f

    # ---- batches --------------------------------------------------------------------------

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str):
                raise _invalid(f"Missing required parameter: '{name}'.", name)
        if body["endpoint"] not in _PARSERS:
            raise _invalid(f"'endpoint' must be one of {', '.join(sorted(_PARSERS))}", "endpoint")
        if body["completion_window"] != "24h":
            raise _invalid("'completion_window' must be '24h'", "completion_window")
        metadata = body.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise _invalid("'metadata' must be an object", "metadata")
        f = self.files.get(body["input_file_id"])
        if f is None:
            raise _invalid(f"File with id '{body['input_file_id']}' not found.", "input_file_id")
        if f.purpose != "batch":
            raise _invalid(f"File {f.id} has purpose {f.purpose!r}; a batch needs purpose 'batch'.", "input_file_id")
        now = self._clock()
        b = _Batch(f"batch_{uuid.uuid4().hex[:24]}", f.id, body["endpoint"], metadata, now, time.time())
        self.batches[b.id] = b
        return self.view(b)

    def batch(self, batch_id: str) -> _Batch:
        b = self.batches.get(batch_id)
        if b is None:
            raise _not_found("batch", batch_id)
        return b

    def cancel(self, batch_id: str) -> dict[str, Any]:
        b = self.batch(batch_id)
        status = self._advance(b)
        if status not in ("validating", "in_progress", "finalizing"):
            raise _ApiError(
                409 if status == "cancelling" else 400,
                f"Cannot cancel a batch with status '{status}'.",
                type_="invalid_request_error",
            )
        b.done_at_cancel = self._done(b, self._clock())
        b.cancel_at = self._clock()
        return self.view(b)

    def listing(self, limit: int, after: str | None) -> dict[str, Any]:
        ids = sorted(self.batches, key=lambda i: self.batches[i].created, reverse=True)
        if after in self.batches:
            ids = ids[ids.index(after) + 1 :]
        page = [self.view(self.batches[i]) for i in ids[:limit]]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(ids) > limit,
        }

    # ---- time ----------------------------------------------------------------------------

    def _times(self, b: _Batch) -> tuple[float, float, float]:
        """When it starts running, when its last request is done, when it completes."""
        c = self._config()
        running = b.created + c.batch_step_s
        rate = max(c.batch_records_per_s, 1e-9)
        done = running + len(b.requests) / rate
        return running, done, done + c.batch_step_s

    def _done(self, b: _Batch, now: float) -> int:
        running, _, _ = self._times(b)
        if now < running or not b.validated or b.errors:
            return 0
        return min(len(b.requests), math.floor((now - running) * self._config().batch_records_per_s))

    def _advance(self, b: _Batch) -> str:
        """The batch's status now, with its outcomes and files brought up to date."""
        c = self._config()
        now = self._clock()
        if now < b.created + c.batch_step_s:
            return "validating"
        if not b.validated:
            self._validate(b)
        if b.errors:
            return "failed"
        _, done_at, complete_at = self._times(b)
        if b.cancel_at is not None:
            self._answer(b, b.done_at_cancel)
            if now < b.cancel_at + c.batch_step_s:
                return "cancelling"
            self._finish(b)
            return "cancelled"
        self._answer(b, self._done(b, now))
        if now < done_at:
            return "in_progress"
        if now < complete_at:
            return "finalizing"
        self._finish(b)
        return "completed"

    def _validate(self, b: _Batch) -> None:
        b.validated = True
        c = self._config()
        raw_lines = [x for x in self.files[b.input_file_id].content.decode(errors="replace").splitlines() if x.strip()]
        if len(raw_lines) > c.batch_max_requests:
            b.errors.append(
                {
                    "code": "too_many_requests",
                    "message": f"The input file has {len(raw_lines)} requests; a batch may have at most "
                    f"{c.batch_max_requests}.",
                    "param": None,
                    "line": None,
                }
            )
            return
        seen: set[str] = set()
        for n, raw in enumerate(raw_lines, start=1):
            problem = self._line_problem(raw, b.endpoint, seen)
            if problem:
                b.errors.append({"code": problem[0], "message": problem[1], "param": problem[2], "line": n})
            else:
                b.requests.append(json.loads(raw))

    @staticmethod
    def _line_problem(raw: str, endpoint: str, seen: set[str]) -> tuple[str, str, str | None] | None:
        try:
            line = json.loads(raw)
        except ValueError:
            return "invalid_json_line", "This line is not parseable as valid JSON.", None
        if not isinstance(line, dict):
            return "invalid_request", "Each line must be a JSON object.", None
        custom_id = line.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            return "missing_required_parameter", "Missing required parameter: 'custom_id'.", "custom_id"
        if custom_id in seen:
            return "duplicate_custom_id", f"The custom_id {custom_id!r} is used more than once.", "custom_id"
        seen.add(custom_id)
        if line.get("method") != "POST":
            return "invalid_method", "'method' must be 'POST'.", "method"
        if line.get("url") != endpoint:
            return "mismatched_endpoint", f"The url {line.get('url')!r} does not match the batch's endpoint.", "url"
        if not isinstance(line.get("body"), dict):
            return "invalid_request", "'body' must be an object.", "body"
        return None

    def _answer(self, b: _Batch, upto: int) -> None:
        config = self._config()
        for request in b.requests[len(b.outcomes) : upto]:
            b.outcomes.append(self._one(request, b.endpoint, config))

    def _one(self, request: dict[str, Any], endpoint: str, config: SimulatorConfig) -> tuple[bool, dict[str, Any]]:
        request_id = f"req_{uuid.uuid4().hex}"
        try:
            work = _PARSERS[endpoint](request["body"], config)
            markers = _parse_markers(work.texts)
            status = markers.status
            label = f"[[sim:{status}]]"
            if status is None and markers.fail_first is not None:
                # Each request of a batch is tried once: a fail-first count of 1+ fails it.
                counts = self._fail_first()
                key = "\x00".join(text for text in work.texts if _has_fail_first(text))
                calls = counts[key] = counts.get(key, 0) + 1
                limit, fail_status = markers.fail_first
                if calls <= limit:
                    status = fail_status
                    label = f"[[sim:fail-first-{limit}:{fail_status}]] (call {calls} of {limit})"
            if status is not None:
                raise _ApiError(status, f"Simulated error from marker {label}")
            body, _ = work.build(config)
            response = {"status_code": 200, "request_id": request_id, "body": body}
            ok = True
        except _ApiError as e:
            error = {"message": e.message, "type": e.type, "param": e.param, "code": e.code}
            response = {"status_code": e.status, "request_id": request_id, "body": {"error": error}}
            ok = False
        line = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": request["custom_id"], "response": response}
        return ok, {**line, "error": None}

    def _finish(self, b: _Batch) -> None:
        if b.finished:
            return
        b.finished = True
        good = [line for ok, line in b.outcomes if ok]
        bad = [line for ok, line in b.outcomes if not ok]
        for lines, attr in ((good, "output_file_id"), (bad, "error_file_id")):
            if lines:
                content = "".join(json.dumps(x) + "\n" for x in lines).encode()
                f = _File(f"file-{uuid.uuid4().hex[:24]}", f"{b.id}_{attr}.jsonl", "batch_output", content)
                self.files[f.id] = f
                setattr(b, attr, f.id)

    # ---- the object -------------------------------------------------------------------------

    def view(self, b: _Batch) -> dict[str, Any]:
        status = self._advance(b)
        c = self._config()
        running, done_at, complete_at = self._times(b)

        def wall(t: float | None) -> int | None:
            return None if t is None else int(b.wall0 + (t - b.created))

        reached = {
            "in_progress_at": running if b.validated and not b.errors else None,
            "finalizing_at": done_at if status in ("finalizing", "completed") else None,
            "completed_at": complete_at if status == "completed" else None,
            "failed_at": b.created + c.batch_step_s if status == "failed" else None,
            "cancelling_at": b.cancel_at,
            "cancelled_at": (b.cancel_at + c.batch_step_s) if status == "cancelled" and b.cancel_at else None,
        }
        failed = sum(1 for ok, _ in b.outcomes if not ok)
        total = len(b.requests) if b.validated and not b.errors else 0
        return {
            "id": b.id,
            "object": "batch",
            "endpoint": b.endpoint,
            "errors": {"object": "list", "data": b.errors} if b.errors else None,
            "input_file_id": b.input_file_id,
            "completion_window": "24h",
            "status": status,
            "output_file_id": b.output_file_id,
            "error_file_id": b.error_file_id,
            "created_at": int(b.wall0),
            "expires_at": int(b.wall0) + 24 * 3600,
            "expired_at": None,
            **{k: wall(v) for k, v in reached.items()},
            "request_counts": {"total": total, "completed": len(b.outcomes) - failed, "failed": failed},
            "metadata": b.metadata,
        }


def add_batch_routes(app: web.Application, service: BatchService, read_json: Callable[[web.Request], Any]) -> None:
    async def upload(request: web.Request) -> web.Response:
        return await service.upload(request)

    async def get_file(request: web.Request) -> web.Response:
        return web.json_response(service.file(request.match_info["file_id"]).to_dict())

    async def file_content(request: web.Request) -> web.Response:
        f = service.file(request.match_info["file_id"])
        return web.Response(body=f.content, content_type="application/octet-stream")

    async def create(request: web.Request) -> web.Response:
        return web.json_response(service.create(await read_json(request)))

    async def get_batch(request: web.Request) -> web.Response:
        return web.json_response(service.view(service.batch(request.match_info["batch_id"])))

    async def cancel(request: web.Request) -> web.Response:
        return web.json_response(service.cancel(request.match_info["batch_id"]))

    async def listing(request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError as e:
            raise _invalid("'limit' must be an integer", "limit") from e
        if not 1 <= limit <= 100:
            raise _invalid("'limit' must be from 1 to 100", "limit")
        return web.json_response(service.listing(limit, request.query.get("after")))

    app.router.add_post("/v1/files", upload)
    app.router.add_get("/v1/files/{file_id}", get_file)
    app.router.add_get("/v1/files/{file_id}/content", file_content)
    app.router.add_post("/v1/batches", create)
    app.router.add_get("/v1/batches", listing)
    app.router.add_get("/v1/batches/{batch_id}", get_batch)
    app.router.add_post("/v1/batches/{batch_id}/cancel", cancel)
