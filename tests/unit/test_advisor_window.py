"""Sustained breaches: every sample over a covered window, never one spike or a gap."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from scaling.advisor.levels import SUSTAINED_SECONDS, Level
from scaling.advisor.window import runs, sustained_breaches
from scaling.metrics.model import Reading, Sample
from scaling.model import PhaseSpec
from scaling.stackconfig import parse

T0 = 1_790_000_000.0


@pytest.fixture(scope="module")
def launch() -> PhaseSpec:
    return parse({"sikka:phase": "launch"}, stack="launch")  # connections: 60 warn, 80 crit


def _history(
    percents: Sequence[float | None], *, step: float = 60.0, instance: str = "pg"
) -> list[Sample]:
    """One postgres.connections reading (limit 100) per sample; None = unreachable."""
    return [
        Sample(
            T0 + i * step,
            "direct",
            (Reading("postgres.connections", "postgres", instance, p, 100, "connections"),),
        )
        for i, p in enumerate(percents)
    ]


def test_sustained_over_the_default_window(launch: PhaseSpec) -> None:
    history = _history([50, 85, 86, 90, 88, 87, 85, 86, 89, 90, 91, 92])  # 85+ for 10 min
    (breach,) = sustained_breaches(history, launch)
    assert breach.key == "postgres.connections" and breach.instance == "pg"
    assert breach.window == SUSTAINED_SECONDS
    assert breach.duration == 600 and breach.samples == 11
    assert breach.peak == 92 and breach.latest == 92 and breach.over == pytest.approx(12)
    assert breach.since == T0 + 60


def test_one_spike_never_recommends(launch: PhaseSpec) -> None:
    history = _history([50] * 10 + [99])
    assert sustained_breaches(history, launch) == []
    (pending,) = runs(history, launch)
    assert not pending.sustained and pending.duration == 0 and pending.peak == 99


def test_one_dip_restarts_the_window(launch: PhaseSpec) -> None:
    history = _history([90] * 6 + [79] + [90] * 6)  # 79 < 80: the run starts again
    assert sustained_breaches(history, launch) == []
    (pending,) = runs(history, launch)
    assert pending.duration == 300


def test_just_short_of_the_window_is_pending(launch: PhaseSpec) -> None:
    history = _history([90] * 10)  # 9 minutes
    assert sustained_breaches(history, launch) == []
    assert sustained_breaches(_history([90] * 11), launch) != []


def test_a_hole_in_the_history_is_not_coverage(launch: PhaseSpec) -> None:
    # Above the threshold at both ends of a 20-minute hole: nothing says it stayed there.
    history = _history([90, 90]) + [
        Sample(s.at + 1200, s.source, s.readings) for s in _history([90, 90, 90])
    ]
    assert sustained_breaches(history, launch) == []
    # Unreachable samples are holes too, not zeros nor breaches.
    gappy = _history([90, 90, None, None, None, None, None, None, 90, 90, 90])
    assert sustained_breaches(gappy, launch) == []
    # The same with a tolerated gap: cron every 5 minutes covers a 10-minute window.
    sparse = _history([90, 90, 90], step=300)
    assert sustained_breaches(sparse, launch) != []
    assert sustained_breaches(sparse, launch, max_gap=200) == []


def test_stale_history_is_not_now(launch: PhaseSpec) -> None:
    history = _history([90] * 12)
    assert sustained_breaches(history, launch, now=T0 + 11 * 60 + 10) != []
    assert sustained_breaches(history, launch, now=T0 + 11 * 60 + 3600) == []


def test_short_window_for_tests(launch: PhaseSpec) -> None:
    history = _history([90, 90, 90, 90], step=5)
    assert sustained_breaches(history, launch, window=15) != []
    assert sustained_breaches(history, launch, window=20) == []


def test_warning_runs(launch: PhaseSpec) -> None:
    history = _history([65] * 11)  # within 60..80
    assert sustained_breaches(history, launch) == []
    (warn,) = sustained_breaches(history, launch, level=Level.WARNING)
    assert warn.level is Level.WARNING and warn.start == 60 and warn.sustained


def test_instances_are_separate(launch: PhaseSpec) -> None:
    hot = _history([90] * 11, instance="primary")
    cool = _history([10] * 11, instance="replica")
    merged = [
        Sample(a.at, "direct", a.readings + b.readings) for a, b in zip(hot, cool, strict=True)
    ]
    assert [b.instance for b in sustained_breaches(merged, launch)] == ["primary"]


def test_bad_windows_are_refused(launch: PhaseSpec) -> None:
    with pytest.raises(ValueError, match="window"):
        runs(_history([90]), launch, window=0)
    with pytest.raises(ValueError, match="max_gap"):
        runs(_history([90]), launch, max_gap=0)
    with pytest.raises(ValueError, match="warning or critical"):
        runs(_history([90]), launch, level=Level.OPTIMAL)
    assert runs([], launch) == []
