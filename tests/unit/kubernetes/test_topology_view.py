"""The Kubernetes objects are a view of the Topology: every host a client is given is one
the objects define, every topology Service exists, sizes and counts are the topology's."""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import urlsplit

import pytest
from k8s_support import SPECS, find, of_kind

from scaling.kubernetes import Manifest, build_manifests, defined_hosts, topology_manifests
from scaling.kubernetes.postgres import operator_services
from scaling.model import PhaseSpec
from scaling.topology import Service, Topology, build_topology
from scaling.topology.network import pod_fqdn, service_fqdn
from scaling.topology.postgres import CITUS_READS, COORDINATOR_GROUP, GROUP, READ_WRITE, REPLICAS

# Gateway variables naming hosts, and how to read the hosts out of each.
HOST_VARIABLES = ("REDIS_SENTINELS", "REDIS_CLUSTER_NODES", "REDIS_URL")


def _hosts_of(variable: str, value: str) -> set[str]:
    if variable == "REDIS_URL":
        return {urlsplit(value).hostname or ""}
    return {item.rsplit(":", 1)[0] for item in value.split(",")}


def gateway_hosts(topology: Topology) -> set[str]:
    hosts: set[str] = set()
    for node in topology.group("gateway"):
        for variable in HOST_VARIABLES:
            if variable in node.env:
                hosts |= _hosts_of(variable, node.env[variable])
    return hosts


def upstream_hosts(topology: Topology) -> set[str]:
    hosts: set[str] = set()
    for node in topology.group("nginx"):
        for file in node.files:
            for block in re.findall(r"upstream\s+\S+\s*\{(.*?)\}", file.content, re.DOTALL):
                hosts |= set(re.findall(r"^\s*server\s+([^\s:;]+)", block, re.MULTILINE))
    return hosts


@pytest.mark.parametrize("phase", sorted(SPECS))
def test_every_host_a_gateway_is_given_is_defined(phase: str) -> None:
    spec = SPECS[phase]()
    topology = build_topology(spec)
    hosts = gateway_hosts(topology)
    # Gateways are given Redis only (they never use the database).
    assert not any(k.startswith("DATABASE") for n in topology.group("gateway") for k in n.env)
    assert hosts
    assert hosts <= defined_hosts(build_manifests(spec)), hosts - defined_hosts(
        build_manifests(spec)
    )


@pytest.mark.parametrize("phase", sorted(SPECS))
def test_every_nginx_upstream_is_defined(phase: str) -> None:
    spec = SPECS[phase]()
    topology = build_topology(spec)
    hosts = upstream_hosts(topology)
    assert hosts == {service_fqdn("gateway-headless", spec.namespace)}
    assert hosts <= defined_hosts(build_manifests(spec))


def _created_services(manifests: list[Manifest]) -> set[str]:
    names = {m.name for m in of_kind(manifests, "Service")}
    for m in manifests:
        names |= set(operator_services(m.kind, m.name))
    return names


@pytest.mark.parametrize("phase", sorted(SPECS))
def test_every_topology_service_exists(phase: str) -> None:
    spec = SPECS[phase]()
    wanted = {s.name for s in build_topology(spec).services}
    assert wanted - _created_services(build_manifests(spec)) == set()


def test_a_service_nothing_creates_is_refused() -> None:
    topology = build_topology(SPECS["scale"]())
    # The drift this guards against: an SGShardedCluster has no "-replicas" Service.
    stray = Service(REPLICAS, "postgres", 5432, (), "read-only")
    broken = dataclasses.replace(topology, services=(*topology.services, stray))
    with pytest.raises(ValueError, match="postgres-replicas"):
        topology_manifests(broken)


def test_the_operator_services_carry_the_topology_names() -> None:
    assert operator_services("SGCluster", READ_WRITE) == [READ_WRITE, REPLICAS]
    assert operator_services("SGShardedCluster", READ_WRITE) == [READ_WRITE, CITUS_READS]
    assert operator_services("Deployment", "gateway") == []


