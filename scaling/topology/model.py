"""The Topology's vocabulary: nodes, the services that front them, and the edges between them.

Platform-neutral data. A node is one server process of the phase (one container on Docker,
one pod on Kubernetes, one process in the local runner); a service is a stable name clients
use (a network alias on Docker, a Service on Kubernetes); an edge says who replicates from,
monitors, proxies to or connects to whom. Secrets are referenced by name, never carried.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from scaling.model import PhaseSpec

Tier = Literal["postgres", "redis", "gateway", "nginx", "monitoring"]
TIERS: tuple[Tier, ...] = ("postgres", "redis", "gateway", "nginx", "monitoring")

Role = Literal[
    "primary",  # Postgres read-write (or the Citus coordinator's primary)
    "replica",  # Postgres streaming replica / Redis replica (replica_of says of whom)
    "pooler",  # PgBouncer
    "coordinator",  # Citus coordinator instance (StackGres, Kubernetes)
    "shard",  # Citus worker instance (StackGres, Kubernetes)
    "standalone",  # Redis without replication
    "master",  # Redis master under Sentinel
    "sentinel",
    "cluster-master",
    "cluster-replica",
    "cluster-init",  # one-shot: forms the cluster, joins new nodes, rebalances
    "gateway",
    "proxy",  # Nginx
    "dcs",  # etcd: Patroni's leader lock
    "router",  # HAProxy: sends clients to the Patroni leader or to healthy replicas
    "prometheus",  # the phase's Prometheus (scaling/topology/monitoring.py)
    "exporter",  # reads a server's figures and serves them to Prometheus
    "promoter",  # one-shot: a transition's cut-over (scaling.promotion, render/cutover.py)
]

# "scrapes": an exporter reads the node's figures (Prometheus scrapes the exporter).
# "waits-for": the node starts only once the target (a one-shot) has run to success.
EdgeKind = Literal[
    "replicates-from", "monitors", "pools", "proxies-to", "connects-to", "scrapes", "waits-for"
]


@dataclass(frozen=True)
class ConfigFile:
    """A rendered file mounted read-only into the node."""

    path: str
    content: str
    # The name `sikka-scaling render` writes it under (several nodes may share one).
    render_name: str


@dataclass(frozen=True)
class HealthCheck:
    """A shell command that exits 0 when the node serves (Docker HEALTHCHECK, exec probe)."""

    command: str | None
    interval_seconds: int = 10
    timeout_seconds: int = 5
    retries: int = 6
    start_period_seconds: int = 20
    # False: run the command's words directly, without a shell (an image without one, such
    # as etcd's distroless image); the command then uses no shell syntax.
    shell: bool = True


@dataclass(frozen=True)
class Stop:
    """How a node is stopped without losing what it holds: the signal its server treats as a
    graceful shutdown, and how long it may take before it is killed."""

    signal: str = "SIGTERM"
    grace_seconds: int = 10


@dataclass(frozen=True)
class Volume:
    """Persistent data: ``name`` is logical ("postgres-0-data"); runtimes prefix it with
    the stack (Docker volume name) or map it to a claim template (Kubernetes)."""

    name: str
    path: str
    size_gb: int


@dataclass(frozen=True)
class Node:
    name: str  # its host name on the private network, and the base of its physical name
    tier: Tier
    role: Role
    group: str  # nodes of one group are one StatefulSet/Deployment on Kubernetes
    ordinal: int
    image: str
    ports: Mapping[str, int]
    replica_of: str | None = None
    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    user: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    # Environment variable → secret name (keys of scaling.render.env.SECRET_VARIABLES).
    secret_env: Mapping[str, str] = field(default_factory=dict)
    files: tuple[ConfigFile, ...] = ()
    volumes: tuple[Volume, ...] = ()
    tmpfs: tuple[str, ...] = ()  # writable scratch paths (in memory)
    health: HealthCheck = HealthCheck(None)
    stop: Stop = Stop()
    memory_mb: int | None = None
    # Host port → node port (Docker publishes these; elsewhere a Service fronts the node).
    published: Mapping[int, int] = field(default_factory=dict)
    one_shot: bool = False
    # Open files (RLIMIT_NOFILE) its settings need (scaling/render/limits.py); None: the
    # platform's default serves.
    open_files: int | None = None
    # Networks the node joins besides the phase's own, without aliases (a transition's:
    # scaling.promotion); a name, or a token the Pulumi layer fills from the source stack.
    extra_networks: tuple[str, ...] = ()

    @property
    def stateful(self) -> bool:
        return bool(self.volumes)


@dataclass(frozen=True)
class Service:
    """A stable client-facing name: one or several nodes behind it on one port."""

    name: str
    tier: Tier
    port: int
    targets: tuple[str, ...]  # node names; empty when the operator (StackGres) picks them
    purpose: Literal["read-write", "read-only", "pooler", "redis", "gateway", "http", "dcs"]


@dataclass(frozen=True)
class Edge:
    source: str
    target: str  # a node or a service name
    kind: EdgeKind


@dataclass(frozen=True)
class Scaling:
    """Replica bounds of a group (an autoscaler moves between them on Kubernetes)."""

    group: str
    min_replicas: int
    max_replicas: int


Named = TypeVar("Named", Node, Service, Scaling)


def _name_of(item: Node | Service | Scaling) -> str:
    return item.group if isinstance(item, Scaling) else item.name


@dataclass(frozen=True)
class Topology:
    spec: PhaseSpec
    nodes: tuple[Node, ...]
    services: tuple[Service, ...]
    edges: tuple[Edge, ...]
    scaling: tuple[Scaling, ...]

    def _named(self, items: tuple[Named, ...], name: str, what: str) -> Named:
        for item in items:
            if _name_of(item) == name:
                return item
        raise KeyError(f"no {what} {name!r} in the {self.spec.phase.value} topology")

    def node(self, name: str) -> Node:
        return self._named(self.nodes, name, "node")

    def service(self, name: str) -> Service:
        return self._named(self.services, name, "service")

    def bounds(self, group: str) -> Scaling:
        return self._named(self.scaling, group, "scaling bounds for")

    def has_node(self, name: str) -> bool:
        return any(n.name == name for n in self.nodes)

    def has_service(self, name: str) -> bool:
        return any(s.name == name for s in self.services)

    def tier(self, tier: Tier) -> list[Node]:
        return [n for n in self.nodes if n.tier == tier]

    def group(self, group: str) -> list[Node]:
        return [n for n in self.nodes if n.group == group]

    def with_role(self, *roles: Role) -> list[Node]:
        return [n for n in self.nodes if n.role in roles]

    def edges_from(self, source: str, kind: EdgeKind | None = None) -> list[Edge]:
        return [e for e in self.edges if e.source == source and kind in (None, e.kind)]

    def aliases(self, node: str) -> tuple[str, ...]:
        """The service names a node answers to besides its own."""
        return tuple(s.name for s in self.services if node in s.targets and s.name != node)
