"""Cross-field rules: each a pure function from validated sections to problems found.

Sections are validated one by one first, so a type error in one section does not hide a
rule broken in another; a rule runs whenever the sections it reads are valid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pydantic.alias_generators import to_snake

from scaling.issues import ConfigIssue
from scaling.model import (
    MAX_CLUSTER_NODES,
    NGINX_MARGIN,
    NGINX_RESERVED_CONNECTIONS,
    Capacity,
    GatewaySpec,
    NginxSpec,
    PlatformKind,
    PoolerSpec,
    PostgresSpec,
    RedisSpec,
)

Sections = dict[str, Any]
Rule = Callable[[Sections], Iterator[ConfigIssue]]


def _issue(key: str, message: str) -> ConfigIssue:
    return ConfigIssue(f"sikka:{key}", message)


def capacity_spans(s: Sections) -> Iterator[ConfigIssue]:
    capacity: Capacity | None = s.get("capacity")
    if capacity is None:
        return
    for key, span in (("concurrentUsers", capacity.concurrent_users), ("trips", capacity.trips)):
        if span.max is not None and span.max < span.min:
            yield _issue(
                f"capacity.{key}.max",
                f"{span.max} is below min {span.min} (a phase's default max stays unless set)",
            )


def postgres_connections(s: Sections) -> Iterator[ConfigIssue]:
    pg: PostgresSpec | None = s.get("postgres")
    if pg is not None and pg.superuser_reserved_connections >= pg.max_connections:
        # PostgreSQL refuses to start otherwise.
        yield _issue(
            "postgres.superuserReservedConnections",
            f"{pg.superuser_reserved_connections} must be below maxConnections "
            f"{pg.max_connections}",
        )


def postgres_topology(s: Sections) -> Iterator[ConfigIssue]:
    pg: PostgresSpec | None = s.get("postgres")
    if pg is None:
        return
    if pg.mode == "single" and pg.read_replicas:
        yield _issue(
            "postgres.readReplicas",
            f"a 'single' PostgreSQL has no read replicas (got {pg.read_replicas}); "
            "set postgres.mode to 'replicated'",
        )
    if pg.mode == "replicated" and pg.read_replicas < 1:
        yield _issue("postgres.readReplicas", "'replicated' mode needs at least 1 read replica")
    if pg.mode == "citus":
        if pg.instances_per_shard < 2:
            yield _issue(
                "postgres.instancesPerShard",
                "each Citus shard group needs a replica: at least 2 "
                f"(got {pg.instances_per_shard})",
            )
        if pg.coordinator_instances < 2:
            yield _issue(
                "postgres.coordinatorInstances",
                "the Citus coordinator needs a replica: at least 2 "
                f"(got {pg.coordinator_instances})",
            )
        platform = s.get("platform")
        if platform is not None and platform != PlatformKind.KUBERNETES:
            yield _issue(
                "postgres.mode",
                "'citus' runs through the StackGres operator and needs sikka:platform 'kubernetes'",
            )


def _table(name: str) -> str:
    return name if "." in name else f"public.{name}"


def postgres_distribution(s: Sections) -> Iterator[ConfigIssue]:
    """How Citus spreads the tables: a Citus phase's, each table at most once."""
    pg: PostgresSpec | None = s.get("postgres")
    if pg is None:
        return
    if pg.mode != "citus":
        for key, value in (
            ("distributionColumns", pg.distribution_columns),
            ("referenceTables", pg.reference_tables),
        ):
            if value:
                yield _issue(
                    f"postgres.{key}",
                    f"spreads tables over Citus; postgres.mode is '{pg.mode}': remove it",
                )
        return
    distributed = {_table(t): t for t in pg.distribution_columns}
    seen: set[str] = set()
    for table in pg.reference_tables:
        if _table(table) in distributed:
            yield _issue(
                "postgres.referenceTables",
                f"{table!r} is also distributed by postgres.distributionColumns "
                f"({distributed[_table(table)]!r}): name it in one of them",
            )
        if _table(table) in seen:
            yield _issue("postgres.referenceTables", f"names {table!r} twice")
        seen.add(_table(table))
    if len(distributed) < len(pg.distribution_columns):
        yield _issue(
            "postgres.distributionColumns",
            "names a table twice ('orders' is 'public.orders')",
        )


