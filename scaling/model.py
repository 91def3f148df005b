"""The typed phase model: one pydantic model per tier, composed into a PhaseSpec.

Stack files spell keys in camelCase (Pulumi's convention); Python code uses snake_case.
Cross-field rules live in :mod:`scaling.rules` so that every problem is reported at once.
"""

from __future__ import annotations

import hashlib
import math
import re
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel


class Phase(StrEnum):
    LAUNCH = "launch"
    GROWTH = "growth"
    SCALE = "scale"

    @property
    def next(self) -> Phase | None:
        order = list(Phase)
        index = order.index(self)
        return order[index + 1] if index + 1 < len(order) else None


class PlatformKind(StrEnum):
    DOCKER = "docker"
    KUBERNETES = "kubernetes"


Count = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]
Percent = Annotated[int, Field(ge=1, le=100)]

# Upper bounds come from what exists, so that an extra zero (or 10**30) is refused here
# instead of being wrapped by Redis or refused by PostgreSQL at start:
# - memory: 4 TiB, more than any one database container is given;
MAX_MEMORY_MB = 4 * 1024 * 1024
# - disk: 64 TiB, the largest single block volume (AWS io2 Block Express, GCP Persistent Disk);
MAX_STORAGE_GB = 64 * 1024
# - descriptors: Linux's default fs.nr_open; no process holds more sockets than this;
MAX_DESCRIPTORS = 1_048_576
# - replicas of one primary or master: 15 (a phase uses 2; more belongs in cascading
#   replication or in shards);
MAX_REPLICAS = 15
# - Citus tracks at most 2048 worker nodes (citus.max_worker_nodes_tracked);
MAX_SHARDS = 2048
# - Redis Cluster is designed for up to 1000 nodes;
MAX_CLUSTER_NODES = 1000
# - pods of one Deployment: far beyond what a phase autoscales to, well within a cluster.
MAX_PODS = 1000
MemoryMb = Annotated[int, Field(ge=1, le=MAX_MEMORY_MB)]
StorageGb = Annotated[int, Field(ge=1, le=MAX_STORAGE_GB)]
Descriptors = Annotated[int, Field(ge=1, le=MAX_DESCRIPTORS)]
Replicas = Annotated[int, Field(ge=0, le=MAX_REPLICAS)]
Pods = Annotated[int, Field(ge=1, le=MAX_PODS)]
Port = Annotated[int, Field(ge=1, le=65535)]
# A planned number of users or trips: a hundred million is past any city's riders.
Planned = Annotated[int, Field(ge=1, le=100_000_000)]

# Image references by the OCI distribution grammar (distribution/reference, regexp.go):
# [domain[:port]/]path-component[/path-component...][:tag][@algorithm:hex].
_ALNUM = r"[a-z0-9]+"
_PATH_COMPONENT = rf"{_ALNUM}(?:(?:[._]|__|-+){_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
IMAGE_REFERENCE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?",
    re.ASCII,
)
_DIGEST_HEX = {"sha256": 64, "sha512": 128}


def _pinned(image: str) -> str:
    """An OCI image reference with a tag or digest, and not the moving "latest" tag: a phase
    is reproducible only if `pulumi up` pulls the same bits twice."""
    match = IMAGE_REFERENCE.fullmatch(image) if len(image) <= 512 else None
    if match is None:
        raise ValueError(
            "must be an image reference such as 'nginx:1.29.3' or "
            "'ghcr.io/owner/name:1.0@sha256:<64 hex digits>'"
        )
    if len(match["name"]) > 255:
        raise ValueError("the image name is longer than 255 characters")
    if match["tag"] is None and match["digest"] is None:
        raise ValueError("must be a pinned image reference such as 'nginx:1.27.3'")
    if match["tag"] == "latest":
        raise ValueError("must not use the moving 'latest' tag")
    if match["digest"]:
        algorithm, _, hex_digits = match["digest"].partition(":")
        expected = _DIGEST_HEX.get(algorithm)
        if expected is not None and len(hex_digits) != expected:
            raise ValueError(f"a {algorithm} digest has {expected} hex digits")
    return image


Image = Annotated[
    str,
    AfterValidator(_pinned),
    Field(description="an image reference pinned by tag or digest (not `latest`)"),
]

