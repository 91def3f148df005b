"""Trends: least squares toward the threshold, or unknown."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from scaling.advisor.trend import Point, fit, soonest, trends
from scaling.metrics.model import Reading, Sample
from scaling.stackconfig import parse


def _points(values: Sequence[float], step: float = 60.0) -> list[Point]:
    return [Point(1_790_000_000 + i * step, v) for i, v in enumerate(values)]


def test_rising_line_reaches_the_threshold() -> None:
    # 40, 41, ..., 49 one minute apart: 1 point a minute, 31 minutes from 49 to 80.
    trend = fit(_points([40 + i for i in range(10)]), target=80)
    assert trend.known and trend.slope == pytest.approx(1 / 60)
    assert trend.seconds == pytest.approx(31 * 60)
    assert trend.reason.startswith("rising")


def test_noisy_rise_is_fitted_not_read_off_the_last_point() -> None:
    values = [40, 44, 41, 45, 42, 46, 43, 47, 44, 48]  # rising ~0.5/min with a zigzag
    trend = fit(_points(values), target=80)
    assert trend.slope is not None and trend.slope > 0
    assert trend.fitted_now is not None and trend.fitted_now < 48
    assert trend.seconds is not None and trend.seconds > (80 - 48) * 60


def test_flat_falling_and_too_few() -> None:
    assert fit(_points([50, 50.2, 49.9, 50.1, 50]), target=80).reason == "flat"
    assert fit(_points([50, 50.2, 49.9, 50.1, 50]), target=80).seconds is None
    falling = fit(_points([70, 65, 60, 55]), target=80)
    assert falling.reason == "falling" and falling.seconds is None
    few = fit(_points([40, 60]), target=80)
    assert few.seconds is None and "too few points" in few.reason
    short = fit(_points([40, 50, 60], step=5), target=80)
    assert short.seconds is None and "too short" in short.reason


def test_already_over() -> None:
    assert fit(_points([70, 75, 82]), target=80).seconds == 0.0


def test_trends_over_history_pick_the_soonest() -> None:
    spec = parse({"sikka:phase": "growth"}, stack="growth")  # cpu 70, connections 85
    history = [
        Sample(
            1_790_000_000 + i * 60,
            "direct",
            (
                Reading("host.cpu", "host", "h", 30 + i, None, "percent"),  # 40 min to 70
                Reading("gateway.connections", "gateway", "g1", 500 + 50 * i, 1000, "c"),
                Reading("postgres.replica_lag_seconds", "postgres", "r1", 0.1, None, "s"),
            ),
        )
        for i in range(6)
    ]
    found = {t.key: t for t in trends(history, spec)}
    # lag has no threshold; the phase's utilisation is a series of its own
    assert set(found) == {"host.cpu", "gateway.connections", "capacity.utilization"}
    # one gateway of the phase's 2 x 1000: 37.5 % at the end, 2.5 points a minute to 85 %
    utilization = found["capacity.utilization"].trend
    assert utilization.target == 85 and utilization.seconds == pytest.approx(19 * 60)
    assert found["capacity.utilization"].subject.startswith("the phase's utilisation")
    assert found["host.cpu"].subject == "host.cpu on h"
    # gateway: 75 % at the last point, 5 points a minute: 2 minutes to 85 %
    assert found["gateway.connections"].trend.seconds == pytest.approx(120)
    assert found["host.cpu"].trend.seconds == pytest.approx(35 * 60)
    first = soonest(list(found.values()))
    assert first is not None and first.key == "gateway.connections"
    assert soonest([]) is None
