"""Capacity estimates and the optimisation arithmetic, checked against the stack rules."""

from __future__ import annotations

import math
from typing import Any

import pytest

from scaling.advisor.capacity import (
    Action,
    estimate,
    gateway_slots,
    optimisations,
    peak,
    units_needed,
)
from scaling.metrics.model import Reading, Sample
from scaling.model import PhaseSpec
from scaling.stackconfig import parse


def _spec(phase: str, **sections: dict[str, Any]) -> PhaseSpec:
    return parse(
        {"sikka:phase": phase, **{f"sikka:{k}": v for k, v in sections.items()}}, stack=phase
    )


def _sample(*readings: Reading, at: float = 1_790_000_000.0) -> Sample:
    return Sample(at, "direct", readings)


def _gw(instance: str, connections: float | None, trips: float | None = None) -> list[Reading]:
    out = [Reading("gateway.connections", "gateway", instance, connections, 2500, "connections")]
    if trips is not None:
        out.append(Reading("gateway.active_trips", "gateway", instance, trips, None, "trips"))
    return out


def _applied(spec_phase: str, actions: list[Action], **base: dict[str, Any]) -> PhaseSpec:
    """The phase with every action's key set: the stack rules must accept the result."""
    sections: dict[str, dict[str, Any]] = {k: dict(v) for k, v in base.items()}
    for action in actions:
        section, key = action.key.split(".", 1)
        sections.setdefault(section, {})[key] = action.value
    return _spec(spec_phase, **sections)


def test_units_needed() -> None:
    assert units_needed(7000, 1000, 70) == 10
    assert units_needed(700, 1000, 70) == 1  # exactly at the target: one is enough
    assert units_needed(701, 1000, 70) == 2
    assert units_needed(0, 1000, 70) == 1
    with pytest.raises(ValueError):
        units_needed(10, 0, 70)
    with pytest.raises(ValueError):
        units_needed(10, 10, 0)


def test_launch_estimate() -> None:
    spec = _spec("launch")  # 1 gateway x 500 connections, trips 200-500
    est = estimate(_sample(*_gw("g1", 300, 120)), spec)
    assert est.max_concurrent_users == 500 and est.max_concurrent_trips == 500
    assert est.concurrent_users == 300 and est.concurrent_trips == 120
    assert est.utilization_percentage == 60.0  # users bind first: 60 % vs trips 24 %


def test_trips_can_bind_first() -> None:
    spec = _spec("growth")  # 2 x 1000 connections, trips up to 1200
    sample = _sample(*_gw("g1", 300, 500), *_gw("g2", 300, 400))
    est = estimate(sample, spec)
    assert est.concurrent_users == 600 and est.concurrent_trips == 900
    assert est.utilization_percentage == 75.0 and est.gateways_read == 2


def test_scale_counts_the_autoscaler_ceiling_and_open_ended_trips() -> None:
    spec = _spec("scale")
    assert gateway_slots(spec) == 12
    est = estimate(_sample(*_gw("g1", 2000, 900), *_gw("g2", 1000, 100)), spec)
    assert est.max_concurrent_users == 12 * 2500 and est.max_concurrent_trips is None
    assert est.utilization_percentage == 10.0


def test_unreachable_gateways_are_not_zero_users() -> None:
    spec = _spec("growth")
    est = estimate(_sample(*_gw("g1", None), *_gw("g2", None)), spec)
    assert est.concurrent_users is None and est.utilization_percentage is None
    assert est.gateways_unreachable == 2
    half = estimate(_sample(*_gw("g1", 400), *_gw("g2", None)), spec)
    assert half.concurrent_users == 400 and half.gateways_unreachable == 1


def test_scale_gateways_needed_at_the_target() -> None:
    spec = _spec("scale")  # 4..12 gateways x 2500, target 70 %
    sample = _sample(*(r for i in range(12) for r in _gw(f"g{i}", 2400)))  # 28,800 sockets
    actions = optimisations(sample, spec)
    gw = [a for a in actions if a.key.startswith("gateway.")]
    needed = math.ceil(28_800 / (2500 * 0.70))  # 17
    assert [(a.key, a.current, a.value) for a in gw] == [("gateway.maxReplicas", 12, needed)]
    assert "28,800 WebSocket connections at 70 % of 2500 per gateway need 17" in gw[0].reason
    assert (
        gw[0].command("scale") == "pulumi config set -s scale --path sikka:gateway.maxReplicas 17"
    )
    _applied("scale", actions)  # the stack accepts the new value


def test_nothing_to_do_below_the_target() -> None:
    spec = _spec("scale")
    sample = _sample(*(r for i in range(4) for r in _gw(f"g{i}", 1000)))
    assert optimisations(sample, spec) == []


def test_gateway_cpu_can_need_more_than_connections() -> None:
    spec = _spec("scale")
    readings = [r for i in range(12) for r in _gw(f"g{i}", 500)]
    readings += [
        Reading("gateway.cpu", "gateway", f"g{i}", 95.0, None, "percent") for i in range(12)
    ]
    (action,) = optimisations(_sample(*readings), spec)
    assert action.key == "gateway.maxReplicas" and action.value == math.ceil(12 * 95 / 70)
    assert "CPU" in action.reason