# Roles and databases that PostgreSQL, PgBouncer, StackGres or this project already use or
# reserve: the application's own must be none of them.
RESERVED_ROLES = frozenset(
    {
        "postgres",  # the superuser (Docker image, StackGres)
        "replicator",  # streaming replication (scaling.render.postgres, StackGres)
        "authenticator",  # StackGres' Patroni and PgBouncer auth_user
        "rewinder",  # Patroni's pg_rewind role (REWIND_USER)
        "pgbouncer",
        "pgbouncer_admin",  # PgBouncer's console (ours and StackGres's)
        "pgbouncer_stats",  # StackGres's PgBouncer stats user
        "public",  # PostgreSQL's pseudo-role for everyone
        "none",
        "current_user",
        "current_role",
        "session_user",
        "all",  # pg_hba.conf keywords
        "sameuser",
        "samerole",
        "samegroup",
        "replication",
    }
)
RESERVED_DATABASES = frozenset(
    {
        "postgres",
        "template0",
        "template1",
        "pgbouncer",  # PgBouncer's admin console
        "all",  # pg_hba.conf keywords
        "sameuser",
        "samerole",
        "samegroup",
        "replication",
    }
)


def _sql_name(kind: str, reserved: frozenset[str], length: int, examples: str) -> AfterValidator:
    def check(name: str) -> str:
        if not re.fullmatch(rf"[a-z_][a-z0-9_]{{0,{length - 1}}}", name):
            raise ValueError(
                f"must be a {kind} name of lowercase letters, digits and '_', not starting "
                f"with a digit, at most {length} characters"
            )
        if name in reserved or name.startswith("pg_"):
            raise ValueError(
                f"is a {kind} name PostgreSQL, PgBouncer or StackGres already uses or "
                f"reserves ({examples}, ...); choose another"
            )
        return name

    return AfterValidator(check)


# 60, not 63: PgBouncer's read-only pool is named "<database>_ro" and must fit PostgreSQL's
# 63-byte names too.
DatabaseName = Annotated[
    str,
    _sql_name("database", RESERVED_DATABASES, 60, "postgres, template0, template1, pg_*"),
    Field(description="`[a-z_][a-z0-9_]*`, at most 60 characters, not a reserved name"),
]
RoleName = Annotated[
    str,
    _sql_name("role", RESERVED_ROLES, 63, "postgres, replicator, pgbouncer_admin, pg_*"),
    Field(description="`[a-z_][a-z0-9_]*`, at most 63 characters, not a reserved name"),
]

TableName = Annotated[
    str,
    Field(
        pattern=r"^([a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,62}$",
        description="`table` or `schema.table`, lowercase (`[a-z_][a-z0-9_]*`)",
    ),
]
ColumnName = Annotated[
    str,
    Field(
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="a column name, lowercase (`[a-z_][a-z0-9_]*`)",
    ),
]


def _network(value: object) -> object:
    if isinstance(value, str):
        try:
            return ip_network(value, strict=True)
        except ValueError as error:
            raise ValueError(f"must be a network such as '10.213.7.0/24': {error}") from None
    return value


# An IPv4 or IPv6 network in CIDR notation, host bits zero ("10.0.0.0/24").
Network = Annotated[
    IPv4Network | IPv6Network,
    BeforeValidator(_network),
    Field(description="an IPv4 or IPv6 network, host bits zero"),
]


class Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        strict=True,
    )


class Span(Section):
    """A planned range such as 1,000-2,000 users; ``max`` None means open-ended (10k+)."""

    min: Planned
    max: Planned | None = None


class Capacity(Section):
    concurrent_users: Span
    trips: Span


# PostgreSQL roles besides the application's (``postgres.user``): the superuser (the official
# image's and StackGres's), the streaming-replication role, and PgBouncer's console user
# (StackGres's name for it too). The application role may be none of them.
SUPERUSER = "postgres"
REPLICATION_USER = "replicator"
POOLER_ADMIN_USER = "pgbouncer_admin"
# Patroni's pg_rewind role (scaling.render.postgres_start.rewind_role_sql).
REWIND_USER = "rewinder"
# The exporters' login: pg_monitor on PostgreSQL, a stats_users entry on PgBouncer.
MONITORING_USER = "sikka_monitor"


