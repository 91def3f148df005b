"""The direct check: every probe of every target at once, one Sample.

Each target is probed in its own thread with short timeouts, so the check takes about as
long as its slowest probe (the host's CPU interval, the gateways' rate interval), however
many parts the phase has. A probe that fails unexpectedly still yields its part's
unreachable Reading, never a missing row.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from urllib.parse import urlsplit

from scaling.metrics.endpoints import Endpoints
from scaling.metrics.model import Reading, Sample
from scaling.metrics.probes import gateway, host, nginx, pgbouncer, postgres, redis, unreachable
from scaling.model import PhaseSpec

Probe = Callable[[], tuple[list[Reading], list[str]]]


@dataclass(frozen=True)
class Measured:
    sample: Sample
    notes: tuple[str, ...]


def _host() -> tuple[list[Reading], list[str]]:
    return host.probe(), []


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    return True


def _private(fallback: Reading, host: str, network: str, run: Probe) -> Probe:
    """A part named on the platform's own network: probed when its name resolves here (the
    check runs inside that network), otherwise unreachable for that reason."""

    def guarded() -> tuple[list[Reading], list[str]]:
        if _resolves(host):
            return run()
        reason = (
            f"{host} is a name on {network}, reachable only from inside it "
            "(it does not resolve here)"
        )
        f = fallback
        return [unreachable(f.key, f.tier, f.instance, reason, f.unit)], []

    return guarded


def probes(endpoints: Endpoints, spec: PhaseSpec | None) -> list[tuple[Reading, Probe]]:
    """Every probe to run, each with the Reading to report if it fails outright."""
    e = endpoints
    found: list[tuple[Reading, Probe]] = []

    def add(key: str, tier: str, instance: str, unit: str, run: Probe) -> None:
        fallback = Reading(key, tier, instance, None, None, unit)
        host = urlsplit(instance).hostname if "://" in instance else instance.rpartition(":")[0]
        if host and host.strip("[]") in e.private_hosts:
            run = _private(fallback, host.strip("[]"), e.private_network, run)
        found.append((fallback, run))

    if e.host:
        add("host.cpu", "host", "localhost", "percent", _host)
    for pg in e.postgres:
        add(
            "postgres.connections",
            "postgres",
            str(pg),
            "connections",
            partial(postgres.probe_member, pg, e.postgres_user, e.postgres_password, e.database),
        )
    for pooler in e.poolers:
        add(
            "pgbouncer.clients",
            "pgbouncer",
            str(pooler),
            "connections",
            partial(pgbouncer.probe_pooler, pooler, e.pooler_user, e.pooler_password),
        )
    for node in e.redis:
        add(
            "redis.memory",
            "redis",
            str(node),
            "bytes",
            partial(redis.probe_node, node, e.redis_password),
        )
    per_gateway = float(spec.gateway.connections_per_replica) if spec is not None else None
    for urls in e.gateways:
        add(
            "gateway.connections",
            "gateway",
            urls[0],
            "connections",
            partial(gateway.probe_gateway, urls, per_gateway),
        )
    capacity = float(spec.nginx.instance_capacity) if spec is not None else None
    for url in e.nginx:
        add(
            "nginx.connections",
            "nginx",
            url,
            "connections",
            partial(nginx.probe_nginx, url, capacity),
        )
    return found


def node_instance(reading: Reading, endpoints: Endpoints) -> Reading:
    """The reading named after the node it measured (as Prometheus's ``instance`` label names
    it), where ``endpoints`` knows the node at the probed address; "address/replica" (a
    primary's view of a replica) keeps its replica part."""
    if reading.tier == "host":
        return replace(reading, instance=endpoints.host_name) if endpoints.host_name else reading
    address, slash, rest = reading.instance.partition("/")
    node = endpoints.names.get(address)
    return replace(reading, instance=f"{node}{slash}{rest}") if node else reading


def measure(endpoints: Endpoints, spec: PhaseSpec | None = None) -> Measured:
    """One Sample of every part ``endpoints`` names, taken concurrently."""
    at = time.time()
    planned = probes(endpoints, spec)
    readings: list[Reading] = []
    notes: list[str] = []
    if planned:
        with ThreadPoolExecutor(max_workers=min(16, len(planned))) as pool:
            futures = [(fallback, pool.submit(run)) for fallback, run in planned]
            for fallback, future in futures:
                try:
                    found, said = future.result()
                except Exception as error:  # a probe's own bug must not hide the part
                    found = [
                        unreachable(
                            fallback.key, fallback.tier, fallback.instance, error, fallback.unit
                        )
                    ]
                    said = []
                readings += found
                notes += said
    named = tuple(node_instance(r, endpoints) for r in readings)
    return Measured(Sample(at=at, source="direct", readings=named), tuple(notes))
