"""Levels per phase from the phase's own thresholds, and the alert rules built from them."""

from __future__ import annotations

import pytest
import yaml

from scaling.advisor.levels import (
    SUSTAINED_SECONDS,
    Level,
    band_for,
    judge,
    threshold_field,
    worst,
)
from scaling.metrics.model import Reading
from scaling.model import PhaseSpec
from scaling.render.alerts import alert_rules
from scaling.stackconfig import parse


def _spec(phase: str) -> PhaseSpec:
    return parse({"sikka:phase": phase}, stack=phase)


def _pct(key: str, percent: float) -> Reading:
    return Reading(key, key.split(".")[0], "i", percent, None, "percent")


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("host.cpu", "cpu_percent"),
        ("host.memory", "memory_percent"),
        ("redis.memory", "memory_percent"),
        ("postgres.connections", "connections_percent"),
        ("gateway.connections", "connections_percent"),
        ("nginx.connections", "connections_percent"),
        ("pgbouncer.clients", "connections_percent"),
        ("redis.clients", "connections_percent"),
        ("postgres.replica_lag_seconds", None),
        ("gateway.active_trips", None),
    ],
)
def test_which_threshold_judges_which_key(key: str, field: str | None) -> None:
    assert threshold_field(key) == field


# phase → (cpu, memory, connections) thresholds, as the README's capacity table states them
PHASE_THRESHOLDS = {"launch": (60, 70, 80), "growth": (70, 75, 85), "scale": (70, 80, 85)}


@pytest.mark.parametrize("phase", PHASE_THRESHOLDS)
@pytest.mark.parametrize(
    "index,key", [(0, "host.cpu"), (1, "host.memory"), (2, "nginx.connections")]
)
def test_level_boundaries_per_phase(phase: str, index: int, key: str) -> None:
    spec = _spec(phase)
    threshold = PHASE_THRESHOLDS[phase][index]
    start = threshold * 0.75  # the seed's 60 % of 80 %
    expected = [
        (start - 0.01, Level.OPTIMAL),
        (start, Level.WARNING),
        (threshold - 0.01, Level.WARNING),
        (threshold, Level.CRITICAL),
        (100.0, Level.CRITICAL),
        (0.0, Level.OPTIMAL),
    ]
    for percent, level in expected:
        assert judge(_pct(key, percent), spec).level is level, (phase, key, percent)


def test_launch_connections_band_is_the_seeds() -> None:
    band = band_for("postgres.connections", _spec("launch"))
    assert band is not None
    assert (band.warning_from, band.critical_from) == (60.0, 80.0)
    assert band.config_key == "thresholds.connectionsPercent"


def test_a_ratio_reading_is_judged_against_its_limit() -> None:
    spec = _spec("growth")  # connections threshold 85, warning from 63.75
    pg = Reading("postgres.connections", "postgres", "pg", 64, 100, "connections")
    judged = judge(pg, spec)
    assert judged.percent == pytest.approx(64.0) and judged.level is Level.WARNING
    full = Reading("postgres.connections", "postgres", "pg", 85, 100, "connections")
    assert judge(full, spec).level is Level.CRITICAL


def test_unreachable_and_unjudged() -> None:
    spec = _spec("launch")
    down = Reading("redis.memory", "redis", "r", None, 1e6, "bytes", "connection refused")
    assert judge(down, spec).level is Level.UNREACHABLE
    lag = Reading("postgres.replica_lag_seconds", "postgres", "r1", 3.0, None, "seconds")
    assert judge(lag, spec).level is None
    no_limit = Reading("pgbouncer.clients", "pgbouncer", "p", 50, None, "connections")
    assert judge(no_limit, spec).level is None


def test_worst_ignores_unreachable() -> None:
    assert worst([Level.OPTIMAL, Level.UNREACHABLE, None]) is Level.OPTIMAL
    assert worst([Level.WARNING, Level.CRITICAL, Level.OPTIMAL]) is Level.CRITICAL
    assert worst([]) is Level.OPTIMAL


@pytest.mark.parametrize("phase", PHASE_THRESHOLDS)
def test_alert_rules_use_the_same_bands(phase: str) -> None:
    spec = _spec(phase)
    rules = alert_rules(spec)["groups"][0]["rules"]
    keys = {
        "HostCpu": "host.cpu",
        "HostMemory": "host.memory",
        "PostgresConnections": "postgres.connections",
        "GatewayConnections": "gateway.connections",
        "NginxConnections": "nginx.connections",
        "RedisMemory": "redis.memory",
    }
    by_name = {r["alert"]: r for r in rules}
    assert len(by_name) == 2 * len(keys)
    for name, key in keys.items():
        band = band_for(key, spec)
        assert band is not None
        high, elevated = by_name[f"{name}High"], by_name[f"{name}Elevated"]
        assert high["expr"].endswith(f">= {band.critical_from:g}")
        assert elevated["expr"].endswith(f">= {band.warning_from:g}")
        assert high["labels"]["severity"] == "critical"
        assert elevated["labels"]["severity"] == "warning"
        assert high["for"] == elevated["for"] == f"{SUSTAINED_SECONDS // 60}m"
    # The rendered YAML round-trips.
    assert yaml.safe_load(yaml.safe_dump(alert_rules(spec))) == alert_rules(spec)


def test_a_stack_threshold_moves_the_alert_and_the_level_together() -> None:
    spec = parse({"sikka:phase": "launch", "sikka:thresholds": {"cpuPercent": 50}}, stack="launch")
    rule = next(r for r in alert_rules(spec)["groups"][0]["rules"] if r["alert"] == "HostCpuHigh")
    assert rule["expr"].endswith(">= 50")
    assert judge(_pct("host.cpu", 50), spec).level is Level.CRITICAL
    assert judge(_pct("host.cpu", 37.4), spec).level is Level.OPTIMAL
    assert judge(_pct("host.cpu", 37.5), spec).level is Level.WARNING
