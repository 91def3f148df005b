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
        async with (
            running_gateway(cluster_settings(redis_cluster, "gw-ca")) as a,
            running_gateway(cluster_settings(redis_cluster, "gw-cb")) as b,
            ws_client(a.port) as rider,
            ws_client(b.port) as driver,
        ):
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
    # The 60 channels hash to many slots, which the 3 primaries split as
    # 0-5460 / 5461-10922 / 10923-16383: every primary carries some.
    assert len(slots) > 50
    assert {s * 3 // 16384 for s in slots} == {0, 1, 2}

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
                got = {}
                while len(got) < n:
                    msg = await recv_json(rider, 10)
                    assert msg["type"] == "location", msg
                    got[msg["trip_id"]] = msg["lat"]
                return got

            got_a, got_b = await asyncio.gather(collect(rider_a, 30), collect(rider_b, 30))
            elapsed = time.monotonic() - started
            assert got_a == {t: i / 10 for i, t in enumerate(trips) if i % 2 == 0}
            assert got_b == {t: i / 10 for i, t in enumerate(trips) if i % 2 == 1}
            # Each gateway only holds subscriptions for its own riders' trips.
            assert a.backend.channels == {f"trip:{t}" for t in trips[0::2]}
            assert b.backend.channels == {f"trip:{t}" for t in trips[1::2]}
            return {"elapsed": elapsed}

    figures = run(scenario(), 60)
    assert figures["elapsed"] < 10
