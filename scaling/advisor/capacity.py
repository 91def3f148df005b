"""Estimates of what the phase carries, and the optimisation arithmetic: how many of each
part the measured load needs at the phase's target utilisation.

**Estimates.** One WebSocket is one concurrent user (riders and drivers each hold one), so
the concurrent users are the ``gateway.connections`` summed over every reachable gateway;
the trips are the ``gateway.active_trips`` summed likewise — an upper bound, since a trip
whose rider and driver sit on different gateways is a channel on both. The phase holds
``gateway.connectionsPerReplica`` x the gateways it can run (``gateway.maxReplicas`` where
the autoscaler may add them, ``gateway.replicas`` otherwise) users, and
``capacity.trips.max`` trips (open-ended at scale: then trips do not count).
``utilizationPercentage`` is the larger of the two ratios: the one that runs out first.

**Arithmetic.** A part with ``n`` units each holding ``c`` is needed ``ceil(load / (c x
target))`` times, where the target is the phase's autoscaling target
(``autoscaling.cpuTargetPercent`` for CPU and connections, ``memoryTargetPercent`` for
memory; 70 % and 80 % by default). Each result that is above the configured value becomes an
:class:`Action`, a ``pulumi config set`` of a key the stack file has:

========================================  =================================================
measured                                  key
========================================  =================================================
gateway.connections (sum), gateway.cpu    gateway.maxReplicas (autoscaled) or gateway.replicas
nginx.connections (sum)                   nginx.maxReplicas (autoscaled) or nginx.replicas
postgres.connections (busiest instance)   postgres.maxConnections
postgres.cpu / postgres.memory (Citus)    postgres.shards
pgbouncer.clients (busiest pooler)        pooler.maxClientConn
pgbouncer.server_connections (busiest)    pooler.defaultPoolSize (and postgres.maxConnections
                                          when the pools would no longer fit)
redis.memory (busiest node)               redis.maxMemoryMb (and redis.storageGb to hold its
                                          AOF); in a cluster redis.masters with the same
                                          memory per master
redis.clients (busiest node)              redis.maxClients
========================================  =================================================
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scaling.metrics.model import Reading, Sample
from scaling.model import PhaseSpec


@dataclass(frozen=True)
class Estimate:
    max_concurrent_users: int
    max_concurrent_trips: int | None
    concurrent_users: int | None  # None: no gateway could be read
    concurrent_trips: int | None
    utilization_percentage: float | None
    gateways_read: int
    gateways_unreachable: int


def _values(sample: Sample, key: str) -> list[float]:
    return [r.value for r in sample.readings if r.key == key and r.value is not None]


def _unreachable(sample: Sample, key: str) -> int:
    return sum(1 for r in sample.readings if r.key == key and r.value is None)


def gateway_slots(spec: PhaseSpec) -> int:
    """The gateways the phase can run: the autoscaler's ceiling where it runs."""
    gw = spec.gateway
    return gw.max_replicas if spec.autoscaling.enabled else gw.replicas


def estimate(sample: Sample, spec: PhaseSpec) -> Estimate:
    max_users = gateway_slots(spec) * spec.gateway.connections_per_replica
    max_trips = spec.capacity.trips.max
    connections = _values(sample, "gateway.connections")
    trips = _values(sample, "gateway.active_trips")
    users = round(sum(connections)) if connections else None
    live_trips = round(sum(trips)) if trips else None
    ratios = []
    if users is not None:
        ratios.append(100.0 * users / max_users)
    if live_trips is not None and max_trips:
        ratios.append(100.0 * live_trips / max_trips)
    return Estimate(
        max_concurrent_users=max_users,
        max_concurrent_trips=max_trips,
        concurrent_users=users,
        concurrent_trips=live_trips,
        utilization_percentage=round(max(ratios), 1) if ratios else None,
        gateways_read=len(connections),
        gateways_unreachable=_unreachable(sample, "gateway.connections"),
    )


def units_needed(load: float, per_unit: float, target_percent: float) -> int:
    """Units of ``per_unit`` capacity that carry ``load`` at ``target_percent`` each."""
    if per_unit <= 0 or not 0 < target_percent <= 100:
        raise ValueError(f"per_unit {per_unit} and target {target_percent} % must be positive")
    return max(1, math.ceil(load / (per_unit * target_percent / 100) - 1e-9))


