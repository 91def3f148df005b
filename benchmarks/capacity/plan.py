"""What a capacity run does, decided from the phase's spec alone (pure, no I/O).

Defaults are the phase's promises: ``gateway.maxConnections`` WebSockets, and as many trips
as the capacity table's upper figure (``capacity.trips.max``, else ``min`` for an open-ended
range such as scale's 2,000+) while every trip keeps one driver and at least one rider
(``connections // 2``): launch 250 trips of 500 connections, growth 1,000 of 2,000, scale
2,000 of 10,000. The connections beyond one driver per trip are riders, dealt round-robin.

Client source addresses: each address opens at most ``nginx.perClientConnections / 2``
WebSockets, so it stays within the accept gate's per-address limit with room for a
reconnect, and within the upgrade burst (``perClientConnections``) of the rate limit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from scaling.model import PhaseSpec
from scaling.render.nginx import upgrade_rate_per_second

# Opening: never more than this many handshakes in flight nor this many started per second
# (a bounded rate: the run measures what is held, not how fast a flood is absorbed).
DEFAULT_OPEN_RATE = 200.0
DEFAULT_OPEN_CONCURRENCY = 64
DEFAULT_SECONDS = 60
DEFAULT_ROUNDS = 3
# The promises the certificate checks.
P99_LIMIT_MS = 50.0
POOLER_MIN_RATIO = 0.85
# pgbench through the pooler: this many clients per server connection of a pool.
OVERSUBSCRIPTION = 10


class PlanError(ValueError):
    """Options that cannot make a run; the message names the option."""


@dataclass(frozen=True)
class Plan:
    stack: str
    phase: str
    promised_connections: int
    connections: int
    trips: int
    seconds: int
    rounds: int
    per_address: int
    source_addresses: tuple[str, ...]
    upgrade_burst: int
    upgrade_rate_per_second: int
    open_rate: float
    open_concurrency: int
    auth_required: bool
    pooler: bool
    pgbench_direct_clients: int
    pgbench_pooler_clients: int
    pgbench_seconds: int
    redis_requests: int
    redis_clients: int
    redis_pipeline: int

    @property
    def full_size(self) -> bool:
        return self.connections >= self.promised_connections

    @property
    def riders(self) -> int:
        return self.connections - self.trips

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["source_addresses"] = f"{self.source_addresses[0]}..{self.source_addresses[-1]}"
        out["address_count"] = len(self.source_addresses)
        out["riders"] = self.riders
        out["full_size"] = self.full_size
        return out


def trips_for(spec: PhaseSpec, connections: int) -> int:
    """The table's upper figure, as long as every trip keeps a driver and a rider."""
    upper = spec.capacity.trips.max or spec.capacity.trips.min
    return max(1, min(upper, connections // 2))


def source_address(index: int) -> str:
    """127.0.0.2, 127.0.0.3, ... 127.0.0.254, then 127.0.2.1 onwards (never 127.0.0.1,
    which the phase's own processes use, nor 127.0.1.x, the Patroni members')."""
    if index < 253:
        return f"127.0.0.{index + 2}"
    rest = index - 253
    return f"127.0.{2 + rest // 254}.{1 + rest % 254}"


def make_plan(
    spec: PhaseSpec,
    stack: str,
    *,
    connections: int | None = None,
    trips: int | None = None,
    seconds: int = DEFAULT_SECONDS,
    rounds: int = DEFAULT_ROUNDS,
    pgbench_seconds: int = 10,
    redis_requests: int = 100_000,
    open_rate: float = DEFAULT_OPEN_RATE,
) -> Plan:
    promised = spec.gateway.max_connections
    wanted = promised if connections is None else connections
    if wanted < 2:
        raise PlanError("--connections: at least 2 (one driver and one rider)")
    trip_count = trips_for(spec, wanted) if trips is None else trips
    if not 1 <= trip_count <= wanted // 2:
        raise PlanError(
            f"--trips: between 1 and {wanted // 2} for {wanted} connections "
            "(every trip has a driver and at least one rider)"
        )
    if seconds < 1:
        raise PlanError("--seconds: at least 1")
    if rounds < 1:
        raise PlanError("--rounds: at least 1")
    if open_rate <= 0:
        raise PlanError("--open-rate: above 0")
    per_client = spec.nginx.per_client_connections
    per_address = max(1, per_client // 2)
    addresses = tuple(source_address(i) for i in range(math.ceil(wanted / per_address)))
    # The server connections the poolers may open to the primary, all together: direct gets
    # that many clients, the poolers 10 x as many (spread over their addresses).
    pool = spec.pooler.replicas * spec.pooler.default_pool_size
    return Plan(
        stack=stack,
        phase=spec.phase.value,
        promised_connections=promised,
        connections=wanted,
        trips=trip_count,
        seconds=seconds,
        rounds=rounds,
        per_address=per_address,
        source_addresses=addresses,
        upgrade_burst=per_client,
        upgrade_rate_per_second=upgrade_rate_per_second(spec.nginx),
        open_rate=open_rate,
        open_concurrency=DEFAULT_OPEN_CONCURRENCY,
        auth_required=spec.gateway.auth.mode == "required",
        pooler=spec.pooler.enabled,
        pgbench_direct_clients=pool,
        pgbench_pooler_clients=OVERSUBSCRIPTION * pool,
        pgbench_seconds=pgbench_seconds,
        redis_requests=redis_requests,
        redis_clients=50,
        redis_pipeline=16,
    )


@dataclass(frozen=True)
class Member:
    """One connection of the trip load: its trip and whether it drives or rides."""

    index: int
    trip: int
    driver: bool


def members(connections: int, trips: int) -> list[Member]:
    """Connection i < trips drives trip i; the others ride trip (i - trips) % trips."""
    return [
        Member(i, i, True) if i < trips else Member(i, (i - trips) % trips, False)
        for i in range(connections)
    ]


def trip_id(stack: str, trip: int) -> str:
    return f"bench-{stack}-{trip}"
