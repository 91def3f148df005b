"""Readiness checks run against the live phase: what the phase's progress counts.

Each check asks the running system (never a constant): the primary accepts writes, every
replica the phase plans streams, the poolers serve, Redis answers in its mode (Sentinel
quorum reachable, every cluster slot covered), every gateway and Nginx answer, and a
Prometheus scrapes every target. The readings of the same check answer the "does it
answer" checks; the others ask with short timeouts of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import redis

from scaling.metrics.endpoints import Endpoints, HostPort
from scaling.metrics.model import ReadinessCheck, Sample
from scaling.metrics.probes import TIMEOUT
from scaling.model import PhaseSpec


def _safely(name: str, critical: bool, run: Callable[[], tuple[bool, str]]) -> ReadinessCheck:
    try:
        ok, detail = run()
    except Exception as error:  # a check that cannot ask has not passed
        ok, detail = False, f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
    return ReadinessCheck(name, ok, detail, critical)


def _answered(sample: Sample, key: str) -> tuple[int, int]:
    found = [r for r in sample.readings if r.key == key]
    return sum(1 for r in found if r.reachable), len(found)


def _parts_answer(sample: Sample, key: str, what: str) -> tuple[bool, str]:
    ok, total = _answered(sample, key)
    if total == 0:
        return False, f"no {what} to measure"
    return ok == total, f"{ok} of {total} {what} answer"


def _roles(endpoints: Endpoints) -> list[tuple[HostPort, bool, int]]:
    """(member, in recovery, replicas streaming from it) of every member that answers."""
    found = []
    for member in endpoints.postgres:
        try:
            with psycopg.connect(
                host=member.host,
                port=member.port,
                user=endpoints.postgres_user,
                password=endpoints.postgres_password,
                dbname=endpoints.database,
                connect_timeout=int(TIMEOUT),
                autocommit=True,
            ) as conn:
                row: Any = conn.execute(
                    "SELECT pg_is_in_recovery(), (SELECT count(*) FROM pg_stat_replication "
                    "WHERE state = 'streaming')"
                ).fetchone()
                found.append((member, bool(row[0]), int(row[1])))
        except (psycopg.Error, OSError):
            continue
    return found


def _redis(endpoints: Endpoints, target: HostPort) -> redis.Redis:
    return redis.Redis(
        host=target.host,
        port=target.port,
        password=endpoints.redis_password,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        decode_responses=True,
    )


def _sentinel_quorum(endpoints: Endpoints, spec: PhaseSpec) -> tuple[bool, str]:
    errors = []
    for sentinel in endpoints.sentinels:
        client = _redis(endpoints, sentinel)
        try:
            answer = client.execute_command("SENTINEL", "CKQUORUM", spec.redis.master_name)
            return True, f"{sentinel}: {answer}"
        except (redis.RedisError, OSError) as error:
            errors.append(f"{sentinel}: {error}")
        finally:
            client.close()
    return False, "; ".join(errors) or "no sentinel to ask"


def _cluster_slots(endpoints: Endpoints) -> tuple[bool, str]:
    errors = []
    for node in endpoints.redis:
        client = _redis(endpoints, node)
        try:
            info = client.execute_command("CLUSTER", "INFO")
            text = info if isinstance(info, str) else str(info)
            fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            ok = fields.get("cluster_state") == "ok" and fields.get("cluster_slots_ok") == "16384"
            return ok, (
                f"cluster_state {fields.get('cluster_state')}, "
                f"{fields.get('cluster_slots_ok')} of 16384 slots ok"
            )
        except (redis.RedisError, OSError) as error:
            errors.append(f"{node}: {error}")
        finally:
            client.close()
    return False, "; ".join(errors) or "no cluster node to ask"


def _prometheus_targets(url: str | None) -> tuple[bool, str]:
    if not url:
        return False, "no Prometheus for this phase (give --prometheus or run one)"
    response = httpx.get(f"{url.rstrip('/')}/api/v1/targets", timeout=TIMEOUT)
    response.raise_for_status()
    active = response.json()["data"]["activeTargets"]
    down = [
        f"{t['labels'].get('job')}/{t['labels'].get('instance')}"
        for t in active
        if t.get("health") != "up"
    ]
    if not active:
        return False, f"{url} scrapes no target"
    if down:
        return False, f"{len(down)} of {len(active)} targets down: {', '.join(down[:5])}"
    return True, f"{len(active)} targets up"


def readiness(
    endpoints: Endpoints | None, spec: PhaseSpec, sample: Sample, prometheus: str | None = None
) -> list[ReadinessCheck]:
    """The phase's readiness checks, asked now. Without endpoints (a Prometheus-only check)
    only what the Sample and Prometheus say is checked."""
    checks: list[ReadinessCheck] = []
    replicas = spec.postgres.read_replicas
    if endpoints is not None and endpoints.postgres:
        roles = _roles(endpoints)

        def primary() -> tuple[bool, str]:
            leaders = [str(m) for m, in_recovery, _ in roles if not in_recovery]
            if len(leaders) == 1:
                return True, f"primary {leaders[0]}"
            return False, f"{len(leaders)} members accept writes ({', '.join(leaders) or 'none'})"

        checks.append(_safely("postgres primary accepts writes", True, primary))
        if replicas:

            def streaming() -> tuple[bool, str]:
                count = max((n for _, in_recovery, n in roles if not in_recovery), default=0)
                return count >= replicas, f"{count} of {replicas} replicas streaming"

            checks.append(_safely("postgres replicas streaming", False, streaming))
    else:
        checks.append(
            _safely(
                "postgres answers",
                True,
                lambda: _parts_answer(sample, "postgres.connections", "members"),
            )
        )
    if spec.pooler.enabled:
        checks.append(
            _safely(
                "pgbouncer serving",
                True,
                lambda: _parts_answer(sample, "pgbouncer.clients", "poolers"),
            )
        )
    checks.append(
        _safely("redis nodes answer", True, lambda: _parts_answer(sample, "redis.memory", "nodes"))
    )
    if endpoints is not None and spec.redis.mode == "sentinel":
        checks.append(
            _safely(
                "redis sentinel quorum reachable", True, lambda: _sentinel_quorum(endpoints, spec)
            )
        )
    if endpoints is not None and spec.redis.mode == "cluster":
        checks.append(
            _safely("redis cluster slots covered", True, lambda: _cluster_slots(endpoints))
        )
    checks.append(
        _safely(
            "gateways serving",
            True,
            lambda: _parts_answer(sample, "gateway.connections", "gateways"),
        )
    )
    checks.append(
        _safely("nginx serving", True, lambda: _parts_answer(sample, "nginx.connections", "nginx"))
    )
    url = prometheus or (endpoints.prometheus if endpoints is not None else None)
    checks.append(
        _safely("monitoring scrapes every target", False, lambda: _prometheus_targets(url))
    )
    return checks
