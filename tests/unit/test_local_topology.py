"""The local runner's view of the Topology (no server started): what it looks up there."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaling.local import runner
from scaling.local.context import Context
from scaling.local.ports import PortAllocator
from scaling.local.redis import cluster_layout
from scaling.local.state import RunState
from scaling.local.topology import (
    local_spec,
    local_topology,
    monitored,
    nodes,
    replicas_of,
)
from scaling.model import PhaseSpec, PlatformKind
from scaling.render.endpoints import Endpoint

ROOT = Path(__file__).resolve().parents[2]


def spec_of(stack: str) -> PhaseSpec:
    return runner.load_spec(ROOT / f"Pulumi.{stack}.yaml")


def test_citus_runs_locally_as_the_patroni_container_topology() -> None:
    spec = spec_of("scale")
    assert spec.postgres.mode == "citus" and spec.platform == PlatformKind.KUBERNETES
    local = local_spec(spec)
    assert local.postgres.mode == "replicated" and local.platform == PlatformKind.DOCKER
    topology = local_topology(spec)
    assert [(n.name, n.role, n.replica_of) for n in nodes(topology, "postgres")] == [
        ("etcd-0", "dcs", None),
        ("etcd-1", "dcs", None),
        ("etcd-2", "dcs", None),
        ("postgres-0", "primary", None),
        ("postgres-1", "replica", "postgres-0"),
        ("postgres-2", "replica", "postgres-0"),
        ("haproxy-0", "router", None),
        ("haproxy-1", "router", None),
        ("pgbouncer-0", "pooler", None),
        ("pgbouncer-1", "pooler", None),
    ]
    assert [n.name for n in nodes(topology, "nginx")] == ["nginx"]


def test_scale_cluster_layout_is_the_topology_one() -> None:
    topology = local_topology(spec_of("scale"))
    masters = nodes(topology, "redis", "cluster-master")
    assert [m.name for m in masters] == ["redis-0", "redis-2", "redis-4"]
    assert {m.name: [r.name for r in replicas_of(topology, m.name)] for m in masters} == {
        "redis-0": ["redis-1"],
        "redis-2": ["redis-3"],
        "redis-4": ["redis-5"],
    }


def test_cluster_script_gets_each_replica_paired_with_its_own_master(tmp_path: Path) -> None:
    spec = spec_of("scale")
    state = RunState(stack="t", phase="scale", state_dir=str(tmp_path), secrets_file="")
    ctx = Context(
        spec=spec, state=state, secrets={}, ports=PortAllocator(), topology=local_topology(spec)
    )
    for index in range(spec.redis.cluster_nodes):
        ctx.endpoints[f"redis-{index}"] = Endpoint("127.0.0.1", 7000 + index)
    masters, replicas = cluster_layout(ctx)
    assert [str(m) for m in masters] == ["127.0.0.1:7000", "127.0.0.1:7002", "127.0.0.1:7004"]
    assert replicas == {
        "127.0.0.1:7001": "127.0.0.1:7000",
        "127.0.0.1:7003": "127.0.0.1:7002",
        "127.0.0.1:7005": "127.0.0.1:7004",
    }


def test_sentinels_monitor_the_topology_master() -> None:
    topology = local_topology(spec_of("growth"))
    sentinels = nodes(topology, "redis", "sentinel")
    assert [s.name for s in sentinels] == [
        "redis-sentinel-0",
        "redis-sentinel-1",
        "redis-sentinel-2",
    ]
    assert {monitored(topology, s) for s in sentinels} == {"redis-0"}


@pytest.mark.parametrize("stack", ["launch", "growth", "scale"])
def test_gateways_connect_to_redis_only(stack: str) -> None:
    """Gateways never use the database: no edge to it, no credential of it."""
    topology = local_topology(spec_of(stack))
    for gateway in nodes(topology, "gateway"):
        assert [e.target for e in topology.edges_from(gateway.name, "connects-to")] == ["redis"]
        assert dict(gateway.secret_env) == {
            "REDIS_PASSWORD": "redis-password",
            "GATEWAY_JWT_SECRET": "gateway-jwt-secret",
        }


@pytest.mark.parametrize("stack", ["launch", "growth", "scale"])
def test_down_knows_the_stop_order_of_every_role(stack: str) -> None:
    topology = local_topology(spec_of(stack))
    roles = {n.role for n in topology.nodes if not n.one_shot}
    assert roles <= set(runner._ROLE_ORDER)
