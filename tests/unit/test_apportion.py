"""Tests of ``shared.apportion.apportion``: the one largest-remainder split (a packed call's
usage over its inputs, an invocation's duration over its jobs)."""

from __future__ import annotations

import math

import pytest

from shared.apportion import apportion


def test_shares_add_up_to_the_total_and_follow_the_weights() -> None:
    assert apportion(10, [1, 1, 1]) == [4, 3, 3]
    assert apportion(7, [0, 0]) == [4, 3]
    assert apportion(100, [3, 1]) == [75, 25]
    assert apportion(0, [5, 5]) == [0, 0]
    assert apportion(5, []) == []
    for total in (1, 17, 1001):
        assert sum(apportion(total, [0.3, 2.0, 7.7, 0.0])) == total


@pytest.mark.parametrize(
    ("total", "shares"),
    [(1000, {"a": 2, "b": 1}), (7, {"a": 1, "b": 1, "c": 1}), (0, {"a": 5}), (5, {"a": 1}), (101, {"a": 3, "b": 97})],
)
def test_a_total_is_split_by_share_in_whole_units_that_add_up(total: int, shares: dict[str, int]) -> None:
    parts = dict(zip(shares, apportion(total, list(shares.values())), strict=True))
    assert sum(parts.values()) == total
    whole = sum(shares.values())
    for k, n in shares.items():
        assert math.floor(total * n / whole) <= parts[k] <= math.ceil(total * n / whole)


def test_ties_go_to_the_earlier_share() -> None:
    # GIVEN equal weights and units left over / WHEN split / THEN the first shares get them
    assert apportion(5, [1, 1, 1]) == [2, 2, 1]
