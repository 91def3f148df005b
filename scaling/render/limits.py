"""Open files each server needs, from the phase's settings.

Every socket is a descriptor, so a server's open-file limit (RLIMIT_NOFILE) bounds its
connections whatever its config says: a gateway started from a shell whose limit is 1,024
accepts ~1,013 WebSockets and then fails every accept with "Too many open files". The
local runner raises each child's soft limit to what is computed here (or refuses before
starting anything when the hard limit is too low); Docker containers get it as `ulimits`.

  nginx      worker_rlimit_nofile: a descriptor per worker slot and an eighth more
             (scaling/model.py); nginx sets it on its workers itself, within the hard limit
  gateway    what gateway/limits.py computes for itself: its connectionsPerReplica (it
             refuses beyond them with 1013, reconnects included), its Redis publish pool
             (REDIS_MAX_CONNECTIONS, per master on a cluster) and 256 for listeners, the
             pub/sub connections, probes and logs
  redis      maxclients + 32 (the descriptors Redis keeps for itself)
  pgbouncer  max_client_conn + its server connections (both pools and the reserve)
             + 64 for listeners and logs
  haproxy    2 per connection of its maxconn (client and server side) + 64 for listeners
             and health checks: HAProxy refuses to start when it cannot raise its limit
             that far
Other servers (PostgreSQL, etcd, Sentinel) size themselves within the default.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling.model import PhaseSpec
from scaling.render.gateway_env import redis_max_connections
from scaling.render.haproxy import haproxy_maxconn

GATEWAY_SPARE_FILES = 256  # gateway/limits.py SPARE_FILES
REDIS_RESERVED_FILES = 32  # Redis's own CONFIG_MIN_RESERVED_FDS
PGBOUNCER_RESERVED_FILES = 64
HAPROXY_RESERVED_FILES = 64


@dataclass(frozen=True)
class OpenFiles:
    """What one server needs, and the stack-file key that decides it (for messages)."""

    files: int
    key: str


def gateway_open_files(spec: PhaseSpec) -> OpenFiles:
    pools = spec.redis.masters if spec.redis.mode == "cluster" else 1
    files = (
        spec.gateway.connections_per_replica
        + redis_max_connections(spec) * pools
        + GATEWAY_SPARE_FILES
    )
    return OpenFiles(files, "gateway.connectionsPerReplica")


def open_files(spec: PhaseSpec, tier: str, role: str) -> OpenFiles | None:
    """What a node of ``tier``/``role`` needs; None where the default serves."""
    if tier == "nginx":
        return OpenFiles(spec.nginx.worker_rlimit_nofile, "nginx.workerConnections")
    if tier == "gateway":
        return gateway_open_files(spec)
    if tier == "redis" and role not in ("sentinel", "cluster-init"):
        return OpenFiles(spec.redis.max_clients + REDIS_RESERVED_FILES, "redis.maxClients")
    if role == "router":
        files = 2 * haproxy_maxconn(spec) + HAPROXY_RESERVED_FILES
        return OpenFiles(files, "pooler.maxClientConn")
    if role == "pooler":
        pooler = spec.pooler
        servers = pooler.default_pool_size + pooler.read_pool_size + 2 * pooler.reserve_pool_size
        files = pooler.max_client_conn + servers + PGBOUNCER_RESERVED_FILES
        return OpenFiles(files, "pooler.maxClientConn")
    return None
