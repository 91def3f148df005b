"""The ``status`` and ``summary`` documents of a phase, from its measurements.

``status``::

    currentPhase, nextPhase, stack, measuredAt
    currentCapacity   {maxConcurrentUsers, maxConcurrentTrips, utilizationPercentage,
                       concurrentUsers, concurrentTrips}
    phaseProgress     {completedActions, pendingActions, criticalActions, progressPercentage}
                      - the readiness checks run against the live system, by name; the
                      percentage is the share passed (null when none was run)
    recommendations   {immediate, shortTerm, longTerm}: lists of {kind, title, reasons,
                       commands, actions}
    infrastructure    {database, redis, websocket, nginx}: each {metric, unit, configuredMax,
                       current, utilizationPercentage, level, instances[]} - the configured
                       capacity beside what was measured (current null when unreachable)
    timeline          {estimatedTimeToNextPhase, estimatedSecondsToNextPhase, basis,
                       milestones[]}: "now" when a breach is sustained, otherwise the soonest
                      threshold the least-squares trends reach, or "unknown"
    verdict           {verdict, exitCode, reasons}
    lastTransition    the latest transition into or out of the stack (source, target,
                      outcome, failedStep, startedAt, endedAt, measurements, ...) or null

``summary`` is the short form: phase, next phase, verdict and exit code, utilisation,
progress, time to the next phase and the immediate recommendations' titles.

``check`` (:func:`check_document`) is what ``check --json`` prints: one row per reading of
the latest sample with its level and band, the runs over the window (sustained breaches,
pending ones, sustained warnings), the estimate, the recommendations and the verdict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from scaling.advisor.capacity import estimate, gateway_slots
from scaling.advisor.levels import SUSTAINED_SECONDS, Judgement, Level, band_for, judge, worst
from scaling.advisor.recommend import Advice, Bucket, duration, recommend
from scaling.advisor.trend import trends
from scaling.advisor.verdict import Outcome, decide
from scaling.advisor.window import Run
from scaling.metrics.model import ReadinessCheck, Sample
from scaling.model import PhaseSpec

MB = 1024 * 1024


@dataclass(frozen=True)
class Assessment:
    """Everything the documents are built from, computed once."""

    spec: PhaseSpec
    history: tuple[Sample, ...]
    latest: Sample | None
    judgements: tuple[Judgement, ...]
    advice: Advice
    outcome: Outcome
    checks: tuple[ReadinessCheck, ...]


def assess(
    history: Sequence[Sample],
    spec: PhaseSpec,
    *,
    checks: Sequence[ReadinessCheck] = (),
    stack: str | None = None,
    next_stack: str | None = None,
    window: float = SUSTAINED_SECONDS,
    now: float | None = None,
    max_gap: float | None = None,
) -> Assessment:
    ordered = tuple(sorted(history, key=lambda s: s.at))
    latest = ordered[-1] if ordered else None
    judgements = tuple(judge(r, spec) for r in latest.readings) if latest else ()
    advice = recommend(
        ordered,
        spec,
        stack=stack,
        next_stack=next_stack,
        checks=checks,
        window=window,
        now=now,
        max_gap=max_gap,
    )
    return Assessment(
        spec, ordered, latest, judgements, advice, decide(judgements, advice, checks), tuple(checks)
    )


def _iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat()


def _part(
    a: Assessment, key: str, configured: float, unit: str, *, total: bool, scale: float = 1.0
) -> dict[str, Any]:
    """One tier's configured capacity beside the measurement: summed over instances
    (``total``: gateways, Nginx) or the busiest instance's (a database or Redis node is full
    on its own)."""
    mine = [j for j in a.judgements if j.reading.key == key]
    values = [j.reading.value for j in mine if j.reading.value is not None]
    current: float | None
    if not values:
        current = None
    elif total:
        current = sum(values) / scale
    else:
        current = max(values) / scale
    levels = [j.level for j in mine]
    if mine and not values:
        level: str | None = Level.UNREACHABLE.value
    elif mine:
        level = worst(levels).value
    else:
        level = None  # not measured
    return {
        "metric": key,
        "unit": unit,
        "configuredMax": configured,
        "current": None if current is None else round(current, 1),
        "utilizationPercentage": None
        if current is None or not configured
        else round(100 * current / configured, 1),
        "level": level,
        "instances": [
            {
                "instance": j.reading.instance,
                "value": j.reading.value,
                "limit": j.reading.limit,
                "percent": None if j.percent is None else round(j.percent, 1),
                "level": None if j.level is None else j.level.value,
                "error": j.reading.error,
            }
            for j in mine
        ],
    }


def infrastructure(a: Assessment) -> dict[str, Any]:
    spec = a.spec
    pg, redis, gw, nginx = spec.postgres, spec.redis, spec.gateway, spec.nginx
    nginx_instances = nginx.max_replicas if spec.autoscaling.enabled else nginx.replicas
    return {
        "database": _part(
            a, "postgres.connections", pg.max_connections, "connections", total=False
        ),
        "redis": _part(a, "redis.memory", redis.memory_per_node_mb, "MB", total=False, scale=MB),
        "websocket": _part(
            a,
            "gateway.connections",
            gateway_slots(spec) * gw.connections_per_replica,
            "connections",
            total=True,
        ),
        "nginx": _part(
            a,
            "nginx.connections",
            nginx_instances * nginx.instance_capacity,
            "connections",
            total=True,
        ),
    }


def timeline(a: Assessment) -> dict[str, Any]:
    spec, advice = a.spec, a.advice
    target = advice.next_stack or "optimisation"
    found = trends(a.history, spec)
    ahead = sorted(
        (t for t in found if t.trend.seconds is not None), key=lambda t: t.trend.seconds or 0.0
    )
    milestones: list[dict[str, Any]] = [
        {
            "milestone": f"{t.subject} reaches {t.trend.target:g} % "
            f"({_threshold_key(t.key, spec)})",
            "estimatedSeconds": round(t.trend.seconds or 0.0, 1),
            "estimated": "now" if not t.trend.seconds else f"about {duration(t.trend.seconds)}",
        }
        for t in ahead
    ]
    milestones += [
        {
            "milestone": f"ready: {c.name}",
            "estimatedSeconds": 0.0 if c.ok else None,
            "estimated": "done" if c.ok else "pending",
        }
        for c in a.checks
    ]
    if advice.breaches:
        seconds: float | None = 0.0
        text = "now"
        basis = "; ".join(f"{b.key} on {b.instance} over its threshold" for b in advice.breaches)
    else:
        known = [t for t in found if t.trend.seconds is not None]
        first = min(known, key=lambda t: t.trend.seconds or 0.0, default=None)
        if first is None or first.trend.seconds is None:
            seconds, text = None, "unknown"
            reasons = sorted({t.trend.reason for t in found}) or ["no judged measurement"]
            basis = "no rising trend: " + ", ".join(reasons)
        else:
            seconds = first.trend.seconds
            text = "now" if seconds == 0 else f"about {duration(seconds)}"
            basis = (
                f"least-squares trend of {first.subject} "
                f"({first.trend.points} samples) toward {first.trend.target:g} %"
            )
    return {
        "estimatedTimeToNextPhase": text,
        "estimatedSecondsToNextPhase": None if seconds is None else round(seconds, 1),
        "toward": target,
        "basis": basis,
        "milestones": milestones,
    }


def _threshold_key(key: str, spec: PhaseSpec) -> str:
    band = band_for(key, spec)
    return band.config_key if band else "thresholds.connectionsPercent"


def progress(checks: Sequence[ReadinessCheck]) -> dict[str, Any]:
    done = [c.name for c in checks if c.ok]
    critical = [c.name for c in checks if not c.ok and c.critical]
    pending = [c.name for c in checks if not c.ok and not c.critical]
    return {
        "completedActions": done,
        "pendingActions": pending,
        "criticalActions": critical,
        "progressPercentage": round(100 * len(done) / len(checks), 1) if checks else None,
        "checks": [
            {"name": c.name, "ok": c.ok, "critical": c.critical, "detail": c.detail} for c in checks
        ],
    }


def status_document(
    a: Assessment, last_transition: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``last_transition``: the latest transition into or out of the stack, as read from
    the transition logs (scaling.transition.service.last_transition); None when none."""
    spec = a.spec
    est = estimate(a.latest or Sample(0.0, "direct", ()), spec)
    nxt = spec.phase.next
    return {
        "stack": a.advice.stack,
        "currentPhase": spec.phase.value,
        "nextPhase": nxt.value if nxt else None,
        "measuredAt": _iso(a.latest.at if a.latest else None),
        "currentCapacity": {
            "maxConcurrentUsers": est.max_concurrent_users,
            "maxConcurrentTrips": est.max_concurrent_trips,
            "utilizationPercentage": est.utilization_percentage,
            "concurrentUsers": est.concurrent_users,
            "concurrentTrips": est.concurrent_trips,
            # the users and trips above count only the gateways that answered
            "gatewaysMeasured": est.gateways_read,
            "gatewaysUnreachable": est.gateways_unreachable,
        },
        "phaseProgress": progress(a.checks),
        "recommendations": {
            bucket.value: [r.to_dict() for r in a.advice.bucket(bucket)] for bucket in Bucket
        },
        "infrastructure": infrastructure(a),
        "timeline": timeline(a),
        "verdict": {
            "verdict": a.outcome.verdict.label,
            "exitCode": a.outcome.exit_code,
            "reasons": list(a.outcome.reasons),
        },
        "lastTransition": dict(last_transition) if last_transition is not None else None,
    }


