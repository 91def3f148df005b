"""Every Redis node, by ``INFO``: memory used against ``maxmemory``, clients against
``maxclients``, the keyspace hit ratio and the keys evicted since the node started."""

from __future__ import annotations

from typing import Any

import redis

from scaling.metrics.endpoints import HostPort
from scaling.metrics.model import Reading
from scaling.metrics.probes import TIMEOUT, unreachable


def info_readings(instance: str, info: dict[str, Any]) -> list[Reading]:
    """Readings of one node's INFO (a parsed dict, as redis-py returns it)."""
    maxmemory = float(info.get("maxmemory") or 0)
    hits = float(info.get("keyspace_hits") or 0)
    misses = float(info.get("keyspace_misses") or 0)
    maxclients = info.get("maxclients")
    readings = [
        Reading(
            "redis.memory",
            "redis",
            instance,
            float(info["used_memory"]),
            maxmemory or None,
            "bytes",
        ),
        Reading(
            "redis.clients",
            "redis",
            instance,
            float(info["connected_clients"]),
            float(maxclients) if maxclients else None,
            "connections",
        ),
        Reading(
            "redis.evicted_keys",
            "redis",
            instance,
            float(info.get("evicted_keys") or 0),
            None,
            "keys",
        ),
    ]
    if hits + misses > 0:
        readings.append(
            Reading("redis.hit_ratio", "redis", instance, hits / (hits + misses), None, "ratio")
        )
    return readings


def probe_node(target: HostPort, password: str | None) -> tuple[list[Reading], list[str]]:
    instance = str(target)
    client = redis.Redis(
        host=target.host,
        port=target.port,
        password=password,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
    )
    try:
        info = client.info("all")
        if "maxclients" not in info:
            info["maxclients"] = client.config_get("maxclients").get("maxclients")
    except (redis.RedisError, OSError) as error:
        return [unreachable("redis.memory", "redis", instance, error, "bytes")], []
    finally:
        client.close()
    notes = []
    if not float(info.get("maxmemory") or 0):
        notes.append(f"redis {instance}: maxmemory is 0 (unbounded): memory is not a ratio")
    return info_readings(instance, info), notes