class PostgresSpec(Section):
    mode: Literal["single", "replicated", "citus"]
    image: Image
    max_connections: Annotated[int, Field(ge=10, le=10_000)]
    superuser_reserved_connections: Annotated[int, Field(ge=1, le=20)] = 3
    read_replicas: Replicas
    memory_mb: Annotated[int, Field(ge=256, le=MAX_MEMORY_MB)]
    storage_gb: StorageGb
    database: DatabaseName = "sikka"
    user: RoleName = "sikka"
    # Citus (scale): a coordinator group and N worker shard groups, each with replicas.
    shards: Annotated[int, Field(ge=1, le=MAX_SHARDS)] = 4
    coordinator_instances: Annotated[int, Field(ge=1, le=1 + MAX_REPLICAS)] = 2
    instances_per_shard: Annotated[int, Field(ge=1, le=1 + MAX_REPLICAS)] = 2
    # High availability (Patroni: scaling.render.patroni; StackGres is Patroni on Kubernetes).
    # "on": a commit is acknowledged once the synchronous standby has it, and only that
    # standby may be promoted, so no acknowledged write is lost on failover (Patroni falls
    # back to asynchronous while no standby is healthy); "strict" blocks writes instead;
    # "off": asynchronous, a replica lagging more than maximumLagOnFailoverMb is never promoted.
    synchronous_mode: Literal["off", "on", "strict"] = "off"
    maximum_lag_on_failover_mb: Annotated[int, Field(ge=0, le=MAX_STORAGE_GB * 1024)] = 1
    # How long the leader's lock outlives a leader that stopped renewing it: the time before a
    # failover starts. 20 s is Patroni's floor (it silently raises anything lower).
    leader_ttl_seconds: Annotated[int, Field(ge=20, le=3600)] = 20
    # Docker: the phase's PostgreSQL image with Patroni installed, built from this folder of the
    # project (FROM postgres.image) and tagged patroniImage; null pulls patroniImage instead.
    patroni_image: Image = "ghcr.io/sikka-scaling/postgres-patroni:0.1.0"
    patroni_build_context: (
        Annotated[str, Field(pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_./-]*$", max_length=255)] | None
    ) = "images/postgres-patroni"
    # Patroni's DCS on Docker and locally: an etcd cluster of this many members (odd, so that
    # a majority exists; 3 survive the loss of one).
    etcd_members: Literal[1, 3, 5, 7] = 3
    etcd_image: Image = "quay.io/coreos/etcd:v3.5.21"
    # Citus (scale): how the tables a transition moves into the coordinator are spread at its
    # cut-over (scaling.render.logical_transition): table ("orders" or "app.orders") → its
    # distribution column (create_distributed_table_concurrently), and tables copied whole
    # to every node (create_reference_table). A table named in neither stays a local table on
    # the coordinator.
    distribution_columns: dict[TableName, ColumnName] = Field(
        default_factory=dict,
        description=(
            "Citus only: table (`orders`, `app.orders`) → its distribution column, part of "
            "its primary key and unique keys; lowercase names"
        ),
    )
    reference_tables: Annotated[
        tuple[TableName, ...],
        BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v),
    ] = Field(
        default=(),
        description="Citus only: tables (`cities`, `app.cities`) copied whole to every node",
    )

    def __hash__(self) -> int:
        # Frozen sections hash by value; distributionColumns is a mapping (the stack file's
        # shape), hashed as its sorted items so the phase stays hashable.
        return hash(
            tuple(
                tuple(sorted(value.items())) if isinstance(value, dict) else value
                for value in self.__dict__.values()
            )
        )

    @property
    def version(self) -> str | None:
        """The Postgres version the image tag names ("17.6-bookworm" → "17.6"), if any."""
        last = self.image.rsplit("/", 1)[-1]
        tag = last.rsplit(":", 1)[-1] if ":" in last else ""
        match = re.match(r"^(\d+)(?:\.(\d+))?", tag)
        return match.group(0) if match else None

    @property
    def usable_connections(self) -> int:
        """Connections left for clients once superuser slots are reserved."""
        return self.max_connections - self.superuser_reserved_connections


