"""The status and summary documents: the seed's shapes, filled from measurements."""

from __future__ import annotations

import json

import pytest

from scaling.advisor.status import assess, check_document, status_document, summary_document
from scaling.metrics.model import ReadinessCheck, Reading, Sample
from scaling.model import PhaseSpec
from scaling.stackconfig import parse

T0 = 1_790_000_000.0
MB = 1024 * 1024


def _spec(phase: str) -> PhaseSpec:
    return parse({"sikka:phase": phase}, stack=phase)


def _growth_sample(i: int, *, users: float, redis_up: bool = True) -> Sample:
    return Sample(
        T0 + 60 * i,
        "direct",
        (
            Reading("host.cpu", "host", "laptop", 30.0 + i, None, "percent"),
            Reading("postgres.connections", "postgres", "pg-0", 40, 100, "connections"),
            Reading("postgres.connections", "postgres", "pg-1", 10, 100, "connections"),
            Reading(
                "redis.memory",
                "redis",
                "r0",
                512 * MB if redis_up else None,
                2048 * MB,
                "bytes",
                None if redis_up else "connection refused",
            ),
            Reading("gateway.connections", "gateway", "g1", users / 2, 1000, "connections"),
            Reading("gateway.connections", "gateway", "g2", users / 2, 1000, "connections"),
            Reading("gateway.active_trips", "gateway", "g1", 150, None, "trips"),
            Reading("gateway.active_trips", "gateway", "g2", 150, None, "trips"),
            Reading("nginx.connections", "nginx", "nginx", 2 * users, 6144, "connections"),
        ),
    )


CHECKS = (
    ReadinessCheck("replicas streaming", ok=True, detail="2 of 2"),
    ReadinessCheck("pooler up", ok=True),
    ReadinessCheck("sentinel quorum reachable", ok=False, detail="1 of 3", critical=True),
    ReadinessCheck("monitoring scrapes every target", ok=False, detail="10 of 11"),
)


def test_status_shape_and_values() -> None:
    spec = _spec("growth")
    history = [_growth_sample(i, users=800 + 20 * i) for i in range(6)]
    doc = status_document(assess(history, spec, checks=CHECKS))
    assert set(doc) >= {
        "currentPhase",
        "nextPhase",
        "currentCapacity",
        "phaseProgress",
        "recommendations",
        "infrastructure",
        "timeline",
    }
    assert (doc["currentPhase"], doc["nextPhase"]) == ("growth", "scale")
    capacity = doc["currentCapacity"]
    assert capacity["maxConcurrentUsers"] == 2000 and capacity["maxConcurrentTrips"] == 1200
    assert capacity["concurrentUsers"] == 900 and capacity["concurrentTrips"] == 300
    assert capacity["utilizationPercentage"] == 45.0
    assert (capacity["gatewaysMeasured"], capacity["gatewaysUnreachable"]) == (2, 0)
    progress = doc["phaseProgress"]
    assert progress["completedActions"] == ["replicas streaming", "pooler up"]
    assert progress["pendingActions"] == ["monitoring scrapes every target"]
    assert progress["criticalActions"] == ["sentinel quorum reachable"]
    assert progress["progressPercentage"] == 50.0
    assert set(doc["recommendations"]) == {"immediate", "shortTerm", "longTerm"}
    assert [r["title"] for r in doc["recommendations"]["immediate"]] == [
        "not ready: sentinel quorum reachable"
    ]
    infra = doc["infrastructure"]
    assert set(infra) == {"database", "redis", "websocket", "nginx"}
    assert infra["database"]["configuredMax"] == 100 and infra["database"]["current"] == 40
    assert infra["database"]["level"] == "optimal" and len(infra["database"]["instances"]) == 2
    assert infra["redis"]["configuredMax"] == 2048 and infra["redis"]["current"] == 512
    assert infra["websocket"]["current"] == 900 and infra["websocket"]["configuredMax"] == 2000
    assert infra["nginx"]["current"] == 1800 and infra["nginx"]["configuredMax"] == 6144
    # host.cpu rises 1 point a minute to 35 %: 35 minutes to the 70 % threshold
    timeline = doc["timeline"]
    assert timeline["estimatedTimeToNextPhase"] == "about 35 min"
    assert timeline["estimatedSecondsToNextPhase"] == pytest.approx(2100)
    assert timeline["milestones"][0]["milestone"].startswith("host.cpu on laptop reaches 70 %")
    assert doc["verdict"]["verdict"] == "critical" and doc["verdict"]["exitCode"] == 5
    json.dumps(doc, allow_nan=False)  # a JSON document as it stands


