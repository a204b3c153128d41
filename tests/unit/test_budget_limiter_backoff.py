"""Tests of the invocation's time and concurrency controls: ``Deadline`` (shared/budget.py),
``AdjustableLimiter`` (shared/limits/limiter.py) and ``retry_delay_s`` (shared/backoff.py).

Time is a fake clock; concurrency is checked by counting holders at every step, never by
timing. Waits are for conditions, with a timeout.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from shared.backoff import SQS_MAX_VISIBILITY_S, retry_delay_s
from shared.budget import Deadline
from shared.errors import (
    BudgetExhaustedError,
    EndpointHTTPError,
    EndpointTimeoutError,
    TransientError,
)
from shared.limits.limiter import AdjustableLimiter


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeContext:
    """The one method of the Lambda context that the deadline reads."""

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


async def wait_until(predicate: Callable[[], bool], within_s: float = 5.0, what: str = "condition") -> None:
    """Yield to the loop until ``predicate()`` holds; fail after ``within_s`` seconds.

    It polls, yielding one loop step at a time: the limiter's state has no event to await,
    and single steps keep the interleaving of tasks deterministic.
    """
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + within_s
    while not predicate():
        if loop.time() > give_up_at:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0)


# --------------------------------------------------------------------------------------------
# Deadline
# --------------------------------------------------------------------------------------------


def test_the_deadline_is_the_remaining_time_minus_the_write_reserve() -> None:
    # GIVEN a context with 30 s left and an 8 s reserve for writing results
    clock = FakeClock()
    deadline = Deadline.from_context(FakeContext(30_000), reserve_s=8.0, clock=clock)

    # WHEN time passes
    at_start = deadline.remaining()
    clock.advance(5.5)

    # THEN 22 s are available at first, and 16.5 s after 5.5 s
    assert at_start == pytest.approx(22.0)
    assert deadline.remaining() == pytest.approx(16.5)
    assert not deadline.expired


def test_a_reserve_bigger_than_the_time_left_leaves_an_expired_deadline() -> None:
    # GIVEN a context with 3 s left and an 8 s reserve
    deadline = Deadline.from_context(FakeContext(3_000), reserve_s=8.0, clock=FakeClock())

    # WHEN / THEN nothing is left and the deadline has passed
    assert deadline.remaining() == 0.0
    assert deadline.expired


def test_remaining_time_never_goes_negative_after_the_deadline() -> None:
    # GIVEN a deadline 2 s away
    clock = FakeClock()
    deadline = Deadline.after(2.0, clock=clock)

    # WHEN the clock runs past it
    clock.advance(10.0)

    # THEN remaining is zero and it is expired
    assert deadline.remaining() == 0.0
    assert deadline.expired


@pytest.mark.parametrize(
    ("call_timeout_s", "elapsed_s", "expected"),
    [(60.0, 0.0, 22.0), (60.0, 15.0, 7.0), (5.0, 0.0, 5.0), (5.0, 17.5, 4.5)],
    ids=["deadline-bounds", "deadline-bounds-later", "call-timeout-bounds", "deadline-bounds-at-the-end"],
)
def test_a_call_gets_the_smaller_of_its_timeout_and_the_time_left(
    call_timeout_s: float, elapsed_s: float, expected: float
) -> None:
    # GIVEN a deadline 22 s away (30 s left, 8 s reserve), some of it already used
    clock = FakeClock()
    deadline = Deadline.from_context(FakeContext(30_000), reserve_s=8.0, clock=clock)
    clock.advance(elapsed_s)

    # WHEN a call asks for its timeout
    timeout = deadline.timeout_for_call(call_timeout_s, min_call_s=1.0)

    # THEN it gets min(call timeout, time left)
    assert timeout == pytest.approx(expected)


def test_no_call_is_started_with_less_than_the_minimum_time_left() -> None:
    # GIVEN a deadline with 0.9 s left and calls that need at least 1 s
    clock = FakeClock()
    deadline = Deadline.after(10.0, clock=clock)
    clock.advance(9.1)

    # WHEN a call asks for its timeout
    with pytest.raises(BudgetExhaustedError) as info:
        deadline.timeout_for_call(60.0, min_call_s=1.0)

    # THEN it is refused as a transient "budget exhausted" error (the request goes back to SQS)
    assert isinstance(info.value, TransientError)
    assert info.value.code == "budget_exhausted"


def test_exactly_the_minimum_time_left_still_allows_a_call() -> None:
    # GIVEN a deadline with exactly 1 s left
    clock = FakeClock()
    deadline = Deadline.after(4.0, clock=clock)
    clock.advance(3.0)

    # WHEN a call that needs 1 s asks for its timeout
    timeout = deadline.timeout_for_call(60.0, min_call_s=1.0)

    # THEN it may run, for that one second
    assert timeout == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# AdjustableLimiter
# --------------------------------------------------------------------------------------------


class Holders:
    """Tasks that take a slot and keep it until the test lets each one go."""

    def __init__(self, limiter: AdjustableLimiter) -> None:
        self.limiter = limiter
        self.inside: set[int] = set()
        self.peak = 0
        #: For each holder, how many were inside (itself included) when it got its slot.
        self.inside_at_entry: dict[int, int] = {}
        self.entered: list[int] = []
        self._gates: dict[int, asyncio.Event] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}

    def start(self, n: int) -> None:
        first = len(self.tasks)
        for i in range(first, first + n):
            self._gates[i] = asyncio.Event()
            self.tasks[i] = asyncio.create_task(self._hold(i))

    async def _hold(self, i: int) -> None:
        async with self.limiter.slot():
            self.inside.add(i)
            self.entered.append(i)
            self.inside_at_entry[i] = len(self.inside)
            self.peak = max(self.peak, len(self.inside))
            try:
                await self._gates[i].wait()
            finally:
                self.inside.discard(i)

    async def let_go(self, i: int) -> None:
        self._gates[i].set()
        await wait_until(lambda: self.tasks[i].done(), what=f"holder {i} to finish")

    def unfinished(self) -> int:
        return sum(not t.done() for t in self.tasks.values())

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


@pytest.mark.parametrize("limit", [0, -3])
def test_a_limit_below_one_is_refused(limit: int) -> None:
    # GIVEN / WHEN / THEN a limiter cannot be made with a limit below one
    with pytest.raises(ValueError):
        AdjustableLimiter(limit)


async def test_a_limit_below_one_cannot_be_set_later() -> None:
    # GIVEN a limiter of 3
    limiter = AdjustableLimiter(3)

    # WHEN it is set to 0
    with pytest.raises(ValueError):
        await limiter.set_limit(0)

    # THEN it keeps its limit
    assert limiter.limit == 3


async def test_fifty_concurrent_holders_never_exceed_the_limit() -> None:
    # GIVEN a limit of 7 and 50 tasks wanting a slot
    limit, total = 7, 50
    limiter = AdjustableLimiter(limit)
    holders = Holders(limiter)
    holders.start(total)
    rng = random.Random(1234)
    try:
        # WHEN the holders are let go one at a time, in a random order
        for _ in range(total):
            await wait_until(
                lambda: len(holders.inside) == min(limit, holders.unfinished()), what="the free slots to fill"
            )
            # THEN at every step no more than the limit hold a slot, and the limiter agrees
            assert len(holders.inside) <= limit
            assert limiter.in_use == len(holders.inside)
            await holders.let_go(rng.choice(sorted(holders.inside)))
    finally:
        await holders.close()

    # THEN everyone got a slot, the limit was reached but never exceeded, and all slots are back
    assert sorted(holders.entered) == list(range(total))
    assert holders.peak == limit
    assert limiter.max_in_use == limit
    assert limiter.in_use == 0


async def test_waiters_get_their_slots_in_arrival_order() -> None:
    # GIVEN a limit of 1, one holder, and four waiters that arrived in order
    limiter = AdjustableLimiter(1)
    holders = Holders(limiter)
    holders.start(1)
    await wait_until(lambda: limiter.in_use == 1, what="the first holder")
    holders.start(4)
    try:
        # WHEN each holder in turn lets go
        for expected in range(5):
            await wait_until(lambda e=expected: e in holders.inside, what=f"holder {expected}")
            await holders.let_go(expected)
    finally:
        await holders.close()

    # THEN they were served first come, first served
    assert holders.entered == [0, 1, 2, 3, 4]


async def test_raising_the_limit_lets_waiters_in_without_any_release() -> None:
    # GIVEN a limit of 2, two holders and four waiters
    limiter = AdjustableLimiter(2)
    holders = Holders(limiter)
    holders.start(6)
    try:
        await wait_until(lambda: len(holders.inside) == 2, what="two holders")

        # WHEN the limit is raised to 5 while nobody lets go
        await limiter.set_limit(5)

        # THEN three more waiters get a slot, and no more
        await wait_until(lambda: len(holders.inside) == 5, what="five holders")
        assert limiter.in_use == 5
        assert limiter.limit == 5
        assert holders.peak == 5
    finally:
        await holders.close()


async def test_lowering_the_limit_holds_waiters_back_until_enough_slots_are_returned() -> None:
    # GIVEN a limit of 4, four holders and one waiter
    limiter = AdjustableLimiter(4)
    holders = Holders(limiter)
    holders.start(4)
    await wait_until(lambda: len(holders.inside) == 4, what="four holders")
    holders.start(1)
    waiter = 4
    try:
        # WHEN the limit is lowered to 1 and the four holders let go one by one
        await limiter.set_limit(1)
        for i in range(4):
            await holders.let_go(i)
        await wait_until(lambda: waiter in holders.inside, what="the waiter")

        # THEN the waiter got its slot only once it would be alone (in_use below the new limit)
        assert holders.inside_at_entry[waiter] == 1
        assert limiter.in_use == 1
    finally:
        await holders.close()


async def test_a_cancelled_holder_gives_its_slot_back() -> None:
    # GIVEN a limit of 1: one holder, one waiter
    limiter = AdjustableLimiter(1)
    holders = Holders(limiter)
    holders.start(1)
    await wait_until(lambda: limiter.in_use == 1, what="the holder")
    holders.start(1)
    try:
        # WHEN the holder is cancelled while it holds the slot
        holders.tasks[0].cancel()
        await wait_until(lambda: holders.tasks[0].done(), what="the cancelled holder to finish")

        # THEN the slot passes to the waiter
        assert holders.tasks[0].cancelled()
        await wait_until(lambda: 1 in holders.inside, what="the waiter to get the slot")
        assert limiter.in_use == 1
        await holders.let_go(1)
        assert limiter.in_use == 0
    finally:
        await holders.close()


async def test_a_waiter_cancelled_before_its_turn_does_not_keep_a_slot() -> None:
    # GIVEN a limit of 1: a holder and two waiters
    limiter = AdjustableLimiter(1)
    holders = Holders(limiter)
    holders.start(1)
    await wait_until(lambda: limiter.in_use == 1, what="the holder")
    holders.start(2)
    try:
        # WHEN the first waiter gives up, and then the holder lets go
        holders.tasks[1].cancel()
        await wait_until(lambda: holders.tasks[1].done(), what="the cancelled waiter")
        await holders.let_go(0)

        # THEN the second waiter gets the slot, and the cancelled one never held it
        await wait_until(lambda: 2 in holders.inside, what="the second waiter")
        assert 1 not in holders.entered
        assert limiter.in_use == 1
    finally:
        await holders.close()


async def test_a_waiter_cancelled_just_after_being_granted_passes_the_slot_on() -> None:
    # GIVEN a limit of 1 held by this test, and two waiters, B (first) and C
    limiter = AdjustableLimiter(1)
    holders = Holders(limiter)
    b, c = 0, 1
    try:
        async with limiter.slot():
            holders.start(2)
            await wait_until(lambda: limiter.waiting == 2, what="B and C to wait")
        # WHEN the slot is let go (handed to B at once) and B is cancelled before it runs,
        # as an asyncio.timeout around the wait would do at that instant
        assert limiter.in_use == 1 and b not in holders.entered
        holders.tasks[b].cancel()

        # THEN C gets the slot B gave up, and B never held it
        await wait_until(lambda: c in holders.inside, within_s=1.0, what="C to get the slot B gave up")
        assert b not in holders.entered and limiter.in_use == 1
        await holders.let_go(c)
        assert limiter.in_use == 0 and limiter.waiting == 0
    finally:
        await holders.close()


async def test_a_free_slot_goes_to_the_job_with_the_fewest_calls_in_flight() -> None:
    # GIVEN a limit of 2 held by job A's first two calls, four more of A's waiting, and then
    # two of job B's (a batch whose records came big job first)
    limiter = AdjustableLimiter(2)
    order: list[str] = []
    gates = {name: asyncio.Event() for name in ("a1", "a2", "a3", "a4", "a5", "a6", "b1", "b2")}

    async def call(name: str) -> None:
        async with limiter.slot(key=name[0]):
            order.append(name)
            await gates[name].wait()

    tasks = [asyncio.create_task(call(n)) for n in ("a1", "a2", "a3", "a4", "a5", "a6")]
    await wait_until(lambda: limiter.waiting == 4, what="A's waiters")
    tasks += [asyncio.create_task(call(n)) for n in ("b1", "b2")]
    await wait_until(lambda: limiter.waiting == 6, what="B's waiters")
    try:
        # WHEN A's calls in flight finish one at a time, and every call after them too
        for name in ("a1", "a2", "b1", "a3", "b2", "a4", "a5", "a6"):
            await wait_until(lambda name=name: name in order, what=f"{name} to start")
            gates[name].set()

        # THEN B's calls went in as soon as a slot was free, not after all of A's
        assert order == ["a1", "a2", "b1", "a3", "b2", "a4", "a5", "a6"]
        assert limiter.max_in_use == 2
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert limiter.in_use == 0 and limiter.held("a") == 0 and limiter.held("b") == 0


# --------------------------------------------------------------------------------------------
# retry_delay_s
# --------------------------------------------------------------------------------------------


class TopOfRange(random.Random):
    """An RNG whose uniform draw is always the top of the range: shows the ceiling itself."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.mark.parametrize(("retry_after_s", "expected"), [(3.0, 3), (7.2, 8), (0.001, 1), (0.0, 0)])