def summary_document(a: Assessment) -> dict[str, Any]:
    full = status_document(a)
    return {
        "stack": full["stack"],
        "currentPhase": full["currentPhase"],
        "nextPhase": full["nextPhase"],
        "measuredAt": full["measuredAt"],
        "verdict": full["verdict"]["verdict"],
        "exitCode": full["verdict"]["exitCode"],
        "utilizationPercentage": full["currentCapacity"]["utilizationPercentage"],
        "progressPercentage": full["phaseProgress"]["progressPercentage"],
        "estimatedTimeToNextPhase": full["timeline"]["estimatedTimeToNextPhase"],
        "immediate": [r["title"] for r in full["recommendations"]["immediate"]],
    }


def _run(run: Run) -> dict[str, Any]:
    return {
        "key": run.key,
        "instance": run.instance,
        "level": run.level.value,
        "thresholdKey": run.band.config_key,
        "levelFrom": run.start,
        "since": _iso(run.since),
        "seconds": round(run.duration, 1),
        "window": run.window,
        "samples": run.samples,
        "latest": round(run.latest, 1),
        "peak": round(run.peak, 1),
        "over": round(run.over, 1),
        "sustained": run.sustained,
    }


def check_document(a: Assessment) -> dict[str, Any]:
    est = estimate(a.latest or Sample(0.0, "direct", ()), a.spec)
    return {
        "stack": a.advice.stack,
        "phase": a.spec.phase.value,
        "nextStack": a.advice.next_stack,
        "measuredAt": _iso(a.latest.at if a.latest else None),
        "source": a.latest.source if a.latest else None,
        "samples": len(a.history),
        "readings": [
            {
                "key": j.reading.key,
                "tier": j.reading.tier,
                "instance": j.reading.instance,
                "value": j.reading.value,
                "limit": j.reading.limit,
                "unit": j.reading.unit,
                "percent": None if j.percent is None else round(j.percent, 1),
                "level": None if j.level is None else j.level.value,
                "warningFrom": None if j.band is None else j.band.warning_from,
                "criticalFrom": None if j.band is None else j.band.critical_from,
                "thresholdKey": None if j.band is None else j.band.config_key,
                "error": j.reading.error,
            }
            for j in a.judgements
        ],
        "breaches": [_run(r) for r in a.advice.breaches],
        "pending": [_run(r) for r in a.advice.pending],
        "warnings": [_run(r) for r in a.advice.warnings],
        "estimate": {
            "concurrentUsers": est.concurrent_users,
            "maxConcurrentUsers": est.max_concurrent_users,
            "concurrentTrips": est.concurrent_trips,
            "maxConcurrentTrips": est.max_concurrent_trips,
            "utilizationPercentage": est.utilization_percentage,
            "gatewaysMeasured": est.gateways_read,
            "gatewaysUnreachable": est.gateways_unreachable,
        },
        "recommendations": {
            bucket.value: [r.to_dict() for r in a.advice.bucket(bucket)] for bucket in Bucket
        },
        "verdict": a.outcome.verdict.label,
        "exitCode": a.outcome.exit_code,
        "reasons": list(a.outcome.reasons),
    }