class PoolerSpec(Section):
    enabled: bool
    image: Image = "edoburu/pgbouncer:v1.25.1-p0"
    pool_mode: Literal["transaction", "session", "statement"] = "transaction"
    max_client_conn: Descriptors = 1000
    # Server connections: bounded by postgres.maxConnections (10,000) and the rules.
    default_pool_size: Annotated[int, Field(ge=1, le=10_000)] = 20
    read_pool_size: Annotated[int, Field(ge=1, le=10_000)] = 20
    reserve_pool_size: Annotated[int, Field(ge=0, le=10_000)] = 5
    # PgBouncers behind the `pgbouncer` service (Docker, local runner), each with a full set
    # of pools: more than one, and losing one loses no client for longer than a reconnect.
    # Under Patroni as many HAProxy routers stand between them and the PostgreSQL members.
    replicas: Annotated[int, Field(ge=1, le=16)] = 1
    # PgBouncer processes per pooler (PgBouncer is single-threaded): they share the listen
    # address with so_reuseport, the kernel spreads clients over them, and the pooler's pools,
    # reserve and max_db_connections are divided between them (scaling.render.pgbouncer).
    # Docker and the local runner; on Kubernetes StackGres runs one PgBouncer per pod.
    processes: Annotated[int, Field(ge=1, le=16)] = 1
    router_image: Image = "haproxy:3.2.4"


EvictionPolicy = Literal[
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
]


