"""The environment a gateway instance gets: where Redis is, and its limits. (Gateways never
use the database: they get neither its address nor its credentials.)

One function per concern, fed with endpoints, so Docker (container names), the local runner
(loopback ports) and Kubernetes (Service names) describe gateways the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scaling.model import PhaseSpec
from scaling.render.endpoints import Endpoint


def redis_client_env(
    spec: PhaseSpec,
    *,
    nodes: Sequence[Endpoint],
    sentinels: Sequence[Endpoint] = (),
) -> dict[str, str]:
    """REDIS_MODE and how to reach Redis in that mode (see gateway/README.md)."""
    redis = spec.redis
    if redis.mode == "sentinel":
        return {
            "REDIS_MODE": "sentinel",
            "REDIS_SENTINELS": ",".join(str(s) for s in sentinels),
            "REDIS_MASTER_NAME": redis.master_name,
        }
    if redis.mode == "cluster":
        return {"REDIS_MODE": "cluster", "REDIS_CLUSTER_NODES": ",".join(str(n) for n in nodes)}
    return {"REDIS_MODE": "standalone", "REDIS_URL": f"redis://{nodes[0]}/0"}


def gateway_env(
    spec: PhaseSpec,
    *,
    gateway_id: str,
    port: int,
    drain_seconds: int | None = None,
    metrics_port: int | None = None,
) -> dict[str, str]:
    return {
        "GATEWAY_ID": gateway_id,
        "GATEWAY_PORT": str(port),
        "GATEWAY_METRICS_PORT": str(
            spec.gateway.metrics_port if metrics_port is None else metrics_port
        ),
        "WEBSOCKET_MAX_CONNECTIONS": str(spec.gateway.connections_per_replica),
        "GATEWAY_DRAIN_SECONDS": str(
            spec.gateway.drain_seconds if drain_seconds is None else drain_seconds
        ),
        "SCALING_PHASE": spec.phase.value,
        "GATEWAY_COMPRESSION": "deflate" if spec.gateway.compression else "none",
        "GATEWAY_PROCESSES": str(spec.gateway.processes),
        "REDIS_MAX_CONNECTIONS": str(redis_max_connections(spec)),
        **auth_env(spec),
    }


# Share of Redis's maxclients the gateways' publish pools may take together; the rest is
# for their pub/sub connections, replication, Sentinel and operators.
REDIS_CLIENTS_SHARE = 0.5
# Below this a pool cannot ride out a short Redis stall without queueing publishes.
MIN_REDIS_POOL = 16


def redis_max_connections(spec: PhaseSpec) -> int:
    """REDIS_MAX_CONNECTIONS of one gateway process (per cluster node): half of Redis's
    ``maxClients`` shared by the most gateway processes the phase may run
    (``maxReplicas x processes``), and never more than one per WebSocket the process may
    hold (a connection has at most one publish in flight: the gateway reads a client's
    next frame once its last publish returned). Publishes beyond the pool wait for a free
    connection instead of failing."""
    gateway = spec.gateway
    processes = gateway.max_replicas * gateway.processes
    share = math.floor(spec.redis.max_clients * REDIS_CLIENTS_SHARE / processes)
    per_process = math.ceil(gateway.connections_per_replica / gateway.processes)
    return max(MIN_REDIS_POOL, min(share, per_process))


def auth_env(spec: PhaseSpec) -> dict[str, str]:
    """GATEWAY_AUTH_MODE and what verifies tokens (the HS256 key itself comes separately,
    as the GATEWAY_JWT_SECRET secret, when no JWKS URL is set)."""
    auth = spec.gateway.auth
    env: dict[str, str] = {"GATEWAY_AUTH_MODE": auth.mode}
    optional = {
        "GATEWAY_JWKS_URL": auth.jwks_url,
        "GATEWAY_JWT_ISSUER": auth.issuer,
        "GATEWAY_JWT_AUDIENCE": auth.audience,
        "GATEWAY_ALLOWED_ORIGINS": ",".join(auth.allowed_origins) or None,
    }
    env |= {key: value for key, value in optional.items() if value is not None}
    return env
