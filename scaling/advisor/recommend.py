"""Recommendations with their reasons and exact commands, in three buckets.

``immediate``
    a critical breach sustained over the window — launch and growth: "promote to <next
    stack>" with ``pulumi preview -s <next>`` and ``sikka-scaling transition <next>``; scale:
    the optimisation actions (:mod:`.capacity`) computed from the peak load over the breach,
    each a ``pulumi config set``; a failed critical readiness check; a part that cannot be
    reached.
``shortTerm``
    a critical level not yet sustained (how long so far, of how long), a warning sustained
    over the window (prepare the move, or the actions that keep the phase at its target), a
    failed readiness check that is not critical, and — before a promotion — the actions
    that would keep the current phase within its thresholds a while longer.
``longTerm``
    the trend: which reading reaches its threshold first, and in about how long.

Every reason names the measurement (key and instance), how long it held, and how far over
its level it is; nothing here is canned text about numbers the samples do not hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from scaling.advisor.capacity import Action, optimisations, peak
from scaling.advisor.levels import SUSTAINED_SECONDS, Level, judge
from scaling.advisor.trend import soonest, trends
from scaling.advisor.window import Run, runs
from scaling.metrics.model import ReadinessCheck, Sample
from scaling.model import PhaseSpec


class Bucket(StrEnum):
    IMMEDIATE = "immediate"
    SHORT_TERM = "shortTerm"
    LONG_TERM = "longTerm"


class Kind(StrEnum):
    PROMOTE = "promote"
    OPTIMISE = "optimise"
    WATCH = "watch"
    PREPARE = "prepare"
    RESTORE = "restore"  # a part is unreachable
    READINESS = "readiness"  # a readiness check failed


@dataclass(frozen=True)
class Recommendation:
    kind: Kind
    bucket: Bucket
    title: str
    reasons: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    actions: tuple[Action, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "title": self.title,
            "reasons": list(self.reasons),
            "commands": list(self.commands),
            "actions": [
                {"key": a.key, "current": a.current, "value": a.value, "reason": a.reason}
                for a in self.actions
            ],
        }


@dataclass(frozen=True)
class Advice:
    stack: str
    next_stack: str | None
    recommendations: tuple[Recommendation, ...]
    breaches: tuple[Run, ...]  # critical, sustained
    pending: tuple[Run, ...]  # critical, not yet sustained
    warnings: tuple[Run, ...]  # warning band or above, sustained

    def bucket(self, bucket: Bucket) -> list[Recommendation]:
        return [r for r in self.recommendations if r.bucket is bucket]

    @property
    def promote(self) -> bool:
        return any(r.kind is Kind.PROMOTE for r in self.recommendations)

    @property
    def optimise(self) -> bool:
        return any(
            r.kind is Kind.OPTIMISE and r.bucket is Bucket.IMMEDIATE for r in self.recommendations
        )


def duration(seconds: float) -> str:
    """45 s, 10 min, 1 h 5 min, 2 d 3 h."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    minutes, s = divmod(s, 60)
    if minutes < 60:
        return f"{minutes} min" + (f" {s} s" if s else "")
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days} d" + (f" {hours} h" if hours else "")


def reason(run: Run) -> str:
    held = f"for {duration(run.duration)} ({run.samples} samples)"
    if not run.sustained:
        held = f"for {duration(run.duration)} of the {duration(run.window)} window"
    return (
        f"{run.key} on {run.instance}: {run.latest:.1f} % of its limit, "
        f"{run.over:.1f} points over the {run.level.value} level of {run.start:g} % "
        f"({run.band.config_key}) {held}; peak {run.peak:.1f} %"
    )


def promotion_commands(next_stack: str) -> tuple[str, ...]:
    return (f"pulumi preview -s {next_stack}", f"sikka-scaling transition {next_stack}")


