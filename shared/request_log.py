"""One log line per request outcome, with the job id and ``custom_id`` as correlation ids.

Lines carry what an operator needs to follow a request (job, id, line, endpoint, route,
attempt, status, error code, latency, tokens) and, in place of its text, the size and a
short SHA-256 of the request body: enough to match a line to a job file and to spot
identical requests, and nothing that leaks a prompt. Prompt and answer text appear only
with the stack's ``LogPayloads`` switch on, a debugging aid that is off by default.

Levels: failures WARNING, retries and cancellations INFO, successes DEBUG (at the default
INFO level a job of millions writes a line per problem, not per request).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Final

from shared.errors import TransientError
from shared.messages import RequestMessage
from shared.results import RequestResult, RequestStatus

log = logging.getLogger("llmbatch.requests")

LEVELS: Final = {
    RequestStatus.SUCCEEDED: logging.DEBUG,
    RequestStatus.CANCELLED: logging.INFO,
    RequestStatus.FAILED: logging.WARNING,
}
#: Hex digits of the body's SHA-256 kept in a line: plenty to tell requests apart.
HASH_CHARS: Final = 16


def body_fingerprint(body: Any) -> tuple[int, str]:
    """The request body's size in bytes and a short SHA-256, over its canonical JSON."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return len(canonical), hashlib.sha256(canonical).hexdigest()[:HASH_CHARS]


@dataclass(frozen=True)
class RequestLog:
    #: The ``LogPayloads`` switch: also log the request body and the answer.
    payloads: bool = False

    def outcome(self, msg: RequestMessage, result: RequestResult, *, duplicate: bool = False) -> None:
        level = logging.DEBUG if duplicate else LEVELS[result.status]
        if not log.isEnabledFor(level):
            return
        fields = self._request_fields(msg)
        fields.update(
            status="duplicate" if duplicate else result.status.value,
            status_code=result.status_code,
            error_code=result.error_code,
            latency_ms=result.latency_ms,
            prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens,
        )
        if self.payloads and result.response_body is not None:
            fields["response_body"] = result.response_body
        log.log(level, "request " + fields["status"], extra=fields)

    def retrying(self, msg: RequestMessage, error: TransientError, delay_s: int) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        fields = self._request_fields(msg)
        fields.update(status="retrying", status_code=error.status_code, error_code=error.code, retry_in_s=delay_s)
        log.info("request retrying", extra=fields)

    def _request_fields(self, msg: RequestMessage) -> dict[str, Any]:
        size, digest = body_fingerprint(msg.body)
        fields: dict[str, Any] = {
            "job_id": msg.job_id,
            "custom_id": msg.custom_id,
            "line": msg.line,
            "endpoint": msg.endpoint,
            "url": msg.url,
            "body_bytes": size,
            "body_sha256": digest,
        }
        if self.payloads:
            fields["request_body"] = msg.body
        return fields