def postgres_durability(s: Sections) -> Iterator[ConfigIssue]:
    pg: PostgresSpec | None = s.get("postgres")
    if pg is not None and pg.mode == "single" and pg.synchronous_mode != "off":
        yield _issue(
            "postgres.synchronousMode",
            f"'{pg.synchronous_mode}' needs a standby to acknowledge commits; a 'single' "
            "PostgreSQL has none: set 'off'",
        )


def pooler_within_postgres(s: Sections) -> Iterator[ConfigIssue]:
    pg: PostgresSpec | None = s.get("postgres")
    pooler: PoolerSpec | None = s.get("pooler")
    if pg is None or pooler is None:
        return
    if pg.mode != "single" and not pooler.enabled:
        yield _issue(
            "pooler.enabled", f"PostgreSQL mode '{pg.mode}' is served through PgBouncer: set true"
        )
    if not pooler.enabled:
        return
    budget = pg.usable_connections
    pools = [("defaultPoolSize", pooler.default_pool_size, "the primary")]
    if pg.read_replicas:
        pools.append(("readPoolSize", pooler.read_pool_size, "each replica"))
    poolers = pooler.replicas
    for key, size, target in pools:
        if poolers * (size + pooler.reserve_pool_size) > budget:
            times = f"replicas {poolers} x (" if poolers > 1 else ""
            yield _issue(
                f"pooler.{key}",
                f"{times}{key} {size} + reservePoolSize {pooler.reserve_pool_size}"
                f"{')' if poolers > 1 else ''} exceeds the "
                f"{budget} client connections PostgreSQL allows on {target} "
                f"(postgres.maxConnections {pg.max_connections} - "
                f"{pg.superuser_reserved_connections} reserved)",
            )
    # Each process of a pooler gets its share of every pool (scaling.render.pgbouncer): at
    # least one server connection each, or a process would queue its clients forever.
    for key, size, _ in pools:
        if pooler.processes > size:
            yield _issue(
                "pooler.processes",
                f"{pooler.processes} processes cannot share pooler.{key} {size}: each PgBouncer "
                f"process needs a server connection of its own (at most {size} processes)",
            )
    if pooler.max_client_conn < pooler.default_pool_size:
        yield _issue(
            "pooler.maxClientConn",
            f"{pooler.max_client_conn} is below defaultPoolSize {pooler.default_pool_size}",
        )


