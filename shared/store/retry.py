"""How the store tells DynamoDB's errors apart, and waits before trying again.

A throttled or conflicting call (or transaction cancellation reason) is retried with
full-jitter backoff; a request DynamoDB refuses as invalid is not (the result writes split
it instead, see :mod:`shared.store.terminal_writes`); anything else is raised.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from shared.errors import TransientError

#: Errors, and transaction cancellation reasons, that mean "try again later".
RETRYABLE_CODES = frozenset(
    {
        "TransactionConflict",
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",
    }
)
#: A request DynamoDB refused as invalid (an item or a transaction too big, a bad value).
VALIDATION_CODE = "ValidationException"
CONDITION_FAILED = "ConditionalCheckFailed"
BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 2.0


def error_parts(e: ClientError) -> tuple[str, list[dict[str, Any]]]:
    """The error code and the transaction's cancellation reasons (one per action, in order)."""
    return e.response.get("Error", {}).get("Code", ""), [dict(r) for r in e.response.get("CancellationReasons") or []]


def is_retryable(e: ClientError) -> bool:
    code, reasons = error_parts(e)
    return code in RETRYABLE_CODES or any(r.get("Code") in RETRYABLE_CODES for r in reasons)


def reason_text(e: ClientError, reason: dict[str, Any] | None = None) -> str:
    """Why DynamoDB refused: a cancellation reason when one names it, else the error."""
    if reason is not None:
        return f"{reason.get('Code')}: {reason.get('Message') or ''}".rstrip(": ")
    code, _ = error_parts(e)
    return f"{code}: {e.response.get('Error', {}).get('Message') or ''}".rstrip(": ")


class Backoff:
    """Full-jitter exponential backoff, until ``max_attempts`` calls were made or, when
    given, until ``give_up_at`` (monotonic time) would pass: the caller's deadline then
    bounds the retries instead of a count."""

    def __init__(
        self,
        max_attempts: int,
        give_up_at: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_attempts = max_attempts
        self._give_up_at = give_up_at
        self._clock = clock
        self.attempt = 0

    async def wait(self, message: str, code: str) -> None:
        """Sleep before the next attempt, or raise ``TransientError`` when out of attempts or time."""
        self.attempt += 1
        delay = random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**self.attempt))
        if self._give_up_at is None:
            out = self.attempt >= self._max_attempts
        else:
            out = self._clock() + delay >= self._give_up_at
        if out:
            raise TransientError(f"{message} (gave up after {self.attempt} attempts)", code=code)
        await asyncio.sleep(delay)
