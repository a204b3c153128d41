"""Splitting a whole number in proportion to weights: one largest-remainder rule for every
split the worker makes (a packed call's usage over its inputs, an invocation's duration over
its jobs)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Whole-number shares of ``total`` in proportion to ``weights``, adding up to ``total``
    exactly (largest remainder; ties to the earlier share). No weight at all: equal shares."""
    if not weights:
        return []
    cleaned = [w if w > 0 and math.isfinite(w) else 0.0 for w in weights]
    whole = sum(cleaned)
    if whole <= 0:
        cleaned, whole = [1.0] * len(weights), float(len(weights))
    exact = [max(0, total) * w / whole for w in cleaned]
    parts = [math.floor(x) for x in exact]
    for i in sorted(range(len(parts)), key=lambda i: (parts[i] - exact[i], i))[: max(0, total) - sum(parts)]:
        parts[i] += 1
    return parts