def redis_topology(s: Sections) -> Iterator[ConfigIssue]:
    r: RedisSpec | None = s.get("redis")
    if r is None:
        return
    if r.mode == "sentinel":
        if r.sentinels < 3 or r.sentinels % 2 == 0:
            yield _issue(
                "redis.sentinels",
                f"Sentinel needs an odd number of sentinels, at least 3 (got {r.sentinels})",
            )
        if not 1 <= r.quorum <= r.sentinels:
            yield _issue(
                "redis.quorum",
                f"quorum must be between 1 and the number of sentinels ({r.sentinels}) "
                f"(got {r.quorum})",
            )
        if r.replicas < 1:
            yield _issue("redis.replicas", "Sentinel needs at least 1 replica to promote (got 0)")
        if r.min_replicas_to_write > r.replicas:
            yield _issue(
                "redis.minReplicasToWrite",
                f"{r.min_replicas_to_write} exceeds the {r.replicas} replicas: "
                "the master would refuse every write",
            )
    if r.mode == "cluster":
        if r.masters < 3:
            yield _issue(
                "redis.masters", f"Redis Cluster needs at least 3 masters (got {r.masters})"
            )
        if r.replicas_per_master < 1:
            yield _issue(
                "redis.replicasPerMaster",
                f"every cluster master needs at least 1 replica to fail over to "
                f"(got {r.replicas_per_master})",
            )
        if r.cluster_nodes > MAX_CLUSTER_NODES:
            yield _issue(
                "redis.masters",
                f"{r.masters} masters x (1 + {r.replicas_per_master} replicas) = "
                f"{r.cluster_nodes} nodes; Redis Cluster is designed for at most "
                f"{MAX_CLUSTER_NODES}",
            )
        if r.min_replicas_to_write > r.replicas_per_master:
            yield _issue(
                "redis.minReplicasToWrite",
                f"{r.min_replicas_to_write} exceeds replicasPerMaster {r.replicas_per_master}: "
                "masters would refuse every write",
            )
    needed_gb = -(-2 * r.memory_per_node_mb // 1024)
    if r.storage_gb < needed_gb:
        yield _issue(
            "redis.storageGb",
            f"{r.storage_gb} GB per node cannot hold the AOF of {r.memory_per_node_mb} MB of "
            f"memory per node (and its rewrite): at least {needed_gb}",
        )
    unused = {
        "standalone": ("replicas", "sentinels", "quorum", "masters", "replicasPerMaster"),
        "sentinel": ("masters", "replicasPerMaster"),
        "cluster": ("replicas", "sentinels", "quorum"),
    }[r.mode]
    for key in unused:
        if getattr(r, to_snake(key)):
            yield _issue(f"redis.{key}", f"is not used in '{r.mode}' mode; remove it")


def gateway_capacity(s: Sections) -> Iterator[ConfigIssue]:
    gw: GatewaySpec | None = s.get("gateway")
    if gw is None:
        return
    if gw.replicas * gw.connections_per_replica < gw.max_connections:
        yield _issue(
            "gateway.connectionsPerReplica",
            f"{gw.replicas} replicas x {gw.connections_per_replica} connections cannot hold "
            f"the phase's {gw.max_connections} WebSocket connections",
        )
    if gw.max_replicas < gw.replicas:
        yield _issue("gateway.maxReplicas", f"{gw.max_replicas} is below replicas {gw.replicas}")


def gateway_auth(s: Sections) -> Iterator[ConfigIssue]:
    """`auth.mode: disabled` is accepted (written in the stack file, never a default), and
    `sikka-scaling validate` says so; settings that only matter with authentication on are
    refused beside it, since a stack holding them was meant to authenticate."""
    gw: GatewaySpec | None = s.get("gateway")
    if gw is None:
        return
    auth = gw.auth
    if auth.mode == "disabled":
        for key in ("jwksUrl", "issuer", "audience"):
            if getattr(auth, to_snake(key)) is not None:
                yield _issue(
                    f"gateway.auth.{key}",
                    "has no effect with gateway.auth.mode 'disabled'; remove it or set mode "
                    "'required'",
                )
    if "*" in auth.allowed_origins and len(auth.allowed_origins) > 1:
        yield _issue(
            "gateway.auth.allowedOrigins", "'*' already allows every origin; list it alone"
        )
    if gw.metrics_port == gw.port:
        yield _issue("gateway.metricsPort", f"must differ from gateway.port ({gw.port})")


def nginx_capacity(s: Sections) -> Iterator[ConfigIssue]:
    nginx: NginxSpec | None = s.get("nginx")
    if nginx is None:
        return
    if nginx.max_replicas < nginx.replicas:
        yield _issue(
            "nginx.maxReplicas", f"{nginx.max_replicas} is below replicas {nginx.replicas}"
        )
    if nginx.status_port == nginx.port:
        yield _issue("nginx.statusPort", f"must differ from nginx.port ({nginx.port})")
    for key, port in (("port", nginx.port), ("statusPort", nginx.status_port)):
        if port == NGINX_LOOPBACK_PORT:
            yield _issue(
                f"nginx.{key}",
                f"{port} is where Nginx's accept gate hands connections to its HTTP server "
                "(loopback only); choose another port",
            )
    # One address at its limit holds 2 connections per WebSocket (client and upstream side):
    # it must leave at least half of the instance to everybody else, health checks included.
    share = 2 * nginx.per_client_connections
    if 2 * share > nginx.instance_capacity:
        yield _issue(
            "nginx.perClientConnections",
            f"{nginx.per_client_connections} connections per client address would let one "
            f"address hold {share} of one Nginx instance's {nginx.instance_capacity} "
            f"(workerConnections x workerProcesses); at most {nginx.instance_capacity // 4}",
        )
    gw: GatewaySpec | None = s.get("gateway")
    if gw is None:
        return
    needed = nginx.needed_worker_connections(gw.max_connections)
    if nginx.worker_connections < needed:
        yield _issue(
            "nginx.workerConnections",
            f"{nginx.worker_connections} per worker x {nginx.worker_processes} workers x "
            f"{nginx.replicas} replicas is too little for {gw.max_connections} WebSockets: each "
            f"worker needs {needed} (2 per WebSocket, client side + upstream side, "
            f"+{round(NGINX_MARGIN * 100)} % headroom, + the busiest worker's excess over an "
            f"even share, + {NGINX_RESERVED_CONNECTIONS} for listeners and health checks); "
            "raise workerConnections or workerProcesses",
        )


def nginx_instances(nginx: NginxSpec, platform: object) -> int:
    """Nginx instances a stack runs: nginx.replicas Pods on Kubernetes; on a Docker host one
    container, which runs the workers of all replicas (:func:`nginx_instance_workers`)."""
    return nginx.replicas if platform == PlatformKind.KUBERNETES else 1


def nginx_instance_workers(nginx: NginxSpec, platform: object) -> int:
    """worker_processes of one instance: the phase's workers in all, over its instances."""
    return nginx.worker_processes * nginx.replicas // nginx_instances(nginx, platform)


# On Kubernetes nginx runs as non-root and serves HTTP on this container port.
KUBERNETES_NGINX_HTTP_PORT = 8080
# Inside the Nginx container (Docker, Kubernetes): the accept gate (stream) passes each
# connection to the HTTP server on 127.0.0.1 at this port.
NGINX_LOOPBACK_PORT = 8089


def kubernetes_postgres_version(s: Sections) -> Iterator[ConfigIssue]:
    pg: PostgresSpec | None = s.get("postgres")
    if pg is not None and s.get("platform") == PlatformKind.KUBERNETES and pg.version is None:
        yield _issue(
            "postgres.image",
            f"{pg.image!r}: on Kubernetes StackGres runs the Postgres version the tag names; "
            "use a tag that starts with it, such as 'postgres:17.6-bookworm'",
        )


def kubernetes_nginx_ports(s: Sections) -> Iterator[ConfigIssue]:
    nginx: NginxSpec | None = s.get("nginx")
    if nginx is None or s.get("platform") != PlatformKind.KUBERNETES:
        return
    port = nginx.status_port
    if port < 1024 or port == KUBERNETES_NGINX_HTTP_PORT:
        yield _issue(
            "nginx.statusPort",
            f"{port}: on Kubernetes nginx runs as non-root and serves HTTP on "
            f"{KUBERNETES_NGINX_HTTP_PORT}; choose another port >= 1024",
        )


def autoscaling_platform(s: Sections) -> Iterator[ConfigIssue]:
    autoscaling = s.get("autoscaling")
    platform = s.get("platform")
    if autoscaling is None or platform is None:
        return
    if autoscaling.enabled and platform != PlatformKind.KUBERNETES:
        yield _issue(
            "autoscaling.enabled",
            "autoscaling runs as Kubernetes HorizontalPodAutoscalers and needs "
            "sikka:platform 'kubernetes'",
        )


RULES: tuple[Rule, ...] = (
    capacity_spans,
    postgres_connections,
    postgres_topology,
    postgres_durability,
    pooler_within_postgres,
    redis_topology,
    gateway_capacity,
    gateway_auth,
    nginx_capacity,
    kubernetes_nginx_ports,
    kubernetes_postgres_version,
    autoscaling_platform,
    postgres_distribution,
)


def check(sections: Sections) -> list[ConfigIssue]:
    return [issue for rule in RULES for issue in rule(sections)]