def test_progress_follows_the_checks_not_constants() -> None:
    spec = _spec("growth")
    history = [_growth_sample(0, users=100)]
    all_ok = [ReadinessCheck(c.name, ok=True) for c in CHECKS]
    assert (
        status_document(assess(history, spec, checks=all_ok))["phaseProgress"]["progressPercentage"]
        == 100.0
    )
    none = status_document(assess(history, spec))["phaseProgress"]
    assert none["progressPercentage"] is None and none["completedActions"] == []


def test_unknown_time_without_a_trend_and_unreachable_parts() -> None:
    spec = _spec("growth")
    history = [_growth_sample(0, users=100, redis_up=False)]
    doc = status_document(assess(history, spec))
    assert doc["timeline"]["estimatedTimeToNextPhase"] == "unknown"
    assert doc["timeline"]["estimatedSecondsToNextPhase"] is None
    assert "too few points" in doc["timeline"]["basis"]
    assert doc["infrastructure"]["redis"]["current"] is None
    assert doc["infrastructure"]["redis"]["level"] == "unreachable"
    assert doc["verdict"]["exitCode"] == 6


def test_a_sustained_breach_means_now() -> None:
    spec = _spec("launch")  # 1 gateway x 500, connections threshold 80 %
    history = [
        Sample(
            T0 + 60 * i,
            "direct",
            (Reading("gateway.connections", "gateway", "g", 450, 500, "connections"),),
        )
        for i in range(11)
    ]
    a = assess(history, spec)
    doc = status_document(a)
    assert doc["timeline"]["estimatedTimeToNextPhase"] == "now"
    assert doc["currentCapacity"]["utilizationPercentage"] == 90.0
    summary = summary_document(a)
    assert summary == {
        "stack": "launch",
        "currentPhase": "launch",
        "nextPhase": "growth",
        "measuredAt": "2026-09-21T14:23:20+00:00",  # the last sample, T0 + 10 min
        "verdict": "recommend",
        "exitCode": 4,
        "utilizationPercentage": 90.0,
        "progressPercentage": None,
        "estimatedTimeToNextPhase": "now",
        "immediate": ["promote to growth"],
    }


def test_empty_history() -> None:
    doc = status_document(assess([], _spec("scale")))
    assert doc["nextPhase"] is None and doc["measuredAt"] is None
    assert doc["currentCapacity"]["concurrentUsers"] is None
    assert doc["verdict"]["exitCode"] == 0
    assert doc["timeline"]["estimatedTimeToNextPhase"] == "unknown"


def test_check_document_rows_and_runs() -> None:
    spec = _spec("launch")  # connections: warning from 60 %, critical at 80 %
    history = [
        Sample(
            T0 + 60 * i,
            "prometheus",
            (
                Reading("gateway.connections", "gateway", "g", 450, 500, "connections"),
                Reading("postgres.replica_lag_seconds", "postgres", "r", 0.5, None, "seconds"),
            ),
        )
        for i in range(4)
    ]
    doc = check_document(assess(history, spec))
    gateway, lag = doc["readings"]
    assert gateway["level"] == "critical" and gateway["percent"] == 90.0
    assert (gateway["warningFrom"], gateway["criticalFrom"]) == (60.0, 80.0)
    assert gateway["thresholdKey"] == "thresholds.connectionsPercent"
    assert lag["level"] is None and lag["thresholdKey"] is None
    assert doc["breaches"] == [] and doc["source"] == "prometheus" and doc["samples"] == 4
    (pending,) = doc["pending"]
    assert pending["seconds"] == 180 and pending["over"] == 10.0 and not pending["sustained"]
    assert doc["verdict"] == "warning" and doc["exitCode"] == 3
    json.dumps(doc, allow_nan=False)


def test_the_phase_utilisation_can_set_the_timeline() -> None:
    spec = _spec("launch")  # 500 WebSockets, trips up to 500; connections threshold 80 %
    history = [
        Sample(
            T0 + 60 * i,
            "direct",
            (
                Reading("gateway.connections", "gateway", "g", 100 + 5 * i, 500, "connections"),
                Reading("gateway.active_trips", "gateway", "g", 200 + 10 * i, None, "trips"),
            ),
        )
        for i in range(5)
    ]
    timeline = status_document(assess(history, spec))["timeline"]
    # trips bind: 48 % at the end, +2 points a minute, 16 minutes to 80 %
    assert timeline["estimatedTimeToNextPhase"] == "about 16 min"
    assert timeline["basis"].startswith("least-squares trend of the phase's utilisation")
