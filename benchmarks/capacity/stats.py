"""Small pure statistics for the certificate: percentiles and min/median/max spreads."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile (``fraction`` in 0..1); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """min / median / max of repeated measurements (None without any)."""
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Round by round: numerators[i] / denominators[i] (rounds with a zero are skipped)."""
    return [n / d for n, d in zip(numerators, denominators, strict=True) if d > 0]
