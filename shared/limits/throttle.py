"""What a call waits for before it goes to its endpoint: its share of the endpoint's global
rate limits, and the endpoint's own ``Retry-After``.

A container leases calls (and their tokens) from the endpoint's DynamoDB bucket
(:mod:`shared.limits.rate_bucket`) several at a time and spends them locally. Lease sizes start at
one call and double with each lease up to half the bucket (half a second of the limit),
so a fresh container, or a fresh bucket, starts at once and a busy one writes rarely; a
lease is never bigger than the records still waiting in the invocation.

Leased calls that an invocation does not spend stay with the container for the next one,
for ``LEASE_TTL_S``; after that they simply expire rather than being written back. Giving
them back would cost a write per invocation to save at most one lease, and an expired lease
only leaves the limit briefly under-used, never exceeded. Token corrections work the same
way: the estimate is charged up front, and the difference from the usage returned is
credited or debited locally; a debt never expires, it is paid with the next lease.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.config import RuntimeLimits
from shared.errors import PermanentError, TransientError
from shared.limits.rate_bucket import DynamoRateBucket
from shared.limits.rate_math import Dimension, RateLimits, TokenEstimate, dimensions, estimate_tokens
from shared.results import Usage

log = logging.getLogger("llmbatch.throttle")

#: Leased calls and tokens not spent within this long are dropped.
LEASE_TTL_S = 5.0
#: The longest an endpoint's Retry-After pauses this container's calls to it.
MAX_PAUSE_S = 30.0
#: Weight of the newest request in the running mean cost that sizes token leases.
COST_SMOOTHING = 0.2


@dataclass(frozen=True)
class Permit:
    """Leave to make one call, and what it was charged."""

    endpoint: str
    estimate: TokenEstimate
    #: Whether the call had to wait (for the bucket, another lease or a Retry-After).
    delayed: bool = False
    waited_s: float = 0.0
    #: Whether a TPM limit charged the estimate (so the usage corrects it).
    tokens_charged: bool = False


def max_lease(dim: Dimension) -> int:
    """The largest lease: half the bucket. A lease the size of the whole bucket could only be
    granted the moment it is full, and any lateness of the taker would lose the refill
    beyond full; half leaves it half a second to come back."""
    return max(1, dim.capacity // 2)


class LeasePool:
    """The calls and tokens this container holds of one endpoint's bucket."""

    def __init__(self, endpoint: str, bucket: DynamoRateBucket, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.endpoint = endpoint
        self._bucket = bucket
        self._clock = clock
        self.requests = 0
        #: Below zero: a debt from usage above the estimates, paid with the next lease.
        self.tokens = 0
        self._granted_at = -math.inf
        self._lease = 1
        self._mean_cost: float | None = None
        # One lease at a time per container: the others wait their turn and then find it.
        self._lock = asyncio.Lock()

    async def acquire(self, limits: RateLimits, cost: int, *, wanted: Callable[[], int], max_wait_s: float) -> bool:
        """Spend one call costing ``cost`` tokens, leasing more first if needed; True if
        the caller had to wait for capacity. ``wanted()`` is how many calls the invocation
        still has to make, asked when a lease is taken (a lease is never bigger).

        Raises
        ------
        PermanentError
            The request alone costs more tokens than the TPM limit allows in a minute.
        TransientError
            Capacity would come after ``max_wait_s`` (the record comes back when it will not).
        """
        calls, tokens = dimensions(limits)
        if tokens is not None and cost > tokens.per_minute:
            raise PermanentError(
                f"the request's {cost} tokens exceed the endpoint's limit of {tokens.per_minute} per minute",
                code="over_tpm_limit",
            )
        give_up_at = self._clock() + max_wait_s
        delayed = self._lock.locked()
        async with self._lock:
            self._expire()
            self._mean_cost = (
                cost if self._mean_cost is None else (1 - COST_SMOOTHING) * self._mean_cost + COST_SMOOTHING * cost
            )
            while (calls is not None and self.requests < 1) or (tokens is not None and self.tokens < cost):
                slept = await self._lease_more(calls, tokens, cost, wanted(), give_up_at - self._clock())
                delayed = delayed or slept > 0
            if calls is not None:
                self.requests -= 1
            if tokens is not None:
                self.tokens -= cost
        return delayed

    async def _lease_more(
        self, calls: Dimension | None, tokens: Dimension | None, cost: int, wanted: int, max_wait_s: float
    ) -> float:
        size = max(1, min(self._lease, wanted, max_lease(calls) if calls else self._lease))
        want_calls = size - self.requests if calls is not None and self.requests < 1 else 0
        want_tokens = 0
        if tokens is not None and self.tokens < cost:
            per_call = self._mean_cost or cost
            want_tokens = min(max_lease(tokens), max(cost, math.ceil(size * per_call)) - self.tokens)
        wants = [(d, n) for d, n in ((calls, want_calls), (tokens, want_tokens)) if d is not None and n > 0]
        slept = await self._bucket.take(self.endpoint, wants, max_wait_s=max_wait_s)
        self.requests += want_calls
        self.tokens += want_tokens
        self._granted_at = self._clock()
        self._lease = min(self._lease * 2, max_lease(calls) if calls else max_lease(tokens) if tokens else 1)
        return slept

    def _expire(self) -> None:
        if self._clock() - self._granted_at > LEASE_TTL_S:
            self.requests = 0
            self.tokens = min(self.tokens, 0)

    def settle(self, estimate: TokenEstimate, usage: Usage) -> None:
        """Credit (or debit) the difference between a call's estimate and its real cost."""
        if usage.total_tokens:
            self.tokens += estimate.total - estimate.charged(usage)


class RetryAfterPause:
    """An endpoint's 429 with Retry-After holds back this container's next calls to it."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until = 0.0

    def pause(self, seconds: float) -> None:
        self._until = max(self._until, self._clock() + min(max(0.0, seconds), MAX_PAUSE_S))

    def remaining(self) -> float:
        return max(0.0, self._until - self._clock())

    async def wait(self, max_wait_s: float) -> float:
        left = self.remaining()
        if left <= 0:
            return 0.0
        if left > max_wait_s:
            raise TransientError(
                f"the endpoint asked for a pause of {left:.1f}s, beyond the deadline",
                code="endpoint_paused",
                retry_after_s=left,
            )
        await asyncio.sleep(left)
        return left


class Throttle:
    """Container-scoped: the lease pool and the pause of every endpoint.

    The limits of an endpoint are the live limits parameter's ``rpm_limit`` and
    ``tpm_limit`` (each endpoint has its own bucket), overridden field by field by
    ``overrides[endpoint]`` where given (an endpoint's own configured limits).
    """

    def __init__(self, bucket: DynamoRateBucket | None, overrides: Mapping[str, RateLimits] | None = None) -> None:
        self.bucket = bucket
        self._overrides = dict(overrides or {})
        self._pools: dict[str, LeasePool] = {}
        self._pauses: dict[str, RetryAfterPause] = {}
        self._warned = False

    def limits_for(self, endpoint: str, runtime: RuntimeLimits) -> RateLimits:
        own = self._overrides.get(endpoint, RateLimits())
        return RateLimits(
            rpm=own.rpm if own.rpm is not None else runtime.rpm_limit,
            tpm=own.tpm if own.tpm is not None else runtime.tpm_limit,
        )

    async def permit(
        self,
        endpoint: str,
        route: str,
        body: Mapping[str, Any],
        *,
        runtime: RuntimeLimits,
        wanted: Callable[[], int],
        max_wait_s: float,
    ) -> Permit:
        """Wait until a call to ``endpoint`` may go (at most ``max_wait_s``), and take it.

        Raises
        ------
        TransientError
            It could not go before the deadline: the record comes back when it can.
        """
        started = time.monotonic()
        estimate = estimate_tokens(route, body)
        pause = self._pauses.get(endpoint)
        delayed = bool(pause and await pause.wait(max_wait_s))
        limits = self.limits_for(endpoint, runtime)
        if limits.active and self.bucket is None:
            if not self._warned:
                log.warning("rate limits are set but this worker has no bucket to enforce them with")
                self._warned = True
        elif limits.active and self.bucket is not None:
            pool = self._pools.get(endpoint)
            if pool is None:
                pool = self._pools[endpoint] = LeasePool(endpoint, self.bucket)
            left = max_wait_s - (time.monotonic() - started)
            delayed = await pool.acquire(limits, estimate.total, wanted=wanted, max_wait_s=left) or delayed
        return Permit(
            endpoint,
            estimate,
            delayed=delayed,
            waited_s=time.monotonic() - started if delayed else 0.0,
            tokens_charged=limits.tpm is not None,
        )

    def settle(self, permit: Permit, usage: Usage) -> None:
        pool = self._pools.get(permit.endpoint)
        if permit.tokens_charged and pool is not None:
            pool.settle(permit.estimate, usage)

    def throttled(self, endpoint: str, retry_after_s: float | None) -> None:
        """The endpoint answered 429: with a Retry-After, hold back its next calls."""
        if retry_after_s:
            self._pauses.setdefault(endpoint, RetryAfterPause()).pause(retry_after_s)