@dataclass(frozen=True)
class Action:
    """Set one stack key to a computed value; ``reason`` says from which measurement."""

    key: str  # dotted key under sikka:, as in the configuration reference
    current: int
    value: int
    reason: str

    def command(self, stack: str) -> str:
        return f"pulumi config set -s {stack} --path sikka:{self.key} {self.value}"


def peak(history: Sequence[Sample], since: float | None = None) -> Sample:
    """One Sample holding, per reading (key and instance), its highest reachable value at or
    after ``since``: the load to size for. A reading never reached stays unreachable."""
    chosen: dict[tuple[str, str], Reading] = {}
    at, source = 0.0, "direct"
    for sample in history:
        if since is not None and sample.at < since:
            continue
        if sample.at >= at:
            at, source = sample.at, sample.source
        for r in sample.readings:
            ident = (r.key, r.instance)
            held = chosen.get(ident)
            if held is None or (
                r.value is not None and (held.value is None or r.value > held.value)
            ):
                chosen[ident] = r
    return Sample(at=at, source=source, readings=tuple(chosen.values()))


def _busiest(sample: Sample, key: str) -> Reading | None:
    readings = [r for r in sample.readings if r.key == key and r.value is not None]
    return max(readings, key=lambda r: r.value or 0.0, default=None)


def _replicas(
    part: str, current: int, maximum: int, needed: int, autoscaled: bool, why: str
) -> Iterable[Action]:
    if autoscaled:
        if needed > maximum:
            yield Action(f"{part}.maxReplicas", maximum, needed, why)
        return
    if needed > current:
        yield Action(f"{part}.replicas", current, needed, why)
        if needed > maximum:  # maxReplicas may not be below replicas
            yield Action(f"{part}.maxReplicas", maximum, needed, why)


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:g}"


