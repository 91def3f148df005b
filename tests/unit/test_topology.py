"""The one Topology: nodes, roles, replication wiring and names, built once per phase."""

from __future__ import annotations

from typing import Any

import pytest

from scaling.docker import container_name, start_after, volume_name
from scaling.issues import ConfigError
from scaling.model import PhaseSpec
from scaling.stackconfig import parse
from scaling.topology import Topology, build_topology
from scaling.topology.network import node_host, service_host

SCALE_ON_DOCKER = {
    "sikka:platform": "docker",
    "sikka:autoscaling": {"enabled": False},
    "sikka:postgres": {"mode": "replicated"},
}


def spec_of(stack: str, phase: str | None = None, **overrides: Any) -> PhaseSpec:
    return parse({"sikka:phase": phase or stack, **overrides}, stack=stack)


def roles(topology: Topology) -> dict[str, tuple[str, str | None]]:
    return {n.name: (n.role, n.replica_of) for n in topology.nodes}


def test_growth_nodes_roles_and_replication() -> None:
    topology = build_topology(spec_of("growth"))
    assert roles(topology) == {
        "etcd-0": ("dcs", None),
        "etcd-1": ("dcs", None),
        "etcd-2": ("dcs", None),
        # Patroni members: postgres-0 bootstraps the cluster, the others clone from it;
        # afterwards Patroni elects the leader.
        "postgres-0": ("primary", None),
        "postgres-1": ("replica", "postgres-0"),
        "postgres-2": ("replica", "postgres-0"),
        "haproxy-0": ("router", None),
        "haproxy-1": ("router", None),
        "pgbouncer-0": ("pooler", None),
        "pgbouncer-1": ("pooler", None),
        "redis-0": ("master", None),
        "redis-1": ("replica", "redis-0"),
        "redis-2": ("replica", "redis-0"),
        "redis-sentinel-0": ("sentinel", None),
        "redis-sentinel-1": ("sentinel", None),
        "redis-sentinel-2": ("sentinel", None),
        "gateway-0": ("gateway", None),
        "gateway-1": ("gateway", None),
        "nginx": ("proxy", None),
        # Monitoring: an exporter per PostgreSQL member, per PgBouncer and per Nginx, one
        # for the host and one reading every Redis server; Prometheus scrapes them all.
        "node-exporter": ("exporter", None),
        "postgres-exporter-0": ("exporter", None),
        "postgres-exporter-1": ("exporter", None),
        "postgres-exporter-2": ("exporter", None),
        "pgbouncer-exporter-0": ("exporter", None),
        "pgbouncer-exporter-1": ("exporter", None),
        "redis-exporter": ("exporter", None),
        "nginx-exporter-0": ("exporter", None),
        "prometheus": ("prometheus", None),
    }
    monitors = {(e.source, e.target) for e in topology.edges if e.kind == "monitors"}
    assert monitors == {(f"redis-sentinel-{i}", "redis-0") for i in range(3)}
    for pooler in ("pgbouncer-0", "pgbouncer-1"):
        pools = {e.target for e in topology.edges_from(pooler, "pools")}
        assert pools == {"postgres", "postgres-replicas"}
    members = ("postgres-0", "postgres-1", "postgres-2")
    for router in ("haproxy-0", "haproxy-1"):
        assert {e.target for e in topology.edges_from(router, "proxies-to")} == set(members)
    for member in members:
        assert {e.target for e in topology.edges_from(member, "connects-to")} == {"etcd"}
    # The routers know which member leads; clients never address a member directly.
    services = {s.name: (s.targets, s.port, s.purpose) for s in topology.services}
    assert services["postgres"] == (("haproxy-0", "haproxy-1"), 5432, "read-write")
    assert services["postgres-replicas"] == (("haproxy-0", "haproxy-1"), 5433, "read-only")
    assert services["pgbouncer"] == (("pgbouncer-0", "pgbouncer-1"), 6432, "pooler")
    assert services["etcd"] == (("etcd-0", "etcd-1", "etcd-2"), 2379, "dcs")


def test_launch_keeps_one_postgres_without_patroni() -> None:
    topology = build_topology(spec_of("launch"))
    postgres = {n.name: n.image for n in topology.tier("postgres")}
    assert postgres == {"postgres-0": spec_of("launch").postgres.image}
    assert not topology.group("etcd") and not topology.group("haproxy")
    assert topology.service("postgres").targets == ("postgres-0",)