def test_defined_hosts_lists_services_pods_and_operator_services() -> None:
    spec = SPECS["growth"]()
    hosts = defined_hosts(build_manifests(spec))
    ns = spec.namespace
    assert service_fqdn("gateway", ns) in hosts
    assert service_fqdn("postgres", ns) in hosts
    assert service_fqdn("postgres-replicas", ns) in hosts
    assert pod_fqdn("redis-2", "redis-headless", ns) in hosts
    assert pod_fqdn("redis-3", "redis-headless", ns) not in hosts
    assert pod_fqdn("redis-sentinel-0", "redis-sentinel-headless", ns) in hosts
    # Deployment pods have no stable name.
    assert not {h for h in hosts if h.startswith("gateway-0.")}


def test_pods_without_their_headless_service_define_no_names() -> None:
    manifests = build_manifests(SPECS["growth"]())
    without = [m for m in manifests if not (m.kind == "Service" and m.name == "redis-headless")]
    hosts = defined_hosts(without)
    assert not {h for h in hosts if ".redis-headless." in h}


def _instances(spec: PhaseSpec) -> dict[str, int]:
    topology = build_topology(spec)
    groups = {n.group for n in topology.tier("postgres")}
    return {g: len(topology.group(g)) for g in groups}


@pytest.mark.parametrize("phase", ["growth", "launch"])
def test_sgcluster_instances_and_volume_are_the_topology_group(phase: str) -> None:
    spec = SPECS[phase]()
    nodes = build_topology(spec).group(GROUP)
    cluster = find(build_manifests(spec), "SGCluster", READ_WRITE).body["spec"]
    assert cluster["instances"] == len(nodes) == 1 + spec.postgres.read_replicas
    size = nodes[0].volumes[0].size_gb
    assert cluster["pods"]["persistentVolume"]["size"] == f"{size}Gi"


def test_sharded_cluster_is_the_coordinator_and_shard_groups() -> None:
    spec = SPECS["scale"]()
    topology = build_topology(spec)
    body = find(build_manifests(spec), "SGShardedCluster", READ_WRITE).body["spec"]
    coordinator = topology.group(COORDINATOR_GROUP)
    shards = {n.group for n in topology.with_role("shard")}
    assert body["coordinator"]["instances"] == len(coordinator)
    assert body["shards"]["clusters"] == len(shards)
    assert body["shards"]["instancesPerCluster"] == len(topology.group(sorted(shards)[0]))
    coord_size = coordinator[0].volumes[0].size_gb
    assert body["coordinator"]["pods"]["persistentVolume"]["size"] == f"{coord_size}Gi"


def test_a_group_whose_nodes_differ_has_no_pod_template() -> None:
    topology = build_topology(SPECS["growth"]())
    odd = dataclasses.replace(topology.node("redis-1"), image="valkey/valkey:0.0")
    nodes = tuple(odd if n.name == odd.name else n for n in topology.nodes)
    with pytest.raises(ValueError, match="redis-1 differs from redis-0 in its image"):
        topology_manifests(dataclasses.replace(topology, nodes=nodes))


def test_objects_holding_data_are_marked(manifests: list[Manifest], spec: PhaseSpec) -> None:
    holding = {m.key for m in manifests if m.holds_data}
    cluster_kind = "SGShardedCluster" if spec.postgres.mode == "citus" else "SGCluster"
    assert holding == {
        f"Namespace/-/{spec.namespace}",
        f"{cluster_kind}/{spec.namespace}/postgres",
        f"StatefulSet/{spec.namespace}/redis",
    }
    for m in of_kind(manifests, "StatefulSet"):
        assert m.holds_data == ("volumeClaimTemplates" in m.body["spec"])


def test_the_namespace_derives_from_the_stack_unless_set() -> None:
    assert SPECS["scale"]().namespace == "sikka-scale"  # set in Pulumi.scale.yaml
    growth = build_manifests(SPECS["growth"]())
    assert growth[0].name == "sikka-growth"
    assert {m.namespace for m in growth[1:]} == {"sikka-growth"}
