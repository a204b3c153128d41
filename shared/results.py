"""What a request ends as: the result record stored in DynamoDB, and its OpenAI output line."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import Any


class RequestStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_body(cls, body: Any) -> Usage:
        usage = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(usage, dict):
            return cls()
        prompt = usage.get("prompt_tokens") or usage.get("input_tokens") or 0
        completion = usage.get("completion_tokens") or usage.get("output_tokens") or 0
        return cls(int(prompt), int(completion))


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class RequestResult:
    """The terminal state of one request: one item in the results table."""

    job_id: str
    custom_id: str
    line: int
    status: RequestStatus
    attempt: int
    endpoint: str
    latency_ms: int = 0
    status_code: int | None = None
    request_id: str | None = None
    response_body: Any = None
    error_code: str | None = None
    error_message: str | None = None
    #: The request's message, kept with failures so ``retry`` can send it again.
    request_message: str | None = None
    #: Set when that message was too big to keep in the item: its key in the payload bucket.
    request_ref: str | None = None
    #: Set when the answer was too big for an item: its key in the payload bucket.
    response_ref: str | None = None
    usage: Usage = field(default_factory=Usage)
    finished_at: str = field(default_factory=utc_now_iso)

    @cached_property
    def item_bytes(self) -> int:
        """Its item's size as DynamoDB counts it, worked out once. A worker sizes each result
        for its item limit, its transaction's 4 MB, the packing and its write units, and each
        time took ``to_item`` (the body's JSON) and a walk of the item: 230 us a result for
        the four, 64 with one (~6% of the worker's CPU per request, issue 12). A result is
        not changed once made (frozen; its body is not touched either: nothing does, and a
        body changed after its sizing could make a transaction DynamoDB refuses);
        ``dataclasses.replace`` makes a new one, sized afresh. (``cached_property`` needs the
        instance's ``__dict__``: no ``slots=True``.) The codec is imported here, not with
        the model, which needs no boto3 otherwise."""
        from shared.store import item_size

        return item_size.item_bytes(self.to_item())

    def to_item(self) -> dict[str, Any]:
        """The plain (not yet DynamoDB-typed) item. The body is stored as JSON text so it
        round-trips exactly (DynamoDB numbers would turn floats into Decimals)."""
        item: dict[str, Any] = {
            "job_id": self.job_id,
            "custom_id": self.custom_id,
            "line": self.line,
            "status": self.status.value,
            "attempt": self.attempt,
            "endpoint": self.endpoint,
            "latency_ms": self.latency_ms,
            "finished_at": self.finished_at,
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
        }
        optional = {
            "status_code": self.status_code,
            "request_id": self.request_id,
            "response_body": None if self.response_body is None else json.dumps(self.response_body),
            "error_code": self.error_code,
            "error_message": self.error_message,
            "request_message": self.request_message,
            "request_ref": self.request_ref,
            "response_ref": self.response_ref,
        }
        item.update({k: v for k, v in optional.items() if v is not None})
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> RequestResult:
        body = item.get("response_body")
        return cls(
            job_id=str(item["job_id"]),
            custom_id=str(item["custom_id"]),
            line=int(item["line"]),
            status=RequestStatus(item["status"]),
            attempt=int(item.get("attempt", 1)),
            endpoint=str(item.get("endpoint", "default")),
            latency_ms=int(item.get("latency_ms", 0)),
            status_code=int(item["status_code"]) if item.get("status_code") is not None else None,
            request_id=item.get("request_id"),
            response_body=json.loads(body) if body is not None else None,
            error_code=item.get("error_code"),
            error_message=item.get("error_message"),
            request_message=item.get("request_message"),
            request_ref=item.get("request_ref"),
            response_ref=item.get("response_ref"),
            usage=Usage(int(item.get("prompt_tokens", 0)), int(item.get("completion_tokens", 0))),
            finished_at=str(item.get("finished_at", "")),
        )

    def to_output_line(self) -> dict[str, Any]:
        """The OpenAI Batch output format."""
        response = None
        if self.status_code is not None:
            response = {
                "status_code": self.status_code,
                "request_id": self.request_id or "",
                "body": self.response_body,
            }
        error = None
        # A success has an error only when its stored answer could not be read back.
        if self.status is not RequestStatus.SUCCEEDED or self.error_code:
            error = {"code": self.error_code or self.status.value, "message": self.error_message or ""}
        return {
            "id": f"batch_req_{self.job_id}_{self.line}",
            "custom_id": self.custom_id,
            "response": response,
            "error": error,
        }