def optimisations(sample: Sample, spec: PhaseSpec) -> list[Action]:
    """The actions the measured ``sample`` calls for (use :func:`peak` over a window)."""
    cpu_target = spec.autoscaling.cpu_target_percent
    mem_target = spec.autoscaling.memory_target_percent
    auto = spec.autoscaling.enabled
    actions: list[Action] = []
    gw, nginx, pg, pooler, redis = (
        spec.gateway,
        spec.nginx,
        spec.postgres,
        spec.pooler,
        spec.redis,
    )

    # Gateways: by connections, and by CPU where the gateways' CPU is measured.
    connections = _values(sample, "gateway.connections")
    if connections:
        load = sum(connections)
        needed = units_needed(load, gw.connections_per_replica, cpu_target)
        why = (
            f"{_fmt(load)} WebSocket connections at {cpu_target} % of "
            f"{gw.connections_per_replica} per gateway need {needed} gateways"
        )
        cpu = _values(sample, "gateway.cpu")
        if cpu:
            by_cpu = units_needed(sum(cpu), 100, cpu_target)
            if by_cpu > needed:
                needed = by_cpu
                why = (
                    f"gateway CPU adding up to {_fmt(sum(cpu))} % of one gateway at "
                    f"{cpu_target} % each needs {needed} gateways"
                )
        actions += _replicas("gateway", gw.replicas, gw.max_replicas, needed, auto, why)

    nginx_connections = _values(sample, "nginx.connections")
    if nginx_connections:
        load = sum(nginx_connections)
        needed = units_needed(load, nginx.instance_capacity, cpu_target)
        why = (
            f"{_fmt(load)} Nginx connections at {cpu_target} % of {nginx.instance_capacity} "
            f"per instance ({nginx.worker_processes} workers x {nginx.worker_connections}) "
            f"need {needed} instances"
        )
        actions += _replicas("nginx", nginx.replicas, nginx.max_replicas, needed, auto, why)

    busiest = _busiest(sample, "postgres.connections")
    max_connections = pg.max_connections
    if busiest is not None and busiest.value is not None:
        needed = units_needed(busiest.value, 1, cpu_target)
        if needed > max_connections:
            max_connections = needed
            actions.append(
                Action(
                    "postgres.maxConnections",
                    pg.max_connections,
                    needed,
                    f"{_fmt(busiest.value)} connections on {busiest.instance} at "
                    f"{cpu_target} % need max_connections {needed}",
                )
            )

    if pg.mode == "citus":
        loads = [
            (r, mem_target if r.key.endswith("memory") else cpu_target)
            for r in sample.readings
            if r.tier == "postgres" and r.key.rsplit(".", 1)[-1] in ("cpu", "memory")
        ]
        worst = [(r, r.percent, target) for r, target in loads if r.percent is not None]
        if worst:
            reading, percent, target = max(worst, key=lambda item: item[1] / item[2])
            needed = max(1, math.ceil(pg.shards * percent / target - 1e-9))
            if needed > pg.shards:
                actions.append(
                    Action(
                        "postgres.shards",
                        pg.shards,
                        needed,
                        f"{reading.key} of {reading.instance} at {percent:.0f} % with "
                        f"{pg.shards} shards needs {needed} shards to reach {target} %",
                    )
                )

    if pooler.enabled:
        clients = _busiest(sample, "pgbouncer.clients")
        if clients is not None and clients.value is not None:
            needed = units_needed(clients.value, 1, cpu_target)
            if needed > pooler.max_client_conn:
                actions.append(
                    Action(
                        "pooler.maxClientConn",
                        pooler.max_client_conn,
                        needed,
                        f"{_fmt(clients.value)} clients on {clients.instance} at {cpu_target} % "
                        f"need max_client_conn {needed}",
                    )
                )
        servers = _busiest(sample, "pgbouncer.server_connections")
        if servers is not None and servers.value is not None:
            needed = units_needed(servers.value, 1, cpu_target)
            if needed > pooler.default_pool_size:
                actions.append(
                    Action(
                        "pooler.defaultPoolSize",
                        pooler.default_pool_size,
                        needed,
                        f"{_fmt(servers.value)} server connections in use on "
                        f"{servers.instance} at {cpu_target} % need a pool of {needed}",
                    )
                )
                # The pools must still fit PostgreSQL's connections (scaling.rules).
                fit = pooler.replicas * (needed + pooler.reserve_pool_size) + (
                    pg.superuser_reserved_connections
                )
                if fit > max_connections:
                    actions = [a for a in actions if a.key != "postgres.maxConnections"]
                    actions.append(
                        Action(
                            "postgres.maxConnections",
                            pg.max_connections,
                            fit,
                            f"{pooler.replicas} poolers x (pool {needed} + reserve "
                            f"{pooler.reserve_pool_size}) + {pg.superuser_reserved_connections} "
                            "reserved must fit max_connections",
                        )
                    )

    memory = [r for r in sample.readings if r.key == "redis.memory" and r.percent is not None]
    if memory:
        node = max(memory, key=lambda r: r.percent or 0.0)
        ratio = (node.percent or 0.0) / mem_target
        if redis.mode == "cluster":
            per_master = redis.memory_per_node_mb
            masters = max(1, math.ceil(redis.masters * ratio - 1e-9))
            if masters > redis.masters:
                why = (
                    f"redis.memory of {node.instance} at {node.percent:.0f} % of maxmemory "
                    f"at {mem_target} % needs {masters} masters of {per_master} MB"
                )
                actions.append(Action("redis.masters", redis.masters, masters, why))
                actions.append(
                    Action("redis.maxMemoryMb", redis.max_memory_mb, masters * per_master, why)
                )
        else:
            needed = max(1, math.ceil(redis.max_memory_mb * ratio - 1e-9))
            if needed > redis.max_memory_mb:
                why = (
                    f"redis.memory of {node.instance} at {node.percent:.0f} % of maxmemory "
                    f"at {mem_target} % needs {needed} MB"
                )
                actions.append(Action("redis.maxMemoryMb", redis.max_memory_mb, needed, why))
                # The disk holds the AOF and its rewrite: twice the memory (scaling.rules).
                disk = -(-2 * needed // 1024)
                if disk > redis.storage_gb:
                    actions.append(Action("redis.storageGb", redis.storage_gb, disk, why))
    redis_clients = _busiest(sample, "redis.clients")
    if redis_clients is not None and redis_clients.value is not None:
        needed = units_needed(redis_clients.value, 1, cpu_target)
        if needed > redis.max_clients:
            actions.append(
                Action(
                    "redis.maxClients",
                    redis.max_clients,
                    needed,
                    f"{_fmt(redis_clients.value)} clients on {redis_clients.instance} at "
                    f"{cpu_target} % need maxclients {needed}",
                )
            )
    return actions