def recommend(
    history: Sequence[Sample],
    spec: PhaseSpec,
    *,
    stack: str | None = None,
    next_stack: str | None = None,
    checks: Sequence[ReadinessCheck] = (),
    window: float = SUSTAINED_SECONDS,
    now: float | None = None,
    max_gap: float | None = None,
) -> Advice:
    """What to do about the phase, from its sample history (oldest first or in any order)
    and the readiness checks run against it. ``next_stack`` defaults to the next phase's
    name (stacks are named after their phase)."""
    stack = stack or spec.stack
    nxt = spec.phase.next
    next_stack = next_stack or (nxt.value if nxt else None)
    ordered = sorted(history, key=lambda s: s.at)
    every = runs(ordered, spec, level=Level.CRITICAL, window=window, now=now, max_gap=max_gap)
    breaches = [r for r in every if r.sustained]
    pending = [r for r in every if not r.sustained]
    warnings = [
        r
        for r in runs(ordered, spec, level=Level.WARNING, window=window, now=now, max_gap=max_gap)
        if r.sustained and not any(b.key == r.key and b.instance == r.instance for b in breaches)
    ]
    out: list[Recommendation] = []

    if breaches:
        since = min(b.since for b in breaches)
        actions = tuple(optimisations(peak(ordered, since), spec))
        reasons = tuple(reason(b) for b in breaches)
        if next_stack is not None:
            out.append(
                Recommendation(
                    Kind.PROMOTE,
                    Bucket.IMMEDIATE,
                    f"promote to {next_stack}",
                    reasons,
                    promotion_commands(next_stack),
                )
            )
            if actions:
                out.append(
                    Recommendation(
                        Kind.OPTIMISE,
                        Bucket.SHORT_TERM,
                        f"until the move, keep {stack} within its thresholds",
                        tuple(a.reason for a in actions),
                        tuple(a.command(stack) for a in actions),
                        actions,
                    )
                )
        else:
            title = (
                f"optimise {stack}: {len(actions)} change(s) computed from the peak load"
                if actions
                else f"optimise {stack}: every key sized from the measurements already "
                "covers the peak at its target; look at the autoscaler and the cluster's nodes"
            )
            out.append(
                Recommendation(
                    Kind.OPTIMISE,
                    Bucket.IMMEDIATE,
                    title,
                    reasons + tuple(a.reason for a in actions),
                    tuple(a.command(stack) for a in actions),
                    actions,
                )
            )

    if pending:
        where = ", ".join(f"{r.key} on {r.instance}" for r in pending)
        out.append(
            Recommendation(
                Kind.WATCH,
                Bucket.SHORT_TERM,
                f"critical, not yet sustained: {where}",
                tuple(reason(r) for r in pending),
                (f"sikka-scaling check {stack}",),
            )
        )

    if warnings:
        since = min(w.since for w in warnings)
        actions = tuple(optimisations(peak(ordered, since), spec))
        reasons = tuple(reason(w) for w in warnings)
        if next_stack is not None and not breaches:
            out.append(
                Recommendation(
                    Kind.PREPARE,
                    Bucket.SHORT_TERM,
                    f"prepare the move to {next_stack}",
                    reasons,
                    (f"pulumi preview -s {next_stack}",),
                )
            )
        if actions and not breaches:
            out.append(
                Recommendation(
                    Kind.OPTIMISE,
                    Bucket.SHORT_TERM,
                    f"keep {stack} at its target utilisation",
                    reasons + tuple(a.reason for a in actions),
                    tuple(a.command(stack) for a in actions),
                    actions,
                )
            )

    for check in checks:
        if check.ok:
            continue
        out.append(
            Recommendation(
                Kind.READINESS,
                Bucket.IMMEDIATE if check.critical else Bucket.SHORT_TERM,
                f"not ready: {check.name}",
                (check.detail or "the check failed",),
            )
        )

    if ordered:
        latest = ordered[-1]
        for judged in (judge(r, spec) for r in latest.readings):
            if judged.level is Level.UNREACHABLE:
                r = judged.reading
                out.append(
                    Recommendation(
                        Kind.RESTORE,
                        Bucket.IMMEDIATE,
                        f"unreachable: {r.key} on {r.instance}",
                        (r.error or "no answer",),
                    )
                )

    first = soonest([t for t in trends(ordered, spec) if t.trend.seconds])
    if first is not None and first.trend.seconds and not breaches:
        t = first.trend
        rate = (t.slope or 0.0) * 3600
        move = (
            promotion_commands(next_stack)[:1] if next_stack else (f"sikka-scaling check {stack}",)
        )
        out.append(
            Recommendation(
                Kind.PREPARE,
                Bucket.LONG_TERM,
                f"{first.subject} reaches its {t.target:g} % threshold in about "
                f"{duration(t.seconds or 0.0)}",
                (
                    f"least-squares fit of {t.points} samples: {t.fitted_now:.1f} % now, "
                    f"rising {rate:.2f} points an hour",
                ),
                move,
            )
        )
    return Advice(
        stack=stack,
        next_stack=next_stack,
        recommendations=tuple(out),
        breaches=tuple(breaches),
        pending=tuple(pending),
        warnings=tuple(warnings),
    )
