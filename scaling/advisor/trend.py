"""Trends: a least-squares line through a reading's percentages over the history, and the
time it leaves before the reading reaches its threshold.

The estimate is "unknown" (``seconds`` None, with the reason) when there are fewer than
:data:`MIN_POINTS` points or they span less than :data:`MIN_SPAN_SECONDS`, when the line is
falling, or when it is flat: its rise over the observed span is below ``min_rise``
percentage points (default :data:`MIN_RISE`), which a noisy but level reading never exceeds
by chance for long. A reading already at or above the threshold has 0 seconds left.

Besides every judged reading, the phase's ``utilizationPercentage`` (:mod:`.capacity`: users
and trips against what the phase holds) is fitted as the series ``capacity.utilization``
toward ``thresholds.connectionsPercent``: the WebSockets and trips are what the phase is
sized for, so that line is the plainest "when do we outgrow this phase".
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scaling.advisor.capacity import estimate
from scaling.advisor.levels import band_for
from scaling.advisor.window import Point, series
from scaling.metrics.model import Sample
from scaling.model import PhaseSpec

MIN_POINTS = 3
MIN_SPAN_SECONDS = 60.0
MIN_RISE = 1.0  # percentage points over the observed span
UTILIZATION = "capacity.utilization"  # the series of the phase's utilizationPercentage


@dataclass(frozen=True)
class Trend:
    """``slope`` in percentage points per second (None with too few points); ``seconds``
    until the fitted line reaches ``target`` from the last point, None when unknown."""

    points: int
    slope: float | None
    fitted_now: float | None
    target: float
    seconds: float | None
    reason: str

    @property
    def known(self) -> bool:
        return self.seconds is not None


def fit(points: Sequence[Point], target: float, *, min_rise: float = MIN_RISE) -> Trend:
    n = len(points)
    if n < MIN_POINTS:
        return Trend(n, None, None, target, None, f"too few points ({n} of {MIN_POINTS})")
    ordered = sorted(points, key=lambda p: p.at)
    span = ordered[-1].at - ordered[0].at
    if span < MIN_SPAN_SECONDS:
        return Trend(
            n, None, None, target, None, f"too short a history ({span:g} s of {MIN_SPAN_SECONDS:g})"
        )
    origin = ordered[0].at  # keeps the arithmetic well conditioned with unix times
    line = statistics.linear_regression(
        [p.at - origin for p in ordered], [p.percent for p in ordered]
    )
    now = ordered[-1].at - origin
    fitted = line.intercept + line.slope * now
    if ordered[-1].percent >= target or fitted >= target:
        return Trend(n, line.slope, fitted, target, 0.0, f"already at or above {target:g} %")
    rise = line.slope * span
    if line.slope < 0 and -rise >= min_rise:
        return Trend(n, line.slope, fitted, target, None, "falling")
    if abs(rise) < min_rise:
        return Trend(n, line.slope, fitted, target, None, "flat")
    seconds = (target - fitted) / line.slope
    return Trend(n, line.slope, fitted, target, seconds, f"rising {rise:.1f} points")


@dataclass(frozen=True)
class ReadingTrend:
    key: str
    instance: str
    trend: Trend

    @property
    def subject(self) -> str:
        if self.key == UTILIZATION:
            return "the phase's utilisation (users and trips against its capacity)"
        return f"{self.key} on {self.instance}"


def utilization_trend(history: Sequence[Sample], spec: PhaseSpec) -> ReadingTrend:
    points = [
        Point(sample.at, est.utilization_percentage)
        for sample in history
        for est in [estimate(sample, spec)]
        if est.utilization_percentage is not None
    ]
    target = float(spec.thresholds.connections_percent)
    return ReadingTrend(UTILIZATION, "phase", fit(points, target))


def trends(history: Sequence[Sample], spec: PhaseSpec) -> list[ReadingTrend]:
    """The trend of every judged reading toward its phase threshold, and of the phase's
    utilisation (when any gateway was measured)."""
    found: list[ReadingTrend] = []
    if any(r.key == "gateway.connections" for s in history for r in s.readings):
        found.append(utilization_trend(history, spec))
    for key, instance in sorted({(r.key, r.instance) for s in history for r in s.readings}):
        band = band_for(key, spec)
        if band is None:
            continue
        points = series(history, key, instance)
        found.append(ReadingTrend(key, instance, fit(points, band.critical_from)))
    return found


def soonest(found: Sequence[ReadingTrend]) -> ReadingTrend | None:
    """The reading that reaches its threshold first, among those with a known estimate."""
    known = [t for t in found if t.trend.seconds is not None]
    return min(known, key=lambda t: t.trend.seconds or 0.0, default=None)
