"""What becomes of one SQS record, as plain values: its message read from the body (or why it
is none), the result stored for its request, the note kept while it is retried, and what the
batch tells SQS about it (:class:`Disposition`). No I/O: :mod:`shared.worker.batch_run` decides
which applies and stores it.
"""

from __future__ import annotations

from typing import Any

from shared.backoff import exhausted_message
from shared.endpoints.base import EndpointReply
from shared.errors import InvalidMessageError, TransientError
from shared.messages import RequestMessage, decode_message
from shared.results import RequestResult, RequestStatus, Usage, utc_now_iso

#: The error of a request recorded as cancelled, uncalled.
CANCELLED = ("cancelled", "job cancelled")


class JobCancelledError(Exception):
    """Internal: the job was cancelled while this request waited for a slot."""


class Disposition:
    """What became of a record that SQS may now delete."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"
    #: Not called (rate limit, Retry-After pause, deadline): a fresh copy is on the queue.
    DEFERRED = "deferred"


def decode_record(body: Any) -> RequestMessage | InvalidMessageError:
    """A record's message, or why it is not one; never raises, whatever the body holds."""
    try:
        return decode_message(body if isinstance(body, str) else "")
    except InvalidMessageError as e:
        return e
    except Exception as e:  # decode_message should never get here; no message may fail its batch
        return InvalidMessageError(f"unreadable message: {type(e).__name__}")


def request_result(
    msg: RequestMessage,
    attempt: int,
    status: RequestStatus,
    *,
    reply: EndpointReply | None = None,
    status_code: int | None = None,
    error: tuple[str, str] | None = None,
    latency_ms: int = 0,
    endpoint: str | None = None,
) -> RequestResult:
    """The terminal result of the request ``msg`` carries, at its ``attempt``; ``endpoint``
    is the one that answered, when failover or routing by model sent it elsewhere than the
    message's own."""
    return RequestResult(
        job_id=msg.job_id,
        custom_id=msg.custom_id,
        line=msg.line,
        status=status,
        attempt=attempt,
        endpoint=endpoint or msg.endpoint,
        latency_ms=latency_ms,
        status_code=reply.status_code if reply else status_code,
        request_id=reply.request_id if reply else None,
        response_body=reply.body if reply else None,
        error_code=error[0] if error else None,
        error_message=error[1] if error else None,
        usage=reply.usage if reply else Usage(),
        # As it came (a body_ref stays a reference), counting no receives: what retry re-sends.
        request_message=(msg.model_copy(update={"receives": 0}).encode() if status is RequestStatus.FAILED else None),
    )


def exhausted_result(
    msg: RequestMessage, attempt: int, e: TransientError, *, endpoint: str | None = None
) -> RequestResult:
    """The final failure of a request whose calls kept failing transiently: recorded by the
    worker, with the last error, as the DeadLetter function would after the queue's
    ``maxReceiveCount`` (which stays the backstop for crashes and timeouts)."""
    return request_result(
        msg,
        attempt,
        RequestStatus.FAILED,
        status_code=e.status_code,
        error=("retries_exhausted", exhausted_message(attempt, e.code or "transient", e.message)),
        endpoint=endpoint,
    )


def invalid_result(job_id: str, custom_id: str, e: InvalidMessageError, attempt: int) -> RequestResult:
    """The failure of a request whose message breaks the schema (its ids could be read)."""
    return RequestResult(
        job_id=job_id,
        custom_id=custom_id,
        line=e.line,
        status=RequestStatus.FAILED,
        attempt=attempt,
        endpoint="",
        error_code="invalid_message",
        error_message=e.message,
    )


def retry_note(msg: RequestMessage, attempt: int, e: TransientError) -> dict[str, Any]:
    """The last transient error of a request going back to the queue (the jobs table's
    ``retry#`` item, read by the DeadLetter function)."""
    return {
        "job_id": msg.job_id,
        "custom_id": msg.custom_id,
        "attempt": attempt,
        "error_code": e.code or "transient",
        "error_message": e.message,
        "status_code": e.status_code or 0,
        "at": utc_now_iso(),
    }