def test_retry_after_from_the_endpoint_is_honoured_rounded_up(retry_after_s: float, expected: int) -> None:
    # GIVEN a 429 whose endpoint said when to come back
    error = EndpointHTTPError("slow down", status_code=429, retry_after_s=retry_after_s)

    # WHEN the delay is chosen (on a late attempt, which would otherwise back off far longer)
    delay = retry_delay_s(error, attempt=6, base_s=30.0, cap_s=300.0, rng=random.Random(0))

    # THEN it is the endpoint's Retry-After, in whole seconds rounded up
    assert delay == expected


def test_retry_after_is_capped() -> None:
    # GIVEN an endpoint asking for an hour
    error = EndpointHTTPError("slow down", status_code=429, retry_after_s=3600.0)

    # WHEN the delay is chosen with a 300 s cap
    delay = retry_delay_s(error, attempt=1, base_s=2.0, cap_s=300.0)

    # THEN the cap wins
    assert delay == 300


def test_backoff_ceiling_doubles_with_each_attempt_up_to_the_cap() -> None:
    # GIVEN a timeout (no Retry-After), base 2 s, cap 100 s, and an RNG drawing the range's top
    error = EndpointTimeoutError("timed out")

    # WHEN the delays of attempts 1 to 9 are chosen
    delays = [retry_delay_s(error, n, base_s=2.0, cap_s=100.0, rng=TopOfRange()) for n in range(1, 10)]

    # THEN the ceiling is base * 2^(attempt-1), until it reaches the cap
    assert delays == [2, 4, 8, 16, 32, 64, 100, 100, 100]


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8])
def test_jittered_backoff_stays_between_one_second_and_the_attempts_ceiling(attempt: int) -> None:
    # GIVEN a seeded RNG and a 5xx without Retry-After
    rng = random.Random(attempt)
    error = EndpointHTTPError("bad gateway", status_code=502)
    ceiling = min(300.0, 2.0 * 2 ** (attempt - 1))

    # WHEN many delays are drawn for this attempt
    delays = [retry_delay_s(error, attempt, base_s=2.0, cap_s=300.0, rng=rng) for _ in range(500)]

    # THEN every one is within [1, ceiling] and the draws are spread out (full jitter)
    assert min(delays) >= 1
    assert max(delays) <= ceiling
    if ceiling >= 4:
        assert len(set(delays)) > 1


