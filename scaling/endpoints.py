"""Where clients reach each tier of a deployed phase (the stack's exported endpoints).

On Docker these are container names on the private network; on Kubernetes, Service DNS
names in the stack's namespace.
"""

from __future__ import annotations

from typing import TypedDict

from scaling.model import PhaseSpec, PlatformKind
from scaling.render.pgbouncer import POOLER_PORT, read_only_database
from scaling.render.postgres import PG_PORT
from scaling.render.redis import REDIS_PORT, SENTINEL_PORT


class PostgresEndpoints(TypedDict):
    primary_endpoint: str
    replica_endpoints: list[str]
    pooler_endpoint: str | None


class RedisEndpoints(TypedDict, total=False):
    redis_mode: str
    redis_endpoint: str  # standalone
    sentinel_endpoints: list[str]  # sentinel
    master_name: str  # sentinel
    node_endpoints: list[str]  # cluster


def _k8s(spec: PhaseSpec, service: str) -> str:
    return f"{service}.{spec.kubernetes.namespace}.svc.cluster.local"


def postgres_endpoints(spec: PhaseSpec) -> PostgresEndpoints:
    pg = spec.postgres
    if spec.platform == PlatformKind.KUBERNETES:
        primary = _k8s(spec, "postgres")
        return {
            "primary_endpoint": f"{primary}:{PG_PORT}",
            "replica_endpoints": [f"{_k8s(spec, 'postgres-replicas')}:{PG_PORT}"]
            if pg.read_replicas or pg.mode == "citus"
            else [],
            # StackGres runs PgBouncer inside each Postgres pod, in front of port 5432.
            "pooler_endpoint": f"{primary}:{PG_PORT}",
        }
    return {
        "primary_endpoint": f"postgres-primary:{PG_PORT}",
        "replica_endpoints": [
            f"postgres-replica-{i}:{PG_PORT}" for i in range(1, pg.read_replicas + 1)
        ],
        "pooler_endpoint": f"pgbouncer:{POOLER_PORT}" if spec.pooler.enabled else None,
    }


def redis_endpoints(spec: PhaseSpec) -> RedisEndpoints:
    redis = spec.redis
    on_k8s = spec.platform == PlatformKind.KUBERNETES

    def node(i: int) -> str:
        host = _k8s(spec, f"redis-{i}.redis-headless") if on_k8s else f"redis-{i}"
        return f"{host}:{REDIS_PORT}"

    def sentinel(i: int) -> str:
        host = _k8s(spec, f"sentinel-{i}.sentinel-headless") if on_k8s else f"sentinel-{i + 1}"
        return f"{host}:{SENTINEL_PORT}"

    if redis.mode == "sentinel":
        return {
            "redis_mode": "sentinel",
            "sentinel_endpoints": [sentinel(i) for i in range(redis.sentinels)],
            "master_name": redis.master_name,
        }
    if redis.mode == "cluster":
        return {
            "redis_mode": "cluster",
            "node_endpoints": [node(i) for i in range(redis.cluster_nodes)],
        }
    return {"redis_mode": "standalone", "redis_endpoint": node(0)}


def gateway_endpoints(spec: PhaseSpec) -> dict[str, object]:
    gw = spec.gateway
    if spec.platform == PlatformKind.KUBERNETES:
        return {
            "gateway_service": f"{_k8s(spec, 'gateway')}:{gw.port}",
            "min_replicas": gw.replicas,
            "max_replicas": gw.max_replicas,
        }
    return {
        "gateway_endpoints": [f"gateway-{i}:{gw.port}" for i in range(1, gw.replicas + 1)],
        "min_replicas": gw.replicas,
        "max_replicas": gw.replicas,
    }


def nginx_endpoints(spec: PhaseSpec) -> dict[str, object]:
    if spec.platform == PlatformKind.KUBERNETES:
        return {"url": f"http://{_k8s(spec, 'nginx')}", "status_url": None}
    return {
        "url": f"http://localhost:{spec.docker.http_port}",
        "status_url": f"http://nginx:{spec.nginx.status_port}/nginx_status",
    }


def connection_uris(spec: PhaseSpec) -> dict[str, tuple[str, str, str]]:
    """Client connection URIs as (before password, secret name, after password): the caller
    puts the secret in between, so the URI exists only as a secret."""
    pg = spec.postgres

    def database(host: str | None, name: str) -> tuple[str, str, str]:
        return f"postgresql://{pg.user}:", "postgres-password", f"@{host}/{name}"

    def redis_uri(scheme: str, rest: str) -> tuple[str, str, str]:
        return f"{scheme}://:", "redis-password", f"@{rest}/0"

    eps = postgres_endpoints(spec)
    uris = {
        "database_uri": database(eps["pooler_endpoint"] or eps["primary_endpoint"], pg.database)
    }
    if eps["replica_endpoints"]:
        # Docker: PgBouncer's read-only pool spans the replicas; Kubernetes: the replicas Service.
        on_pooler = spec.platform == PlatformKind.DOCKER and spec.pooler.enabled
        uris["database_read_uri"] = (
            database(eps["pooler_endpoint"], read_only_database(spec))
            if on_pooler
            else database(eps["replica_endpoints"][0], pg.database)
        )
    redis = redis_endpoints(spec)
    if redis["redis_mode"] == "sentinel":
        sentinels = ",".join(redis["sentinel_endpoints"])
        uris["redis_uri"] = redis_uri("redis+sentinel", f"{sentinels}/{redis['master_name']}")
    elif redis["redis_mode"] == "cluster":
        uris["redis_uri"] = redis_uri("redis", redis["node_endpoints"][0])
    else:
        uris["redis_uri"] = redis_uri("redis", redis["redis_endpoint"])
    return uris