class RedisSpec(Section):
    mode: Literal["standalone", "sentinel", "cluster"]
    # Valkey is the BSD-licensed fork of Redis 7.2; Redis 7.4+ is RSALv2/SSPL (Redis 8 adds
    # AGPLv3). The image stays configurable for teams licensed for Redis.
    image: Image = "valkey/valkey:8.1.4"
    max_memory_mb: MemoryMb
    eviction_policy: EvictionPolicy = "allkeys-lru"
    # Redis keeps 32 descriptors for itself beside its clients.
    max_clients: Annotated[int, Field(ge=1, le=MAX_DESCRIPTORS - 32)] = 10_000
    replicas: Replicas = 0
    sentinels: Replicas = 0
    quorum: Replicas = 0
    master_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=64)] = "sikka"
    min_replicas_to_write: Replicas = 0
    min_replicas_max_lag_seconds: Annotated[int, Field(ge=1, le=3600)] = 10
    masters: Annotated[int, Field(ge=0, le=MAX_CLUSTER_NODES)] = 0
    replicas_per_master: Replicas = 0
    cluster_node_timeout_ms: Annotated[int, Field(ge=500, le=3_600_000)] = 5000
    # Disk per data node (AOF + RDB). Kept apart from max_memory_mb so that a memory change
    # never touches a volume (on Kubernetes, volumeClaimTemplates are immutable).
    storage_gb: StorageGb = 1

    @property
    def binaries(self) -> tuple[str, str]:
        """(server, cli) for the image: Valkey images ship valkey-*, Redis images redis-*."""
        engine = "valkey" if "valkey" in self.image.rsplit("/", 1)[-1] else "redis"
        return f"{engine}-server", f"{engine}-cli"

    @property
    def memory_per_node_mb(self) -> int:
        """In a cluster the phase's memory is split over the masters (replicas mirror them)."""
        if self.mode == "cluster":
            return max(1, self.max_memory_mb // max(1, self.masters))
        return self.max_memory_mb

    @property
    def cluster_nodes(self) -> int:
        return self.masters * (1 + self.replicas_per_master)


def _jwks_url(url: str) -> str:
    # Keys fetched over plain HTTP could be swapped by anyone on the path.
    loopback = re.match(r"^http://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?/", url)
    if not url.startswith("https://") and not loopback:
        raise ValueError("must be an https:// URL (plain http only on loopback)")
    return url


def _origin(value: str) -> str:
    if value != "*" and not re.match(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?/?$", value):
        raise ValueError("must be '*' or scheme://host[:port], such as 'https://app.example.com'")
    return value


class GatewayAuthSpec(Section):
    """Client authentication at the gateways (gateway/README.md, "Authentication").

    ``required``: every client presents a JWT; HS256 with the phase's generated
    ``gateway-jwt-secret`` unless ``jwks_url`` names the identity provider's keys (RS256 /
    ES256). ``disabled`` lets anyone subscribe and publish: only ever set on purpose.
    """

    mode: Literal["required", "disabled"] = "required"
    jwks_url: Annotated[str, AfterValidator(_jwks_url)] | None = None
    # Checked against the tokens' `iss` / `aud` when set (then tokens must carry them).
    issuer: Annotated[str, Field(min_length=1)] | None = None
    audience: Annotated[str, Field(min_length=1)] | None = None
    # Browser origins allowed to connect ("*": any). Clients sending no Origin (native
    # apps, servers) are always let through: their token authenticates them.
    allowed_origins: Annotated[
        tuple[Annotated[str, AfterValidator(_origin)], ...],
        BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v),
    ] = ()

    @property
    def shared_secret(self) -> bool:
        """Whether tokens are HS256 with the phase's gateway-jwt-secret."""
        return self.mode == "required" and self.jwks_url is None


class GatewaySpec(Section):
    image: Image = "ghcr.io/sikka-scaling/gateway:0.1.0"
    # On Docker the image is built from this folder of the project (the reference gateway)
    # and tagged `image`; null pulls `image` instead. Kubernetes always pulls `image`.
    build_context: (
        Annotated[str, Field(pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_./-]*$", max_length=255)] | None
    ) = "gateway"
    # No more WebSockets than the planned users could open (capacity: at most 100 million).
    max_connections: Annotated[int, Field(ge=1, le=100_000_000)]
    replicas: Pods
    max_replicas: Pods
    connections_per_replica: Descriptors
    port: Annotated[int, Field(ge=1024, le=65535)] = 8080
    drain_seconds: Annotated[int, Field(ge=1, le=3600)] = 30
    # Prometheus scrapes /metrics here, a port clients never reach.
    metrics_port: Annotated[int, Field(ge=1024, le=65535)] = 9102
    auth: GatewayAuthSpec = GatewayAuthSpec()
    # permessage-deflate on the clients' WebSockets: ~40 KB of zlib state per connection
    # and CPU per frame, for ~150-byte location frames it barely shrinks.
    compression: bool = False
    # Gateway processes per replica sharing its port (SO_REUSEPORT) and its
    # connectionsPerReplica: more than 1 only where a replica has more than one core.
    processes: Annotated[int, Field(ge=1, le=64)] = 1


class NginxSpec(Section):
    image: Image = "nginx:1.29.3"
    worker_connections: Annotated[int, Field(ge=512, le=1_048_576)]
    worker_processes: Annotated[int, Field(ge=1, le=128)]
    replicas: Annotated[int, Field(ge=1, le=100)] = 1
    max_replicas: Annotated[int, Field(ge=1, le=100)] = 1
    port: Port = 80
    status_port: Port = 8081
    # WebSockets live for minutes or hours: an idle trip screen must not be cut at nginx's
    # 60 s default.
    websocket_read_timeout_seconds: Annotated[int, Field(ge=60, le=86_400)] = 3600
    # Connections one client address may hold at once on one Nginx instance: WebSockets,
    # requests and half-open requests alike, counted as they are accepted (the accept gate,
    # scaling/render/nginx.py). At least 2: a reconnecting client's old and new connection.
    per_client_connections: Annotated[int, Field(ge=2, le=65_536)]
    # How long Nginx waits on a client that is not a WebSocket (yet): for the request line
    # and headers, a body, a write it cannot complete, the next keep-alive request.
    client_timeout_seconds: Annotated[int, Field(ge=1, le=300)] = 10

    @property
    def worker_slots(self) -> int:
        """nginx's worker_connections: each proxied connection (client side, upstream side)
        plus the accept gate's loopback pair in front of the client side."""
        return 2 * self.worker_connections

    @property
    def worker_rlimit_nofile(self) -> int:
        """Descriptors one worker may open: one per slot (connections and listeners alike),
        and an eighth more (at least 256) for log files and request bodies buffered to disk."""
        return self.worker_slots + max(256, self.worker_slots // 8)

    @property
    def instance_capacity(self) -> int:
        """Client + upstream connections one Nginx instance holds (all its workers)."""
        return self.worker_connections * self.worker_processes

    @property
    def connection_capacity(self) -> int:
        return self.worker_connections * self.worker_processes * self.replicas

    def needed_worker_connections(self, websockets: int) -> int:
        """The ``workerConnections`` each worker needs for ``websockets`` spread over the
        ``replicas`` x ``workerProcesses`` workers: see :func:`needed_worker_connections`."""
        return needed_worker_connections(websockets, self.replicas * self.worker_processes)


# Headroom of the Nginx sizing rule (rules.nginx_capacity). At its promised WebSockets a
# phase's Nginx is at most 1 / (1 + NGINX_MARGIN) = 80 % full, the launch phase's
# connection alert threshold: the other fifth holds connections in setup, reconnecting
# clients whose old connection Nginx still holds beside the new one, and upgrades refused
# with 429/503 while they are answered. Measured without it: launch held 480 of 500.
NGINX_MARGIN = 0.25
# workerConnections per worker that are never a WebSocket (twice as many slots): its
# listeners (one socket per worker for each `reuseport` listener), the master's channel,
# health checks and stub_status scrapes.
NGINX_RESERVED_CONNECTIONS = 32
# The kernel hands each connection to a worker by a hash of its addresses (`reuseport`, on
# the public and the loopback listener alike): a worker's share is binomial, and this many
# standard deviations above the mean cover the busiest worker.
NGINX_SPREAD_SIGMAS = 3


def needed_worker_connections(websockets: int, workers: int) -> int:
    """``nginx.workerConnections`` (client + upstream connections per worker) that hold
    ``websockets`` spread over ``workers`` workers in all, with headroom: 2 per WebSocket
    for its even share plus :data:`NGINX_MARGIN`, plus what the busiest worker gets above
    an even share, plus :data:`NGINX_RESERVED_CONNECTIONS`."""
    share = websockets / workers
    spread = NGINX_SPREAD_SIGMAS * math.sqrt(share * (1 - 1 / workers))
    return 2 * math.ceil(share * (1 + NGINX_MARGIN) + spread) + NGINX_RESERVED_CONNECTIONS


class Thresholds(Section):
    """Monitoring limits: staying below them keeps the phase healthy."""

    cpu_percent: Percent
    memory_percent: Percent
    connections_percent: Percent


class AutoscalingSpec(Section):
    enabled: bool
    cpu_target_percent: Percent = 70
    memory_target_percent: Percent = 80


class MonitoringSpec(Section):
    """The phase's Prometheus and the exporters it scrapes (scaling/topology/monitoring.py).
    On Kubernetes the cluster's Prometheus Operator runs Prometheus (its retention and volume
    are its own); the exporter images and the scrape interval apply there too."""

    prometheus_image: Image = "prom/prometheus:v3.5.0"
    node_exporter_image: Image = "prom/node-exporter:v1.9.1"
    postgres_exporter_image: Image = "quay.io/prometheuscommunity/postgres-exporter:v0.17.1"
    pgbouncer_exporter_image: Image = "prometheuscommunity/pgbouncer-exporter:v0.11.0"
    redis_exporter_image: Image = "oliver006/redis_exporter:v1.67.0"
    nginx_exporter_image: Image = "nginx/nginx-prometheus-exporter:1.4.2"
    # Every target is scraped, and every rule evaluated, this often (seconds). The alert
    # rules' rate() windows (5m) hold many samples at any of these.
    scrape_interval_seconds: Annotated[int, Field(ge=5, le=300)] = 15
    evaluation_interval_seconds: Annotated[int, Field(ge=5, le=300)] = 15
    # How long Prometheus keeps samples, and the volume that holds them. Prometheus also
    # stops at 80 % of the volume (retention by size), so a full disk never stops it.
    retention_days: Annotated[int, Field(ge=1, le=3650)]
    storage_gb: StorageGb
    port: Port = 9090


class KubernetesSpec(Section):
    # None: derived from the stack name (sikka-<stack>), so two stacks never share one.
    namespace: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")] | None = None
    install_operator: bool = False
    operator_version: Annotated[str, Field(pattern=r"^[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}$")] = (
        "1.18.6"
    )
    # A StorageClass name: a DNS subdomain.
    storage_class: (
        Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)] | None
    ) = None
    nginx_service_type: Literal["LoadBalancer", "NodePort", "ClusterIP"] = "LoadBalancer"


class DockerSpec(Section):
    # None: derived from the stack name. Containers and volumes are named from the stack,
    # never from the network, so renaming the network leaves every volume where it was.
    network: (
        Annotated[str, Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$", max_length=128)] | None
    ) = None
    # Host port Nginx publishes; everything else stays on the private network.
    http_port: Port = 8080
    # None: a /24 inside 10.213.0.0/16 chosen from the stack name.
    subnet: Network | None = None


# A Pulumi stack reference: "launch", or "organization/sikka-scaling/launch".
STACK_REFERENCE = re.compile(r"^(?:[A-Za-z0-9_.-]{1,100}/){0,2}[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class Promotion(Section):
    """The phase is the target of a transition (``sikka:promoteFrom``): while ``cutover`` is
    false its PostgreSQL (and Redis) follow the source stack's; ``cutover`` promotes them.
    Decided and validated by :mod:`scaling.promotion`."""

    # As written in the stack file: "launch" or "organization/sikka-scaling/launch".
    source: str
    # The source's stack name (the reference's last part).
    source_stack: str
    # The source's phase, from its name or its stack file beside this one; None when neither
    # tells (then only with sikka:promoteForce).
    source_phase: Phase | None = None
    cutover: bool = False
    force: bool = False

    @property
    def following(self) -> bool:
        """Whether the target still replicates from the source (before the cut-over)."""
        return not self.cutover


class PhaseSpec(Section):
    """Everything a phase is: the single source for stacks, renderers, checker and alerts."""

    phase: Phase
    platform: PlatformKind
    # The Pulumi stack this spec was read for: physical names derive from it.
    stack: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]
    capacity: Capacity
    postgres: PostgresSpec
    pooler: PoolerSpec
    redis: RedisSpec
    gateway: GatewaySpec
    nginx: NginxSpec
    thresholds: Thresholds
    autoscaling: AutoscalingSpec
    monitoring: MonitoringSpec
    kubernetes: KubernetesSpec = KubernetesSpec()
    docker: DockerSpec = DockerSpec()
    # Stateful resources (volumes, namespace, database clusters) are created with Pulumi's
    # `protect`: deleting or replacing them needs this set to false first, on purpose.
    protect_data: bool = True
    # A transition's target (sikka:promoteFrom): what it follows, and whether it is promoted.
    promotion: Promotion | None = None
    # A transition's source (sikka:promoteTo): the stack that will follow this one. A single
    # PostgreSQL then keeps a replication login and admits it from its private network.
    promote_to: str | None = None
    # Not a config key: set by the Pulumi layer when the stack's own outputs say it was a
    # transition's target (its database came with the data, see scaling.promotion).
    data_from_source: bool = False

    # strict=True would refuse "launch" for the enums when read from YAML.
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )

    @property
    def name_prefix(self) -> str:
        """Every physical name (containers, volumes, default network) starts with this."""
        return f"sikka-{_dns_label(self.stack)}"

    @property
    def namespace(self) -> str:
        return self.kubernetes.namespace or default_namespace(self.stack)

    @property
    def docker_network(self) -> str:
        return self.docker.network or self.name_prefix

    @property
    def docker_transition_network(self) -> str:
        """A transition's source (sikka:promoteTo) on Docker: the network its read-write door
        and Redis master share with the target's PostgreSQL members and Redis master, and
        nothing else (no alias of either phase can be mistaken for the other's there)."""
        return f"{self.name_prefix}-transition"

    @property
    def docker_transition_subnet(self) -> IPv4Network:
        digest = hashlib.sha256(self.stack.encode()).digest()
        return IPv4Network(f"10.214.{digest[0]}.0/24")

    @property
    def docker_subnet(self) -> IPv4Network | IPv6Network:
        if self.docker.subnet is not None:
            return self.docker.subnet
        digest = hashlib.sha256(self.stack.encode()).digest()
        return IPv4Network(f"10.213.{digest[0]}.0/24")


def default_namespace(stack: str) -> str:
    """The Kubernetes namespace of a stack that sets no kubernetes.namespace."""
    return f"sikka-{_dns_label(stack)}"[:63].rstrip("-")


def _dns_label(text: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return label or "stack"
