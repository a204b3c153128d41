"""Making a result fit one DynamoDB item, whatever it carries.

An item holds at most 400 KB (names and values, UTF-8). A failed request keeps its message
so ``retry`` can send it again, and an answer can be big: what does not fit goes to the
payload bucket and the item keeps its key (the claim check). Without a bucket the item is
stored without it, and says so in its error message. Sizes are those of
:func:`shared.store.item_size.item_bytes`, the one function every limit check uses.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

from shared.payloads import PayloadStore
from shared.results import RequestResult, RequestStatus, Usage
from shared.store.item_size import ITEM_MAX_BYTES, utf8_bytes

#: A failed request's message is kept in its item up to this size (UTF-8); a bigger one is
#: put in the payload bucket. A message whose body is already there (``body_ref``) is small.
REQUEST_MESSAGE_INLINE_MAX_BYTES = 64 * 1024
#: S3's longest object key.
S3_KEY_MAX_BYTES = 1024
#: The longest reason a refused or shortened item keeps.
REASON_MAX_BYTES = 1024

RESPONSE_TOO_LARGE = "response_too_large"
STORE_REFUSED = "store_refused"


def result_bytes(result: RequestResult) -> int:
    """The size of the result's item as DynamoDB counts it (:attr:`RequestResult.item_bytes`)."""
    return result.item_bytes


def custom_id_digest(custom_id: str) -> str:
    return hashlib.sha256(custom_id.encode("utf-8", "surrogatepass")).hexdigest()


def failed_request_key(job_id: str, custom_id: str) -> str:
    """Where a failed request's message too big for its item is kept."""
    return f"failed/{job_id}/{custom_id_digest(custom_id)}.json"


def response_key(job_id: str, custom_id: str) -> str:
    """Where an answer too big for its item is kept: named by its id while that makes a
    valid S3 key, by the id's SHA-256 beyond."""
    key = f"results/{job_id}/{custom_id}.json"
    if utf8_bytes(key) <= S3_KEY_MAX_BYTES:
        return key
    return f"results/{job_id}/{custom_id_digest(custom_id)}.json"


def truncate_utf8(text: str, max_bytes: int) -> str:
    """At most ``max_bytes`` of ``text``, cut at a character boundary."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", "ignore")


def _with_note(message: str | None, note: str) -> str:
    return f"{message}; {note}" if message else note


async def fit_item(result: RequestResult, payloads: PayloadStore | None) -> RequestResult:
    """``result`` as it can be stored: within the item limit, by reference where needed."""
    result = await _fit_request_message(result, payloads)
    if result_bytes(result) <= ITEM_MAX_BYTES:
        return result
    if result.response_body is not None:
        result = await _offload_response(result, payloads)
    size = result_bytes(result)
    if size > ITEM_MAX_BYTES and result.error_message:
        # What is left is the error text itself (an endpoint that echoes the whole request).
        room = max(0, utf8_bytes(result.error_message) - (size - ITEM_MAX_BYTES) - REASON_MAX_BYTES)
        result = replace(result, error_message=truncate_utf8(result.error_message, room) + " [truncated]")
    return result


async def _fit_request_message(result: RequestResult, payloads: PayloadStore | None) -> RequestResult:
    message = result.request_message
    if message is None:
        return result
    size = utf8_bytes(message)
    if size <= REQUEST_MESSAGE_INLINE_MAX_BYTES:
        return result
    if payloads is not None:
        key = await payloads.put(
            failed_request_key(result.job_id, result.custom_id), message.encode("utf-8", "surrogatepass")
        )
        return replace(result, request_message=None, request_ref=key)
    note = f"its request message ({size} bytes) was too big to keep without a payload bucket: retry cannot resend it"
    return replace(result, request_message=None, error_message=_with_note(result.error_message, note))


async def _offload_response(result: RequestResult, payloads: PayloadStore | None) -> RequestResult:
    body = json.dumps(result.response_body).encode()
    if payloads is not None:
        key = await payloads.put(response_key(result.job_id, result.custom_id), body)
        return replace(result, response_body=None, response_ref=key)
    return replace(
        result,
        status=RequestStatus.FAILED,
        response_body=None,
        error_code=RESPONSE_TOO_LARGE,
        error_message=_with_note(
            result.error_message,
            f"the response ({len(body)} bytes) is over DynamoDB's item limit and there is no payload bucket",
        ),
    )


def refused_item(result: RequestResult, reason: str) -> RequestResult:
    """What stands for a result DynamoDB refused to store: failed, ``store_refused`` with the
    reason, and no bodies; its tokens are still counted (the call was made)."""
    return RequestResult(
        job_id=result.job_id,
        custom_id=result.custom_id,
        line=result.line,
        status=RequestStatus.FAILED,
        attempt=result.attempt,
        endpoint=result.endpoint,
        latency_ms=result.latency_ms,
        status_code=result.status_code,
        request_id=result.request_id,
        error_code=STORE_REFUSED,
        error_message=truncate_utf8(f"DynamoDB refused the result: {reason}", REASON_MAX_BYTES),
        request_ref=result.request_ref,
        response_ref=result.response_ref,
        usage=Usage(result.usage.prompt_tokens, result.usage.completion_tokens),
        finished_at=result.finished_at,
    )