def test_the_same_seed_gives_the_same_delays() -> None:
    # GIVEN two RNGs with the same seed
    error = EndpointTimeoutError("timed out")

    # WHEN each picks the delays of attempts 1..8
    first = [retry_delay_s(error, n, base_s=2.0, cap_s=300.0, rng=random.Random(99)) for n in range(1, 9)]
    second = [retry_delay_s(error, n, base_s=2.0, cap_s=300.0, rng=random.Random(99)) for n in range(1, 9)]

    # THEN they agree
    assert first == second


def test_an_exhausted_budget_retries_at_once_even_with_a_retry_after() -> None:
    # GIVEN a request that was not started because the invocation ran out of time
    error = BudgetExhaustedError("deadline", code="budget_exhausted", retry_after_s=30.0)

    # WHEN its delay is chosen
    delay = retry_delay_s(error, attempt=4, base_s=2.0, cap_s=300.0, rng=TopOfRange())

    # THEN it is visible again immediately: nothing was wrong with it
    assert delay == 0


@pytest.mark.parametrize(
    "error",
    [EndpointHTTPError("x", status_code=429, retry_after_s=10**9), EndpointTimeoutError("x")],
    ids=["retry-after", "backoff"],
)
def test_a_delay_never_reaches_the_sqs_visibility_maximum(error: TransientError) -> None:
    # GIVEN a cap configured above SQS's 12-hour visibility maximum, and a late attempt
    # WHEN the delay is chosen
    delay = retry_delay_s(error, attempt=40, base_s=60.0, cap_s=10**7, rng=TopOfRange())

    # THEN it stays below what ChangeMessageVisibility accepts
    assert delay == SQS_MAX_VISIBILITY_S - 1
