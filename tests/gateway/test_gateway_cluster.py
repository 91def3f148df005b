"""Gateway against a 6-node Redis Cluster (3 primaries + 3 replicas)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import gw_redis
import pytest
from gw_helpers import (
    recv_json,
    rider_and_driver,
    run,
    running_gateway,
    send_location,
    settings,
    subscribe,
    ws_client,
)
from redis.crc import key_slot

pytestmark = pytest.mark.integration


def cluster_settings(setup: gw_redis.ClusterSetup, gateway_id: str) -> Any:
    return settings(
        gateway_id=gateway_id,
        redis_mode="cluster",
        redis_cluster_nodes=tuple(("127.0.0.1", n.port) for n in setup.nodes[:3]),
        redis_password=gw_redis.PASSWORD,
    )


def test_cluster_fanout_across_gateways(redis_cluster: gw_redis.ClusterSetup) -> None:
    async def scenario() -> None:
        async with rider_and_driver(
            cluster_settings(redis_cluster, "gw-ca"), cluster_settings(redis_cluster, "gw-cb")
        ) as (_a, _b, rider, driver):
            await subscribe(rider, "trip-c")
            await send_location(driver, "trip-c", 48.85, 2.35)
            msg = await recv_json(rider)
            assert (msg["trip_id"], msg["lat"], msg["lng"]) == ("trip-c", 48.85, 2.35)
            assert msg["gateway"] == "gw-cb"

            # Sharded pub/sub: exactly one node (the slot's primary) holds
            # the subscription, instead of a broadcast to all six.
            counts = [
                gw_redis.cli(n.port, "PUBSUB", "SHARDNUMSUB", "trip:trip-c").split()[-1]
                for n in redis_cluster.nodes
            ]
            assert sorted(counts) == ["0"] * 5 + ["1"], counts

            # Leave and come back: the per-node connection is dropped when its
            # last channel goes, and a new one is made on the next subscribe.
            await rider.send(json.dumps({"type": "unsubscribe", "trip_id": "trip-c"}))
            assert (await recv_json(rider))["type"] == "unsubscribed"
            await subscribe(rider, "trip-c")
            await send_location(driver, "trip-c", 1.0, 1.0)
            assert (await recv_json(rider))["lat"] == 1.0

    run(scenario())


def test_cluster_many_trips_spread_over_slots(redis_cluster: gw_redis.ClusterSetup) -> None:
    trips = [f"trip-{i}" for i in range(60)]
    slots = {key_slot(f"trip:{t}".encode()) for t in trips}
    assert len(slots) > 50  # the 60 channels really are spread over the hash space

    async def scenario() -> dict[str, float]:
        async with (
            running_gateway(cluster_settings(redis_cluster, "gw-ma")) as a,
            running_gateway(cluster_settings(redis_cluster, "gw-mb")) as b,
            ws_client(a.port) as rider_a,
            ws_client(b.port) as rider_b,
            ws_client(a.port) as driver_a,
            ws_client(b.port) as driver_b,
        ):
            # Even trips watched on A, odd trips on B; drivers publish on the
            # *other* gateway so every delivery crosses Redis.
            for i, trip in enumerate(trips):
                await subscribe(rider_a if i % 2 == 0 else rider_b, trip)
            started = time.monotonic()
            for i, trip in enumerate(trips):
                await send_location(driver_b if i % 2 == 0 else driver_a, trip, i / 10, 0.0)

            async def collect(rider: Any, n: int) -> dict[str, float]:
                got: dict[str, float] = {}
                while len(got) < n:
                    msg = await recv_json(rider, 10)
                    assert msg["type"] == "location", msg
                    got[msg["trip_id"]] = msg["lat"]
                return got

            got_a, got_b = await asyncio.gather(collect(rider_a, 30), collect(rider_b, 30))
            elapsed = time.monotonic() - started
            assert got_a == {t: i / 10 for i, t in enumerate(trips) if i % 2 == 0}
            assert got_b == {t: i / 10 for i, t in enumerate(trips) if i % 2 == 1}
            # Every primary carries some of the sharded subscriptions, and
            # replicas carry none (we subscribe where SPUBLISH lands).
            roles = redis_cluster.roles()
            per_node = {
                n.port: len(gw_redis.cli(n.port, "PUBSUB", "SHARDCHANNELS").split())
                for n in redis_cluster.nodes
            }
            assert all(per_node[p] > 0 for p, r in roles.items() if r == "master"), (
                per_node,
                roles,
            )
            assert all(per_node[p] == 0 for p, r in roles.items() if r == "slave"), (
                per_node,
                roles,
            )
            assert sorted(roles.values()) == ["master"] * 3 + ["slave"] * 3
            assert sum(per_node.values()) == len(trips)
            # Each gateway only holds subscriptions for its own riders' trips.
            assert a.backend.channels == {f"trip:{t}" for t in trips[0::2]}
            assert b.backend.channels == {f"trip:{t}" for t in trips[1::2]}
            return {"elapsed": elapsed}

    figures = run(scenario(), 60)
    assert figures["elapsed"] < 10


def test_cluster_primary_failover_reroutes_subscriptions(
    disposable_cluster: gw_redis.ClusterSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = disposable_cluster
    figures: dict[str, float] = {}

    async def delivered(driver: Any, rider: Any, lat: float, wait: float) -> bool:
        await send_location(driver, "trip-k", lat, 0.0)
        deadline = time.monotonic() + wait
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                msg = await recv_json(rider, remaining)
            except TimeoutError:
                return False
            if msg.get("type") == "location" and msg.get("lat") == lat:
                return True
        return False

    async def scenario() -> None:
        async with rider_and_driver(
            cluster_settings(setup, "gw-ka"), cluster_settings(setup, "gw-kb")
        ) as (a, _b, rider, driver):
            await subscribe(rider, "trip-k")
            assert await delivered(driver, rider, 1.0, 5)
            owner = next(
                n
                for n in setup.nodes
                if gw_redis.cli(n.port, "PUBSUB", "SHARDNUMSUB", "trip:trip-k").split()[-1] == "1"
            )
            owner.kill9()
            killed = time.monotonic()
            lat = 1.0
            recovered_at = None
            while time.monotonic() - killed < 40:
                lat = round(lat + 0.001, 6)
                if await delivered(driver, rider, lat, 1.0):
                    recovered_at = time.monotonic()
                    break
            assert recovered_at is not None, "fan-out did not recover after primary failure"
            figures["recovered_s"] = recovered_at - killed
            # The subscription now lives on the promoted replica.
            holders = [
                n.port
                for n in setup.nodes
                if n.alive()
                and gw_redis.cli(n.port, "PUBSUB", "SHARDNUMSUB", "trip:trip-k").split()[-1] == "1"
            ]
            assert len(holders) == 1 and holders[0] != owner.port
            assert a.backend.resubscribes >= 1
            assert await a.backend.wait_ready(5)

    run(scenario(), 60)
    with capsys.disabled():
        print(
            f"\n[cluster failover] sharded fan-out working again "
            f"{figures['recovered_s']:.2f}s after kill -9 of the channel's primary"
        )
