"""Capacity: a FIFO pool of slots (like a vLLM batch) and continuously refilling token
buckets for RPM/TPM limits, answered as OpenAI answers them."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque

# --------------------------------------------------------------------------------------------
# Capacity: FIFO slots
# --------------------------------------------------------------------------------------------


class SlotPool:
    """A FIFO-fair counting semaphore that also keeps the peaks the stats report.

    Written out rather than using ``asyncio.Semaphore`` because fairness matters here (a
    barging newcomer would distort queueing latency in benchmarks), the capacity must be
    resizable live, and a waiter cancelled right after being handed a slot must give it back.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._capacity = capacity
        self._in_use = 0
        self._waiting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.peak_in_use = 0
        self.peak_waiting = 0
        self.peak_total = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def waiting(self) -> int:
        return self._waiting

    async def acquire(self) -> None:
        """Take a slot, waiting in arrival order; cancellation never leaks a slot."""
        if self._in_use < self._capacity and not self._waiters:
            self._in_use += 1
            self._note_peaks()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._waiting += 1
        self._note_peaks()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # The slot was handed over just before the cancellation landed: pass it on.
                self.release()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
                self._waiting -= 1
            raise

    def release(self) -> None:
        """Give a slot back, handing it straight to the oldest waiter (no barging)."""
        if self._in_use <= 0:
            raise RuntimeError("SlotPool.release() without a matching acquire()")
        self._in_use -= 1
        self._wake()

    def resize(self, capacity: int) -> None:
        """Change capacity live; shrinking lets in-flight requests finish, growing wakes waiters."""
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._capacity = capacity
        self._wake()

    def reset_peaks(self) -> None:
        self.peak_in_use = self._in_use
        self.peak_waiting = self._waiting
        self.peak_total = self._in_use + self._waiting

    def _wake(self) -> None:
        while self._waiters and self._in_use < self._capacity:
            fut = self._waiters.popleft()
            if fut.done():  # cancelled; its owner fixes the waiting count when it resumes
                continue
            self._in_use += 1
            self._waiting -= 1
            fut.set_result(None)
        self._note_peaks()

    def _note_peaks(self) -> None:
        self.peak_in_use = max(self.peak_in_use, self._in_use)
        self.peak_waiting = max(self.peak_waiting, self._waiting)
        self.peak_total = max(self.peak_total, self._in_use + self._waiting)


# --------------------------------------------------------------------------------------------
# Rate limits: continuously refilling token buckets (what OpenAI effectively enforces)
# --------------------------------------------------------------------------------------------


class _Bucket:
    """``limit`` units per minute, refilled continuously, starting full.

    A bucket (rather than a fixed one-minute window) spreads the allowance over the minute
    the way OpenAI does, so a client pacing itself from the headers sees a steady rate.
    """

    def __init__(self, limit: int, now: float) -> None:
        self.limit = limit
        self.level = float(limit)
        self.updated = now

    @property
    def rate(self) -> float:
        return self.limit / 60.0

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(float(self.limit), self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_s(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` fits (0 = now, ``inf`` = never: cost exceeds the limit)."""
        self.refill(now)
        if cost > self.limit:
            return math.inf
        if self.level >= cost:
            return 0.0
        return (cost - self.level) / self.rate

    def remaining(self, now: float) -> int:
        self.refill(now)
        return max(0, math.floor(self.level))

    def reset_s(self, now: float) -> float:
        """Seconds until the bucket is full again (OpenAI's ``x-ratelimit-reset-*``)."""
        self.refill(now)
        return (self.limit - self.level) / self.rate


def format_duration(seconds: float) -> str:
    """Format like OpenAI's reset headers (Go durations): ``20ms``, ``1s``, ``1.5s``, ``6m0s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    total = round(seconds, 3)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    sec_text = f"{secs:.3f}".rstrip("0").rstrip(".") or "0"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{sec_text}s"
    if minutes:
        return f"{int(minutes)}m{sec_text}s"
    return f"{sec_text}s"


def _retry_headers(wait_s: float) -> dict[str, str]:
    return {"Retry-After": str(math.ceil(wait_s)), "retry-after-ms": str(math.ceil(wait_s * 1000))}