def test_without_autoscaling_replicas_and_max_move_together() -> None:
    spec = _spec("growth")  # 2 gateways x 1000, no autoscaler
    sample = _sample(*_gw("g1", 990), *_gw("g2", 990))
    actions = optimisations(sample, spec)
    assert [(a.key, a.value) for a in actions] == [
        ("gateway.replicas", 3),
        ("gateway.maxReplicas", 3),
    ]
    _applied("growth", actions)


def test_pool_growth_raises_max_connections_so_the_pools_fit() -> None:
    spec = _spec("scale")  # 2 poolers x (85 + 10) + 3 reserved = 193 <= 200
    sample = _sample(
        Reading("pgbouncer.server_connections", "pgbouncer", "pgb0", 84, 85, "connections"),
        Reading("pgbouncer.clients", "pgbouncer", "pgb0", 3900, 4000, "connections"),
    )
    actions = {a.key: a for a in optimisations(sample, spec)}
    assert actions["pooler.defaultPoolSize"].value == 120  # ceil(84 / 0.7)
    assert actions["pooler.maxClientConn"].value == math.ceil(3900 / 0.7)
    assert actions["postgres.maxConnections"].value == 2 * (120 + 10) + 3
    _applied("scale", list(actions.values()), pooler={"readPoolSize": 85})


def test_postgres_connections_alone() -> None:
    spec = _spec("launch")  # max_connections 20
    sample = _sample(Reading("postgres.connections", "postgres", "pg", 19, 20, "connections"))
    (action,) = optimisations(sample, spec)
    assert (action.key, action.current, action.value) == ("postgres.maxConnections", 20, 28)


def test_citus_shards_from_worker_load() -> None:
    spec = _spec("scale")  # 4 shards
    sample = _sample(
        Reading("postgres.cpu", "postgres", "worker-1", 91.0, None, "percent"),
        Reading("postgres.memory", "postgres", "worker-2", 60.0, None, "percent"),
    )
    (action,) = optimisations(sample, spec)
    assert action.key == "postgres.shards" and action.value == math.ceil(4 * 91 / 70)
    _applied("scale", [action])
    # Not Citus: no shard action from the same load.
    assert optimisations(sample, _spec("growth")) == []


def test_redis_cluster_adds_masters_of_the_same_size() -> None:
    spec = _spec("scale")  # 65536 MB over 3 masters
    per = spec.redis.memory_per_node_mb
    sample = _sample(
        Reading("redis.memory", "redis", "r0", 0.9 * per * 2**20, per * 2**20, "bytes")
    )
    actions = {a.key: a for a in optimisations(sample, spec)}
    masters = math.ceil(3 * 90 / 80)
    assert actions["redis.masters"].value == masters
    assert actions["redis.maxMemoryMb"].value == masters * per
    _applied("scale", list(actions.values()))


def test_redis_standalone_grows_memory_and_its_disk() -> None:
    mb = 2**20
    spec = _spec("launch")  # 256 MB, 1 GB disk
    sample = _sample(
        Reading("redis.memory", "redis", "r", 250 * mb, 256 * mb, "bytes"),
        Reading("redis.clients", "redis", "r", 990, 1000, "connections"),
    )
    actions = {a.key: a for a in optimisations(sample, spec)}
    assert actions["redis.maxMemoryMb"].value == math.ceil(256 * (250 / 256 * 100) / 80)
    assert "redis.storageGb" not in actions  # 1 GB still holds twice 313 MB
    assert actions["redis.maxClients"].value == math.ceil(990 / 0.7)
    _applied("launch", list(actions.values()))

    bigger = _spec("launch", redis={"maxMemoryMb": 512})
    full = _sample(Reading("redis.memory", "redis", "r", 0.98 * 512 * mb, 512 * mb, "bytes"))
    grown = {a.key: a for a in optimisations(full, bigger)}
    memory = math.ceil(512 * 98 / 80)
    assert grown["redis.maxMemoryMb"].value == memory
    assert grown["redis.storageGb"].value == math.ceil(2 * memory / 1024) == 2
    _applied("launch", list(grown.values()), redis={"maxMemoryMb": 512})


def test_nginx_instances() -> None:
    spec = _spec("scale")  # 4 x 4096 per instance, 2..6 instances, target 70 %
    cap = spec.nginx.instance_capacity
    sample = _sample(
        *(Reading("nginx.connections", "nginx", f"n{i}", 0.9 * cap, cap, "c") for i in range(6))
    )
    (action,) = optimisations(sample, spec)
    assert action.key == "nginx.maxReplicas" and action.value == math.ceil(6 * 0.9 / 0.7)


def test_peak_over_a_window() -> None:
    samples = [
        _sample(*_gw("g1", v), at=1_790_000_000 + 60 * i) for i, v in enumerate([100, 900, 300])
    ]
    samples.append(_sample(*_gw("g1", None), at=1_790_000_000 + 180))
    top = peak(samples)
    (reading,) = top.readings
    assert reading.value == 900 and top.at == 1_790_000_000 + 180
    assert peak(samples, since=1_790_000_000 + 120).readings[0].value == 300
    only_down = peak([_sample(*_gw("g2", None))])
    assert only_down.readings[0].value is None
