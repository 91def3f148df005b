"""The topology the local runner realises: a view of the phase's Topology, never a second one.

One process per node, as one container per node: the local runner realises the container
(Docker) topology of the spec, whatever platform the stack targets. The only thing it cannot
run here, Citus (StackGres on Kubernetes), is substituted in the spec before the topology is
built: the phase then runs as its primary + read replicas behind PgBouncer. Every name, role
and replication link still comes from ``build_topology``; this module only looks them up.
"""

from __future__ import annotations

from scaling.model import PhaseSpec, PlatformKind
from scaling.topology import Node, Role, Tier, Topology, build_topology

# Redis data nodes (every Redis node that holds keys), as opposed to Sentinels and the
# one-shot cluster initialisation.
REDIS_DATA_ROLES: tuple[Role, ...] = (
    "standalone",
    "master",
    "replica",
    "cluster-master",
    "cluster-replica",
)


def local_spec(spec: PhaseSpec) -> PhaseSpec:
    """The spec whose container topology runs locally (Citus → primary + read replicas)."""
    update: dict[str, object] = {"platform": PlatformKind.DOCKER}
    if spec.postgres.mode == "citus":
        update["postgres"] = spec.postgres.model_copy(update={"mode": "replicated"})
    return spec.model_copy(update=update)


def local_topology(spec: PhaseSpec) -> Topology:
    return build_topology(local_spec(spec))


def nodes(topology: Topology, tier: Tier, *roles: Role) -> list[Node]:
    """The tier's nodes with one of ``roles`` (every role when none is given), in order."""
    return [n for n in topology.tier(tier) if not roles or n.role in roles]


def replicas_of(topology: Topology, source: str) -> list[Node]:
    """The nodes that replicate ``source`` (its replica_of)."""
    return [n for n in topology.nodes if n.replica_of == source]


def monitored(topology: Topology, sentinel: Node) -> str:
    """The node a Sentinel monitors (its "monitors" edge)."""
    edges = topology.edges_from(sentinel.name, "monitors")
    if not edges:
        raise KeyError(f"{sentinel.name} monitors nothing in the topology")
    return edges[0].target
