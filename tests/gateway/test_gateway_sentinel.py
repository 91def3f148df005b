"""Gateway against master + replica + 3 sentinels, including a real failover."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import gw_redis
import pytest
from gw_helpers import (
    http_get,
    recv_json,
    rider_and_driver,
    run,
    send_location,
    settings,
    subscribe,
)
from websockets.asyncio.client import ClientConnection

pytestmark = pytest.mark.integration


def sentinel_settings(setup: gw_redis.SentinelSetup, gateway_id: str) -> Any:
    return settings(
        gateway_id=gateway_id,
        redis_mode="sentinel",
        redis_sentinels=tuple(("127.0.0.1", s.port) for s in setup.sentinels),
        redis_master_name=gw_redis.MASTER_NAME,
        redis_password=gw_redis.PASSWORD,
    )


async def delivered(
    driver: ClientConnection, rider: ClientConnection, trip: str, lat: float, wait: float
) -> bool:
    """Send one update on the driver; True if the rider gets exactly it in time."""
    await send_location(driver, trip, lat, 0.0)
    deadline = time.monotonic() + wait
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            msg = await recv_json(rider, remaining)
        except TimeoutError:
            return False
        if msg.get("type") == "location" and msg.get("lat") == lat:
            return True
    return False


def test_sentinel_fanout_across_gateways(sentinel_setup: gw_redis.SentinelSetup) -> None:
    async def scenario() -> None:
        async with rider_and_driver(
            sentinel_settings(sentinel_setup, "gw-sa"), sentinel_settings(sentinel_setup, "gw-sb")
        ) as (_a, _b, rider, driver):
            await subscribe(rider, "trip-s")
            await send_location(driver, "trip-s", -33.86, 151.21)
            msg = await recv_json(rider)
            assert (msg["trip_id"], msg["lat"], msg["lng"]) == ("trip-s", -33.86, 151.21)
            assert msg["gateway"] == "gw-sb"
            # Both gateways talk to the master Sentinel named, not the replica.
            numsub = gw_redis.cli(sentinel_setup.master.port, "PUBSUB", "NUMSUB", "trip:trip-s")
            assert numsub.split() == ["trip:trip-s", "1"]

    run(scenario())


def test_sentinel_failover_keeps_fanout_working(
    sentinel_setup: gw_redis.SentinelSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = sentinel_setup
    figures: dict[str, float] = {}

    async def scenario() -> None:
        async with rider_and_driver(
            sentinel_settings(setup, "gw-fa"), sentinel_settings(setup, "gw-fb")
        ) as (a, b, rider, driver):
            await subscribe(rider, "trip-f")
            assert await delivered(driver, rider, "trip-f", 1.0, 5)

            setup.master.kill9()
            killed = time.monotonic()
            promoted_at: float | None = None
            recovered_at: float | None = None

            async def watch_promotion() -> None:
                nonlocal promoted_at
                while await asyncio.to_thread(setup.master_port) != setup.replica.port:
                    await asyncio.sleep(0.05)
                promoted_at = time.monotonic()

            watcher = asyncio.create_task(watch_promotion())
            lat = 1.0
            while time.monotonic() - killed < 45:
                lat += 0.001
                if await delivered(driver, rider, "trip-f", round(lat, 6), 1.0):
                    recovered_at = time.monotonic()
                    break
            assert recovered_at is not None, "fan-out did not recover after failover"
            await asyncio.wait_for(watcher, 45)
            assert promoted_at is not None, "sentinel never promoted the replica"
            figures["promotion_s"] = promoted_at - killed
            figures["fanout_recovered_s"] = recovered_at - killed

            # Gateway A re-subscribed on the promoted replica (redis-py's
            # reconnect replays SUBSCRIBE; our rebuild loop is the fallback)
            # and both gateways report healthy again.
            numsub = gw_redis.cli(setup.replica.port, "PUBSUB", "NUMSUB", "trip:trip-f")
            assert numsub.split() == ["trip:trip-f", "1"]
            for gw in (a, b):
                status, _, body = await http_get(gw.port, "/healthz")
                assert status == 200, body
                assert json.loads(body)["redis_ok"] is True
            # And a fresh subscription made after the failover works too.
            await subscribe(rider, "trip-after")
            await send_location(driver, "trip-after", 7.0, 7.0)
            msg = await recv_json(rider)
            assert (msg["trip_id"], msg["lat"]) == ("trip-after", 7.0)

    run(scenario(), 90)
    with capsys.disabled():
        print(
            f"\n[sentinel failover] replica promoted after {figures['promotion_s']:.2f}s, "
            f"cross-gateway fan-out working again after {figures['fanout_recovered_s']:.2f}s "
            "(kill -9 of the master at t=0)"
        )
