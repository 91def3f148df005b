"""The phase's environment variables (`.env`): the numbers every service and script reads.

Secrets never appear here; they are referenced by name (see SECRET_VARIABLES) and come from
the operator's environment or a secret store.
"""

from __future__ import annotations

from scaling.model import PhaseSpec

# Secret name → environment variable that carries it everywhere (containers, compose, local).
# Each PostgreSQL role has its own: "postgres-password" is the application role's
# (postgres.user), "postgres-superuser-password" the superuser's (the official image reads it
# as POSTGRES_PASSWORD), "pgbouncer-admin-password" that of PgBouncer's console user.
SECRET_VARIABLES = {
    "postgres-password": "DATABASE_PASSWORD",
    "postgres-superuser-password": "POSTGRES_PASSWORD",
    "replication-password": "REPLICATION_PASSWORD",
    "pgbouncer-admin-password": "PGBOUNCER_ADMIN_PASSWORD",
    # Under Patroni (Docker, local runner): its pg_rewind role's, and its REST API's user for
    # switchover, restart and reinitialize (reading the state needs none).
    "postgres-rewind-password": "PATRONI_REWIND_PASSWORD",
    "patroni-api-password": "PATRONI_RESTAPI_PASSWORD",
    "redis-password": "REDIS_PASSWORD",
    # The exporters' login on PostgreSQL (pg_monitor) and PgBouncer (stats_users), Docker.
    "monitoring-password": "MONITORING_PASSWORD",
    # The key the gateways verify HS256 client tokens with (and token issuers sign with).
    "gateway-jwt-secret": "GATEWAY_JWT_SECRET",
    # SCRAM-SHA-256 verifiers of three of the passwords above (scaling.render.scram), made
    # with them: what PostgreSQL stores for the application role and the monitoring role, and
    # what PgBouncer's auth file holds for them and for its console user. Secrets like the
    # passwords themselves.
    "postgres-password-scram": "DATABASE_PASSWORD_SCRAM",
    "pgbouncer-admin-password-scram": "PGBOUNCER_ADMIN_PASSWORD_SCRAM",
    "monitoring-password-scram": "MONITORING_PASSWORD_SCRAM",
}
# Secret → the password it is the SCRAM verifier of (made from it, never supplied apart).
VERIFIER_OF = {
    "postgres-password-scram": "postgres-password",
    "pgbouncer-admin-password-scram": "pgbouncer-admin-password",
    "monitoring-password-scram": "monitoring-password",
}


def required_secrets(spec: PhaseSpec) -> tuple[str, ...]:
    """The secrets this phase uses: replication credentials exist with replicas, and always
    under StackGres (Patroni creates its replication user even for one instance); the
    gateways' HS256 key while they verify tokens with a shared secret. StackGres generates the
    superuser's and its PgBouncer console users' passwords itself and keeps them in the
    cluster's own Secret; elsewhere the phase generates them."""
    on_kubernetes = spec.platform.value == "kubernetes"
    needed = ["postgres-password"]
    if not on_kubernetes:
        # The roles' start-up SQL sets the application role's verifier, not its password.
        needed += ["postgres-password-scram", "postgres-superuser-password"]
    # A transition's source (sikka:promoteTo) keeps a replication login for its target.
    if (
        on_kubernetes
        or spec.postgres.read_replicas
        or spec.postgres.mode != "single"
        or spec.promote_to
    ):
        needed.append("replication-password")
    if not on_kubernetes and spec.pooler.enabled:
        needed += ["pgbouncer-admin-password", "pgbouncer-admin-password-scram"]
    if not on_kubernetes and spec.postgres.read_replicas and spec.postgres.mode == "replicated":
        needed += ["postgres-rewind-password", "patroni-api-password"]
    needed.append("redis-password")
    if not on_kubernetes:  # StackGres's exporter logs in with its own credentials
        # The exporters log in with the password; PostgreSQL and PgBouncer hold its verifier.
        needed += ["monitoring-password", "monitoring-password-scram"]
    if spec.gateway.auth.shared_secret:
        needed.append("gateway-jwt-secret")
    return tuple(needed)


def _flag(value: bool) -> str:
    return "true" if value else "false"


def phase_environment(spec: PhaseSpec) -> dict[str, str]:
    pg, redis, gw, nginx, t = spec.postgres, spec.redis, spec.gateway, spec.nginx, spec.thresholds
    return {
        "SCALING_PHASE": spec.phase.value,
        "SCALING_PLATFORM": spec.platform.value,
        "DB_MAX_CONNECTIONS": str(pg.max_connections),
        "DB_MODE": pg.mode,
        "DB_READ_REPLICAS": str(pg.read_replicas),
        "PGBOUNCER_MAX_CLIENT_CONN": str(spec.pooler.max_client_conn)
        if spec.pooler.enabled
        else "0",
        "PGBOUNCER_DEFAULT_POOL_SIZE": str(spec.pooler.default_pool_size)
        if spec.pooler.enabled
        else "0",
        "REDIS_MODE": redis.mode,
        "REDIS_MAX_CONNECTIONS": str(redis.max_clients),
        "REDIS_MAX_MEMORY_MB": str(redis.max_memory_mb),
        # The phase's total; each gateway enforces WEBSOCKET_CONNECTIONS_PER_GATEWAY.
        "WEBSOCKET_MAX_CONNECTIONS": str(gw.max_connections),
        "WEBSOCKET_CONNECTIONS_PER_GATEWAY": str(gw.connections_per_replica),
        "GATEWAY_REPLICAS": str(gw.replicas),
        "NGINX_WORKER_CONNECTIONS": str(nginx.worker_connections),
        "NGINX_WORKER_PROCESSES": str(nginx.worker_processes),
        "ENABLE_READ_REPLICAS": _flag(pg.read_replicas > 0),
        "ENABLE_PGBOUNCER": _flag(spec.pooler.enabled),
        "ENABLE_REDIS_SENTINEL": _flag(redis.mode == "sentinel"),
        "ENABLE_REDIS_CLUSTER": _flag(redis.mode == "cluster"),
        "ENABLE_CITUS": _flag(pg.mode == "citus"),
        "ENABLE_AUTOSCALING": _flag(spec.autoscaling.enabled),
        "CPU_THRESHOLD_PERCENT": str(t.cpu_percent),
        "MEMORY_THRESHOLD_PERCENT": str(t.memory_percent),
        "CONNECTIONS_THRESHOLD_PERCENT": str(t.connections_percent),
    }


def render_env_file(spec: PhaseSpec) -> str:
    lines = [f"# Generated by sikka-scaling for the {spec.phase.value} phase."]
    lines += [f"{key}={value}" for key, value in phase_environment(spec).items()]
    lines.append("# Secrets are not written here; export them before `docker compose up`:")
    for name in required_secrets(spec):
        if name in VERIFIER_OF:
            source = SECRET_VARIABLES[VERIFIER_OF[name]]
            made = f'$(printf %s "${source}" | sikka-scaling scram-verifier)'
            lines.append(f"# {SECRET_VARIABLES[name]}={made}")
        else:
            lines.append(f"# {SECRET_VARIABLES[name]}=...")
    return "\n".join(lines) + "\n"
