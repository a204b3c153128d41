"""One shared deadline per invocation.

Lambda kills a function at its timeout and returns the whole batch to the queue, losing
every answer already paid for. So each invocation works to a deadline taken from the
context's remaining time minus a reserve for writing results: a model call is started
only if it can still finish, gets at most the time left, and is cancelled at the deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from shared.errors import BudgetExhaustedError


class LambdaContextLike(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


class Deadline:
    """A point in monotonic time after which no model call may still run."""

    def __init__(self, at: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._at = at
        self._clock = clock

    @classmethod
    def from_context(
        cls, context: LambdaContextLike, *, reserve_s: float, clock: Callable[[], float] = time.monotonic
    ) -> Deadline:
        remaining_s = context.get_remaining_time_in_millis() / 1000.0
        return cls(clock() + max(0.0, remaining_s - reserve_s), clock=clock)

    @classmethod
    def after(cls, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(clock() + seconds, clock=clock)

    def remaining(self) -> float:
        return max(0.0, self._at - self._clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def timeout_for_call(self, call_timeout_s: float, *, min_call_s: float) -> float:
        """The timeout a call may use now: min(call timeout, time left).

        Raises
        ------
        BudgetExhaustedError
            When less than ``min_call_s`` is left: a call that cannot finish is not started.
        """
        left = self.remaining()
        if left < min_call_s:
            raise BudgetExhaustedError(
                f"invocation deadline: {left:.2f}s left, a call needs at least {min_call_s:.2f}s",
                code="budget_exhausted",
            )
        return min(call_timeout_s, left)


class CallDurations:
    """How long this container's recent successful calls took: the time a new call is
    expected to need. A call is started only if the deadline leaves it that long, so calls
    are rarely cut by the deadline (a cut call has gone out, may be billed, and counts as an
    attempt); a record that cannot start is deferred instead, which does not count."""

    #: Calls remembered, and the share of them a new call should be expected to outlast.
    WINDOW = 200
    QUANTILE = 0.9

    def __init__(self) -> None:
        self._recent: list[float] = []
        self._next = 0

    def observe(self, seconds: float) -> None:
        if len(self._recent) < self.WINDOW:
            self._recent.append(seconds)
        else:
            self._recent[self._next] = seconds
            self._next = (self._next + 1) % self.WINDOW

    def expected_s(self) -> float:
        """The recent calls' 90th percentile; 0 before any call has finished."""
        if not self._recent:
            return 0.0
        ordered = sorted(self._recent)
        return ordered[min(len(ordered) - 1, int(self.QUANTILE * len(ordered)))]
