"""The global bucket's arithmetic (shared/limits/rate_math.py): no AWS, no clock."""

from __future__ import annotations

import random

import pytest

from shared.limits.rate_math import (
    DEFAULT_MAX_TOKENS,
    REQUESTS_ATTR,
    TOKENS_ATTR,
    Dimension,
    RateLimits,
    apply_steps,
    dimensions,
    estimate_tokens,
    plan_take,
)
from shared.results import Usage

S = 1_000_000  # microseconds


def level(state: dict[str, int], dim: Dimension, now_us: int) -> float:
    """What the stored time means: the units in the bucket at ``now``."""
    return min(dim.capacity, (now_us - state[dim.attribute]) * dim.per_minute / (60 * S))


def test_a_new_bucket_is_created_empty_before_anything_is_taken() -> None:
    rpm = Dimension(REQUESTS_ATTR, 600)
    assert plan_take({}, [(rpm, 1)], now_us=10 * S).create == (REQUESTS_ATTR,)
    # Created at 10 s: one request (600 a minute = 10 a second) is there 0.1 s later, not before.
    plan = plan_take({REQUESTS_ATTR: 10 * S}, [(rpm, 1)], now_us=10 * S)
    assert plan.wait_us == S // 10 and not plan.steps


def test_a_full_bucket_grants_at_once_and_keeps_the_rest() -> None:
    rpm = Dimension(REQUESTS_ATTR, 600)  # capacity: one second = 10 requests
    state = {REQUESTS_ATTR: 0}
    now = 100 * S
    plan = plan_take(state, [(rpm, 4)], now)
    assert plan.wait_us == 0
    (step,) = plan.steps
    assert step.full
    after = apply_steps(state, plan.steps)
    assert level(after, rpm, now) == pytest.approx(rpm.capacity - 4)


def test_a_take_beyond_the_level_waits_exactly_for_the_refill() -> None:
    rpm = Dimension(REQUESTS_ATTR, 600)
    now = 100 * S
    state = {REQUESTS_ATTR: now - S // 5}  # 2 requests in the bucket
    plan = plan_take(state, [(rpm, 5)], now)
    assert plan.wait_us == 3 * S // 10  # 3 more at 10 a second
    later = plan_take(state, [(rpm, 5)], now + plan.wait_us)
    assert later.wait_us == 0 and not later.steps[0].full


def test_both_limits_are_taken_in_one_step_and_the_longer_wait_wins() -> None:
    rpm, tpm = dimensions(RateLimits(rpm=600, tpm=60_000))
    assert rpm is not None and tpm is not None
    now = 100 * S
    state = {REQUESTS_ATTR: now - S, TOKENS_ATTR: now - S // 10}  # 10 requests, 100 tokens
    plan = plan_take(state, [(rpm, 2), (tpm, 300)], now)
    assert plan.wait_us == S // 5  # 200 more tokens at 1,000 a second
    plan = plan_take(state, [(rpm, 2), (tpm, 300)], now + plan.wait_us)
    assert {s.attribute for s in plan.steps} == {REQUESTS_ATTR, TOKENS_ATTR}


def test_no_single_take_may_exceed_the_bucket() -> None:
    rpm = Dimension(REQUESTS_ATTR, 600)
    with pytest.raises(ValueError):
        plan_take({REQUESTS_ATTR: 0}, [(rpm, rpm.capacity + 1)], 100 * S)


def test_takers_in_any_order_never_get_more_than_the_rate_since_the_bucket_was_created() -> None:
    # GIVEN takers asking for 1 to 8 requests at random moments, each retrying after its wait
    rpm = Dimension(REQUESTS_ATTR, 1200)
    rng = random.Random(7)
    created = 5 * S
    state = {REQUESTS_ATTR: created}
    now = created
    granted = 0
    # WHEN they take for a simulated minute
    while now < created + 60 * S:
        now += rng.randrange(0, S // 5)
        want = rng.randint(1, 8)
        plan = plan_take(state, [(rpm, want)], now)
        if plan.wait_us:
            now += plan.wait_us
            plan = plan_take(state, [(rpm, want)], now)
        state = apply_steps(state, plan.steps)
        granted += want
        # THEN at every moment the total granted is within what the rate allows since creation
        assert granted <= (now - created) * rpm.per_minute / (60 * S) + 1e-9
    # and the rate is used, not wasted: within the bucket and one take of the limit
    assert granted >= 1200 - rpm.capacity - 8


@pytest.mark.parametrize(
    ("route", "body", "prompt", "cap"),
    [
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 16},
            11,
            16,
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "y" * 8}]}], "n": 2, "max_tokens": 5},
            3,
            10,
        ),
        ("/v1/completions", {"prompt": ["a" * 8, "b" * 8], "max_tokens": 4}, 5, 8),
        ("/v1/embeddings", {"input": ["a" * 20, "b" * 20]}, 11, 0),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, 1, None),
    ],
)
def test_tokens_are_estimated_from_the_prompt_text_and_max_tokens(
    route: str, body: dict, prompt: int, cap: int | None
) -> None:
    est = estimate_tokens(route, body)
    assert (est.prompt, est.output_cap) == (prompt, cap)
    assert est.total == prompt + (DEFAULT_MAX_TOKENS if cap is None else cap)


def test_the_usage_returned_corrects_the_estimate() -> None:
    named = estimate_tokens("/v1/chat/completions", {"messages": [{"content": "x" * 40}], "max_tokens": 16})
    # The real prompt count replaces the estimate; the max_tokens asked for stays charged.
    assert named.charged(Usage(prompt_tokens=20, completion_tokens=3)) == 20 + 16
    unnamed = estimate_tokens("/v1/chat/completions", {"messages": [{"content": "x" * 40}]})
    # With no max_tokens named, what was generated counts instead of the default.
    assert unnamed.charged(Usage(prompt_tokens=20, completion_tokens=3)) == 23