def test_cluster_layout_only_appends_when_masters_grow() -> None:
    three = roles(build_topology(spec_of("scale", **SCALE_ON_DOCKER)))
    four = roles(
        build_topology(spec_of("scale", **SCALE_ON_DOCKER, **{"sikka:redis": {"masters": 4}}))
    )
    data = {k: v for k, v in three.items() if k.startswith("redis-") and k[-1].isdigit()}
    assert data == {
        "redis-0": ("cluster-master", None),
        "redis-1": ("cluster-replica", "redis-0"),
        "redis-2": ("cluster-master", None),
        "redis-3": ("cluster-replica", "redis-2"),
        "redis-4": ("cluster-master", None),
        "redis-5": ("cluster-replica", "redis-4"),
    }
    # No existing node changes role: the new shard is appended.
    assert {k: four[k] for k in data} == data
    assert four["redis-6"] == ("cluster-master", None)
    assert four["redis-7"] == ("cluster-replica", "redis-6")


def test_citus_on_kubernetes_names_the_operator_services() -> None:
    topology = build_topology(spec_of("scale"))
    assert {s.name: s.purpose for s in topology.services if s.tier == "postgres"} == {
        "postgres": "read-write",
        "postgres-reads": "read-only",
    }
    groups = sorted({n.group for n in topology.tier("postgres")})
    assert groups == ["postgres-coord", *(f"postgres-shard{i}" for i in range(4))]


def test_hosts_are_made_in_one_place_per_platform() -> None:
    docker = spec_of("growth")
    k8s = spec_of("growth", **{"sikka:platform": "kubernetes"})
    assert node_host(docker, "redis-sentinel", 1) == "redis-sentinel-1"
    assert node_host(k8s, "redis-sentinel", 1) == (
        "redis-sentinel-1.redis-sentinel-headless.sikka-growth.svc.cluster.local"
    )
    assert service_host(k8s, "postgres") == "postgres.sikka-growth.svc.cluster.local"
    gateway = build_topology(k8s).node("gateway-0")
    sentinels = gateway.env["REDIS_SENTINELS"].split(",")
    assert sentinels[1] == f"{node_host(k8s, 'redis-sentinel', 1)}:26379"


def test_two_stacks_of_one_phase_share_nothing_by_default() -> None:
    one, two = spec_of("growth"), spec_of("growth-eu", phase="growth")
    first, second = build_topology(one), build_topology(two)
    assert one.namespace == "sikka-growth" and two.namespace == "sikka-growth-eu"
    assert one.docker_network != two.docker_network
    assert one.docker_subnet != two.docker_subnet
    assert not one.docker_subnet.overlaps(two.docker_subnet)
    containers = {container_name(first, n) for n in first.nodes}
    assert containers.isdisjoint(container_name(second, n) for n in second.nodes)
    volumes = {volume_name(first, v) for n in first.nodes for v in n.volumes}
    assert volumes.isdisjoint(volume_name(second, v) for n in second.nodes for v in n.volumes)


def test_subnet_is_a_typed_network() -> None:
    spec = spec_of("launch", **{"sikka:docker": {"subnet": "10.99.0.0/24"}})
    assert spec.docker_subnet.prefixlen == 24
    for bad in ("banana", "10.0.0.0/33", "10.0.0.1/24"):
        with pytest.raises(ConfigError, match=r"sikka:docker\.subnet: must be a network such as"):
            spec_of("launch", **{"sikka:docker": {"subnet": bad}})


