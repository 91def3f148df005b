"""Sustained breaches: whether a reading has stayed at or above a level for a whole window.

A breach counts only when **every** sample of that reading (key and instance) over the
window is at or above the level — Prometheus's own ``for:`` semantics, so the checker and
the alert rules agree — and the window is **covered**: the run of samples starts at least
``window`` seconds before its last one, no two consecutive samples of it are more than
``max_gap`` apart (default: half the window, so at least three samples span it), and the last
one is no older than ``max_gap`` at ``now``. A missing or unreachable sample is a gap, not
evidence either way. One spike, a breach interrupted by one sample below the level, or a
breach seen only through a hole in the history never counts.

The window defaults to the alert rules' ``for:`` (``levels.SUSTAINED_SECONDS``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scaling.advisor.levels import SUSTAINED_SECONDS, Band, Level, band_for
from scaling.metrics.model import Sample
from scaling.model import PhaseSpec


@dataclass(frozen=True)
class Point:
    at: float
    percent: float


@dataclass(frozen=True)
class Run:
    """The latest unbroken run of samples of one reading at or above ``level``'s start.

    ``duration`` is what the samples cover (first to last of the run); ``sustained`` says
    whether it covers the window. ``peak``/``latest`` are percentages of the reading's limit,
    ``over`` how far the peak is above the level's start, in percentage points."""

    key: str
    instance: str
    level: Level
    band: Band
    start: float  # the percentage the run is judged against
    since: float
    until: float
    samples: int
    peak: float
    latest: float
    window: float
    sustained: bool

    @property
    def duration(self) -> float:
        return self.until - self.since

    @property
    def over(self) -> float:
        return self.latest - self.start


def series(history: Sequence[Sample], key: str, instance: str) -> list[Point]:
    """The reachable percentages of one reading, oldest first."""
    points = [
        Point(sample.at, percent)
        for sample in history
        for reading in sample.readings
        if reading.key == key and reading.instance == instance
        for percent in [reading.percent]
        if percent is not None
    ]
    return sorted(points, key=lambda p: p.at)


def latest_run(
    points: Sequence[Point], at_least: float, *, now: float, max_gap: float
) -> list[Point]:
    """The points of the unbroken run at or above ``at_least`` ending with the latest point;
    empty if the latest point is below it or older than ``max_gap`` at ``now``."""
    if not points or now - points[-1].at > max_gap:
        return []
    run: list[Point] = []
    for point in reversed(points):
        if point.percent < at_least or (run and run[-1].at - point.at > max_gap):
            break
        run.append(point)
    run.reverse()
    return run


def _check(window: float, max_gap: float | None) -> float:
    if window <= 0:
        raise ValueError(f"window must be a positive number of seconds, got {window}")
    gap = window / 2 if max_gap is None else max_gap
    if gap <= 0:
        raise ValueError(f"max_gap must be a positive number of seconds, got {max_gap}")
    return gap


def runs(
    history: Sequence[Sample],
    spec: PhaseSpec,
    *,
    level: Level = Level.CRITICAL,
    window: float = SUSTAINED_SECONDS,
    now: float | None = None,
    max_gap: float | None = None,
) -> list[Run]:
    """Every judged reading whose latest samples are at or above ``level`` (warning or
    critical), sustained or still pending, ordered by key and instance.

    ``now`` defaults to the newest sample's time."""
    if level not in (Level.WARNING, Level.CRITICAL):
        raise ValueError(f"a run is above the warning or critical level, not {level}")
    gap = _check(window, max_gap)
    if not history:
        return []
    current = max(s.at for s in history) if now is None else now
    found: list[Run] = []
    readings = sorted({(r.key, r.instance) for s in history for r in s.readings})
    for key, instance in readings:
        band = band_for(key, spec)
        if band is None:
            continue
        start = band.critical_from if level is Level.CRITICAL else band.warning_from
        run = latest_run(series(history, key, instance), start, now=current, max_gap=gap)
        if not run:
            continue
        since, until = run[0].at, run[-1].at
        found.append(
            Run(
                key=key,
                instance=instance,
                level=level,
                band=band,
                start=start,
                since=since,
                until=until,
                samples=len(run),
                peak=max(p.percent for p in run),
                latest=run[-1].percent,
                window=window,
                sustained=until - since >= window,
            )
        )
    return found


def sustained_breaches(
    history: Sequence[Sample],
    spec: PhaseSpec,
    *,
    level: Level = Level.CRITICAL,
    window: float = SUSTAINED_SECONDS,
    now: float | None = None,
    max_gap: float | None = None,
) -> list[Run]:
    """The runs that cover the whole window: the only ones that are reasons to act."""
    return [
        r
        for r in runs(history, spec, level=level, window=window, now=now, max_gap=max_gap)
        if r.sustained
    ]
