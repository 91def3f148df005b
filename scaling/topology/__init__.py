"""The phase's one platform-neutral Topology, built once from the PhaseSpec by pure code.

``build_topology(spec)`` returns every node of the phase (name, tier, role, what it
replicates from, ports, rendered files, environment, secret references, volumes, health
check, stop policy, memory), the services clients use, the edges between them and the
scaling bounds of each group. Docker containers, docker-compose, the Kubernetes objects,
the local runner and the stack's exports are views of it: none of them names a node, a
host or a role on its own.
"""

from __future__ import annotations

from dataclasses import replace

from scaling.model import PhaseSpec
from scaling.render.limits import open_files

from .edge import gateway_nodes, nginx_nodes
from .model import (
    TIERS,
    ConfigFile,
    Edge,
    HealthCheck,
    Node,
    Role,
    Scaling,
    Service,
    Stop,
    Tier,
    Topology,
    Volume,
)
from .monitoring import monitoring_tier
from .postgres import postgres_tier
from .redis import redis_tier


def _with_open_files(spec: PhaseSpec, node: Node) -> Node:
    need = open_files(spec, node.tier, node.role)
    return replace(node, open_files=need.files) if need else node


def build_topology(spec: PhaseSpec) -> Topology:
    pg_nodes, pg_services, pg_edges = postgres_tier(spec)
    redis_nodes, redis_services, redis_edges = redis_tier(spec)
    gateways, gw_services, gw_edges, gw_scaling = gateway_nodes(spec)
    proxies, nginx_services, nginx_edges, nginx_scaling = nginx_nodes(spec, gateways)
    served = (*pg_nodes, *redis_nodes, *gateways, *proxies)
    monitors, monitor_edges = monitoring_tier(spec, served)
    nodes = tuple(_with_open_files(spec, n) for n in (*served, *monitors))
    names = [n.name for n in nodes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:  # a programming error, caught before anything is registered
        raise ValueError(f"duplicate node names in the topology: {duplicates}")
    return Topology(
        spec=spec,
        nodes=nodes,
        services=(*pg_services, *redis_services, *gw_services, *nginx_services),
        edges=(*pg_edges, *redis_edges, *gw_edges, *nginx_edges, *monitor_edges),
        scaling=(gw_scaling, nginx_scaling),
    )


__all__ = [
    "TIERS",
    "ConfigFile",
    "Edge",
    "HealthCheck",
    "Node",
    "Role",
    "Scaling",
    "Service",
    "Stop",
    "Tier",
    "Topology",
    "Volume",
    "build_topology",
]