@pytest.mark.parametrize("stack", ["launch", "growth"])
def test_data_nodes_start_one_after_another(stack: str) -> None:
    topology = build_topology(spec_of(stack))
    for node in topology.nodes:
        after = start_after(topology, node)
        assert node.name not in after
        if node.stateful and node.ordinal and node.role != "dcs":
            assert f"{node.group}-{node.ordinal - 1}" in after
    if stack == "growth":
        etcd = ("etcd-0", "etcd-1", "etcd-2")
        # An etcd member is healthy only once a majority runs: the members start together.
        for member in etcd:
            assert start_after(topology, topology.node(member)) == ()
        assert start_after(topology, topology.node("postgres-0")) == etcd
        assert start_after(topology, topology.node("postgres-1")) == (*etcd, "postgres-0")
        assert start_after(topology, topology.node("postgres-2")) == (
            *etcd,
            "postgres-0",
            "postgres-1",
        )
        members = ("postgres-0", "postgres-1", "postgres-2")
        assert start_after(topology, topology.node("haproxy-0")) == members
        for pooler in ("pgbouncer-0", "pgbouncer-1"):
            assert start_after(topology, topology.node(pooler)) == ("haproxy-0", "haproxy-1")


@pytest.mark.parametrize(
    ("stack", "overrides"),
    [
        ("launch", {}),
        ("growth", {}),
        ("scale", {}),
        ("scale", SCALE_ON_DOCKER),
        ("growth", {"sikka:platform": "kubernetes"}),
    ],
)
def test_gateways_hold_no_database_secret_or_edge(stack: str, overrides: dict[str, Any]) -> None:
    """Gateways never use the database: the Redis password and the token key are their only secrets, no
    variable names the database, and no edge leads them to a Postgres node or service."""
    topology = build_topology(spec_of(stack, **overrides))
    postgres = {n.name for n in topology.tier("postgres")}
    postgres |= {s.name for s in topology.services if s.tier == "postgres"}
    gateways = topology.tier("gateway")
    assert gateways
    for gateway in gateways:
        assert dict(gateway.secret_env) == {
            "REDIS_PASSWORD": "redis-password",
            "GATEWAY_JWT_SECRET": "gateway-jwt-secret",
        }
        assert not [k for k in gateway.env if k.startswith(("DATABASE", "PG", "POSTGRES"))]
        assert not [e for e in topology.edges_from(gateway.name) if e.target in postgres]


@pytest.mark.parametrize("stack", ["launch", "growth"])
def test_postgres_secrets_go_to_postgres_and_pgbouncer_only(stack: str) -> None:
    """Each secret reaches only the nodes that use it."""
    topology = build_topology(spec_of(stack))
    holders: dict[str, set[str]] = {}
    for node in topology.nodes:
        for secret in node.secret_env.values():
            holders.setdefault(secret, set()).add(node.name)
    if stack == "growth":
        # Every Patroni member may lead: each holds what the leader needs.
        members = {"postgres-0", "postgres-1", "postgres-2"}
        poolers = {"pgbouncer-0", "pgbouncer-1"}
        assert holders["postgres-superuser-password"] == members
        assert holders["replication-password"] == members
        assert holders["postgres-rewind-password"] == members
        assert holders["patroni-api-password"] == members
        # The application role's and the monitoring role's passwords as their SCRAM
        # verifiers, which the members set and the poolers check logins against; no node of
        # the database tier holds a plaintext database password.
        assert holders["postgres-password-scram"] == members | poolers
        assert holders["pgbouncer-admin-password-scram"] == poolers
        assert holders["monitoring-password-scram"] == members | poolers
        assert "postgres-password" not in holders
        assert "pgbouncer-admin-password" not in holders
        # The PostgreSQL and PgBouncer exporters log in with the monitoring password itself.
        exporters = {f"postgres-exporter-{i}" for i in range(3)} | {
            "pgbouncer-exporter-0",
            "pgbouncer-exporter-1",
        }
        assert holders["monitoring-password"] == exporters
        # Routers and the DCS hold no secret at all.
        for node in topology.group("haproxy") + topology.group("etcd"):
            assert not node.secret_env, node.name
    else:
        assert holders["postgres-superuser-password"] == {"postgres-0"}
        assert holders["postgres-password-scram"] == {"postgres-0"}
        for secret in (
            "postgres-password",
            "pgbouncer-admin-password",
            "pgbouncer-admin-password-scram",
            "replication-password",
            "postgres-rewind-password",
            "patroni-api-password",
        ):
            assert secret not in holders


def test_cluster_init_starts_after_every_data_node() -> None:
    topology = build_topology(spec_of("scale", **SCALE_ON_DOCKER))
    init = topology.node("redis-cluster-init")
    assert start_after(topology, init) == tuple(f"redis-{i}" for i in range(6))
