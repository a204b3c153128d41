"""Adaptive concurrency: model calls in flight follow what the endpoint can serve.

An endpoint serves a fixed number of requests at once (a vLLM batch, a TGI's slots) and
queues the rest, so past that number more calls in flight buy no throughput, only latency
(and, elsewhere, 429s and timeouts). The limit here is TCP Vegas's, as Netflix's
concurrency-limits library applies it to services: from the latency with no queue (the
*baseline*) and the latency now, the calls waiting at the endpoint are
``in_flight * (1 - baseline / latency)``. The limit grows while that queue is short
(doubling at first, "slow start", then step by step), falls towards what the endpoint
served plus a small allowance when it is long (by a quarter at most per window), and backs
off by a quarter on a 429 or a timeout.
It stays within [1, the operator's max_concurrency].

Latencies are judged per window of about one limit's worth of calls, by their mean without
the extreme tenths, only for calls that started under the limit in force (a change starts a
new window), so one noisy call moves nothing. The baseline is the lowest window latency, refreshed every ``PROBE_EVERY`` windows by
one window at half the limit (BBR's "probe RTT"): latency that rises for good (longer
answers) then raises the baseline instead of shrinking the limit for ever.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from shared.errors import EndpointTimeoutError, TransientError
from shared.limits.limiter import AdjustableLimiter

#: Where the limit of a new container starts (below most endpoints' capacity, so the first
#: windows measure latency without a queue).
INITIAL_LIMIT = 4
#: Fewest calls that make a window.
MIN_WINDOW = 8
#: Multiplier on a 429 or a timeout.
BACKOFF = 0.75
#: Windows between two probes of the baseline.
PROBE_EVERY = 40
#: A window's latency leaves out its fastest and slowest tenth (1/10).
TRIM_FRACTION_DIVISOR = 10
#: A window may raise the limit only if this share of its calls found the limit full:
#: otherwise the invocation, not the endpoint, was what limited the calls.
SATURATED_SHARE = 0.5


def trimmed_mean(values: list[float]) -> float:
    """The mean without the highest and lowest tenth. The mean, as Little's law needs (a
    median misses a queue that holds back fewer than half the calls), but a few calls
    slowed by something else (a pause of this process, a new connection) must not read as
    a queue at the endpoint."""
    ordered = sorted(values)
    cut = len(ordered) // TRIM_FRACTION_DIVISOR
    kept = ordered[cut : len(ordered) - cut] or ordered
    return sum(kept) / len(kept)


def queue_allowance(limit: int) -> tuple[float, float]:
    """(alpha, beta): grow below alpha calls queued at the endpoint, shrink above beta
    (Netflix's Vegas defaults, 3 and 6 times log10 of the limit, with a floor)."""
    alpha = max(2.0, 3 * math.log10(max(limit, 1)))
    return alpha, 2 * alpha


@dataclass
class _Window:
    latencies_s: list[float] = field(default_factory=list)
    in_flight: list[int] = field(default_factory=list)
    saturated: int = 0


class VegasLimit:
    """The limit, updated from the calls' latencies and overloads. No I/O, no clock."""

    def __init__(self, *, max_limit: int, initial: int = INITIAL_LIMIT) -> None:
        self.max_limit = max(1, max_limit)
        self.limit = max(1, min(initial, self.max_limit))
        #: Changes with every change of the limit: calls started before are not judged.
        self.generation = 0
        self.baseline_s: float | None = None
        self.slow_start = True
        self._window = _Window()
        self._windows_since_probe = 0
        self._probe_return: int | None = None

    def set_max(self, max_limit: int) -> bool:
        self.max_limit = max(1, max_limit)
        if self._probe_return is not None:
            self._probe_return = min(self._probe_return, self.max_limit)
        return self._set(min(self.limit, self.max_limit))

    def on_latency(self, *, generation: int, latency_s: float, in_flight: int) -> bool:
        """A call that started in ``generation`` with ``in_flight`` calls (itself
        included) answered in ``latency_s``. True if the limit changed."""
        if generation != self.generation:
            return False
        w = self._window
        w.latencies_s.append(latency_s)
        w.in_flight.append(in_flight)
        w.saturated += in_flight >= self.limit
        if len(w.latencies_s) < max(MIN_WINDOW, self.limit):
            return False
        return self._judge(w)

    def on_overload(self, *, generation: int) -> bool:
        """A call that started in ``generation`` met a 429 or a timeout: back off, once per
        generation (a burst of 429s from one moment is one signal)."""
        if generation != self.generation:
            return False
        self.slow_start = False
        if self._probe_return is not None:
            self._probe_return = max(1, math.floor(self._probe_return * BACKOFF))
        return self._set(max(1, math.floor(self.limit * BACKOFF)), force=True)

    def _judge(self, w: _Window) -> bool:
        typical_s = trimmed_mean(w.latencies_s)
        if self._probe_return is not None:
            # The probe window ran below the queue: its latency is the new baseline.
            self.baseline_s = typical_s
            self._windows_since_probe = 0
            target, self._probe_return = self._probe_return, None
            return self._set(target, force=True)
        self.baseline_s = typical_s if self.baseline_s is None else min(self.baseline_s, typical_s)
        self._windows_since_probe += 1
        if self._windows_since_probe >= PROBE_EVERY and self.limit > 1:
            self._probe_return = self.limit
            return self._set(max(1, self.limit // 2), force=True)
        in_flight = sum(w.in_flight) / len(w.in_flight)
        queued = in_flight * (1 - self.baseline_s / typical_s) if typical_s > 0 else 0.0
        alpha, beta = queue_allowance(self.limit)
        if queued > beta:
            # Down to what the endpoint served plus the allowance, but by a quarter at most
            # per window: a burst of noise costs little, a real queue is gone in a few windows.
            self.slow_start = False
            target = max(math.ceil(in_flight - queued + alpha), math.floor(self.limit * BACKOFF))
            return self._set(max(1, target), force=True)
        if queued < alpha and w.saturated >= SATURATED_SHARE * len(w.latencies_s):
            step = self.limit if self.slow_start else max(1, round(math.log10(self.limit) + 1))
            return self._set(self.limit + step, force=True)
        if queued >= alpha:
            self.slow_start = False
        self._window = _Window()  # judged: the next window starts, the limit unchanged
        return False

    def _set(self, limit: int, *, force: bool = False) -> bool:
        limit = max(1, min(limit, self.max_limit))
        changed = limit != self.limit
        if changed or force:
            self.limit = limit
            self.generation += 1
            self._window = _Window()
        return changed


def is_overload(error: BaseException) -> bool:
    """A sign the endpoint has more than it can take: a 429 or a call timing out."""
    return isinstance(error, EndpointTimeoutError) or (isinstance(error, TransientError) and error.status_code == 429)


class AdaptiveConcurrency:
    """Container-scoped: drives the worker's :class:`AdjustableLimiter` when the live
    limits turn ``adaptive_concurrency`` on, and leaves it at ``max_concurrency`` when off."""

    def __init__(self, limiter: AdjustableLimiter) -> None:
        self.limiter = limiter
        self.enabled = False
        self.vegas = VegasLimit(max_limit=limiter.limit)
        # Calls at the endpoint now: not the limiter's holders, some of which may still be
        # waiting for a rate-limit permit and load the endpoint with nothing.
        self._in_flight = 0

    async def configure(self, *, enabled: bool, max_concurrency: int) -> None:
        """Apply the limits in force (each invocation, from the limits parameter)."""
        self.enabled = enabled
        self.vegas.set_max(max_concurrency)
        target = self.vegas.limit if enabled else max_concurrency
        if target != self.limiter.limit:
            await self.limiter.set_limit(target)

    @asynccontextmanager
    async def measured(self) -> AsyncIterator[None]:
        """Around one model call, inside its limiter slot: its latency or overload feeds
        the limit."""
        if not self.enabled:
            yield
            return
        self._in_flight += 1
        generation, in_flight = self.vegas.generation, self._in_flight
        started = time.monotonic()
        try:
            yield
        except BaseException as e:
            if is_overload(e) and self.vegas.on_overload(generation=generation):
                await self.limiter.set_limit(self.vegas.limit)
            raise
        finally:
            self._in_flight -= 1
        if self.vegas.on_latency(generation=generation, latency_s=time.monotonic() - started, in_flight=in_flight):
            await self.limiter.set_limit(self.vegas.limit)
