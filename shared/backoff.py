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
