"""When a transiently failed request should be tried again.

SQS would redeliver it after the queue's visibility timeout (six times the function's
timeout: many minutes). Instead the worker sets each failed message's visibility: the
endpoint's ``Retry-After`` when it sent one, else exponential backoff with full jitter by
attempt number, capped well below SQS's 12-hour maximum.
"""

from __future__ import annotations

import math
import random

from shared.errors import BudgetExhaustedError, TransientError

SQS_MAX_VISIBILITY_S = 43_200


def retry_delay_s(
    error: TransientError,
    attempt: int,
    *,
    base_s: float,
    cap_s: float,
    rng: random.Random | None = None,
) -> int:
    """Seconds until the message should be visible again."""
    cap = min(cap_s, SQS_MAX_VISIBILITY_S - 1)
    if isinstance(error, BudgetExhaustedError):
        return 0  # nothing wrong with the request or the endpoint: the next invocation takes it
    if error.retry_after_s is not None:
        return int(min(cap, math.ceil(error.retry_after_s)))
    draw = rng.uniform if rng else random.uniform
    ceiling = min(cap, base_s * 2 ** max(0, attempt - 1))
    return int(min(cap, max(1.0, draw(0, ceiling))))


#: SQS's longest DelaySeconds for a message: a deferral waits at most this long.
SQS_MAX_DELAY_S = 900


def deferral_delay_s(error: TransientError, *, rng: random.Random | None = None) -> int:
    """Seconds a deferred record's fresh copy stays invisible: until the capacity it waited
    for (the rate limit's refill, the endpoint's Retry-After), spread by up to a quarter more
    so the deferred records of many invocations do not all come back at once; at once when
    only the invocation's deadline stopped it."""
    if isinstance(error, BudgetExhaustedError) or not error.retry_after_s:
        return 0
    draw = rng.uniform if rng else random.uniform
    wait = error.retry_after_s * (1.0 + draw(0.0, 0.25))
    return int(min(SQS_MAX_DELAY_S, math.ceil(wait)))


def exhausted_message(attempts: int, code: str, message: str) -> str:
    """The error message of a request whose attempts are used up (the worker's and the
    DeadLetter function's alike)."""
    return f"retries exhausted after {attempts} attempts; last error: {code}: {message}"
