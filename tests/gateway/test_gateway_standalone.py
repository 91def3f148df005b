"""Gateway against a real standalone redis-server (in-process gateways)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import gw_redis
import pytest
from gw_helpers import (
    http_get,
    metric_value,
    no_message,
    recv_json,
    recv_until,
    run,
    running_gateway,
    send_location,
    settings,
    subscribe,
    ws_client,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gateway.config import Settings

pytestmark = pytest.mark.integration


def standalone(rp: gw_redis.RedisProc, gateway_id: str, **kw: Any) -> Settings:
    return settings(
        gateway_id=gateway_id,
        redis_mode="standalone",
        redis_url=f"redis://127.0.0.1:{rp.port}/0",
        redis_password=gw_redis.PASSWORD,
        **kw,
    )


def test_welcome_frame_names_instance(redis_standalone: gw_redis.RedisProc) -> None:
    async def scenario() -> None:
        async with (
            running_gateway(standalone(redis_standalone, "gw-welcome")) as gw,
            connect(f"ws://127.0.0.1:{gw.port}/") as ws,
        ):
            assert await recv_json(ws) == {"type": "welcome", "gateway": "gw-welcome"}

    run(scenario())


def test_location_fans_out_across_two_gateways(redis_standalone: gw_redis.RedisProc) -> None:
    async def scenario() -> None:
        async with (
            running_gateway(standalone(redis_standalone, "gw-a")) as a,
            running_gateway(standalone(redis_standalone, "gw-b")) as b,
            ws_client(a.port) as rider,
            ws_client(a.port) as other_rider,
            ws_client(b.port) as driver,
        ):
            await subscribe(rider, "trip-1")
            await subscribe(other_rider, "trip-2")
            # Only gateway A has local subscribers, so only A subscribes in Redis.
            numsub = gw_redis.cli(redis_standalone.port, "PUBSUB", "NUMSUB", "trip:trip-1")
            assert numsub.split() == ["trip:trip-1", "1"]

            await send_location(driver, "trip-1", 52.52, 13.405)
            msg = await recv_json(rider)
            assert msg["type"] == "location"
            assert (msg["trip_id"], msg["lat"], msg["lng"]) == ("trip-1", 52.52, 13.405)
            assert msg["gateway"] == "gw-b"  # origin instance
            assert isinstance(msg["server_ts"], float)
            # A rider of another trip gets nothing; the driver gets no echo.
            assert await no_message(other_rider)
            assert await no_message(driver, 0.1)

            # Last local subscriber leaves -> A unsubscribes in Redis.
            await rider.send(json.dumps({"type": "unsubscribe", "trip_id": "trip-1"}))
            assert await recv_json(rider) == {"type": "unsubscribed", "trip_id": "trip-1"}
            numsub = gw_redis.cli(redis_standalone.port, "PUBSUB", "NUMSUB", "trip:trip-1")
            assert numsub.split() == ["trip:trip-1", "0"]
            await send_location(driver, "trip-1", 1.0, 2.0)
            assert await no_message(rider)

    run(scenario())


BAD_FRAMES: list[tuple[str | bytes, str]] = [
    ("not json", "invalid JSON"),
    ('{"type": "teleport"}', "unknown type"),
    ('{"type": "location", "trip_id": "t", "lat": 91, "lng": 0, "ts": 1}', "invalid lat"),
    ('{"type": "subscribe"}', "missing field: trip_id"),
    (b"\x00\x01binary", "binary frames are not supported"),
]


def test_bad_frames_get_errors_and_connection_survives(
    redis_standalone: gw_redis.RedisProc,
) -> None:
    async def scenario() -> None:
        async with (
            running_gateway(standalone(redis_standalone, "gw-bad")) as gw,
            ws_client(gw.port) as ws,
        ):
            for frame, expected in BAD_FRAMES:
                await ws.send(frame)
                reply = await recv_json(ws)
                assert reply["type"] == "error"
                assert expected in reply["error"], (frame, reply)
            # Still usable: subscribe and receive our own trip's update.
            await subscribe(ws, "trip-ok")
            await send_location(ws, "trip-ok", 1.5, 2.5)
            msg = await recv_until(ws, lambda m: m["type"] == "location")
            assert msg["lat"] == 1.5

    run(scenario())


def test_connection_limit_closes_with_1013(redis_standalone: gw_redis.RedisProc) -> None:
    async def scenario() -> None:
        s = standalone(redis_standalone, "gw-limit", max_connections=2)
        async with running_gateway(s) as gw, ws_client(gw.port), ws_client(gw.port):
            async with connect(f"ws://127.0.0.1:{gw.port}/") as third:
                with pytest.raises(ConnectionClosed) as info:
                    await asyncio.wait_for(third.recv(), 5)
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1013
            assert "limit" in info.value.rcvd.reason
            # Readiness says so (load balancers route elsewhere); liveness stays up.
            status, _, body = await http_get(gw.port, "/healthz")
            assert (status, json.loads(body)["status"]) == (503, "full")
            status, _, body = await http_get(gw.port, "/livez")
            assert (status, json.loads(body)["status"]) == (200, "alive")
            _, _, body = await http_get(gw.metrics_port, "/metrics")
            assert metric_value(body, "gateway_rejected_connections_total", 'reason="limit"') == 1
            assert metric_value(body, "gateway_open_connections") == 2

    run(scenario())


def test_healthz_and_metrics_reflect_traffic(redis_standalone: gw_redis.RedisProc) -> None:
    async def scenario() -> None:
        async with running_gateway(standalone(redis_standalone, "gw-obs")) as gw:
            status, headers, body = await http_get(gw.port, "/healthz")
            assert status == 200
            assert headers["content-type"] == "application/json"
            health = json.loads(body)
            assert health["status"] == "ok"
            assert health["redis_ok"] is True
            assert health["open_connections"] == 0

            # /metrics is served on its own port only.
            status, _, _ = await http_get(gw.port, "/metrics")
            assert status == 404
            status, headers, before = await http_get(gw.metrics_port, "/metrics")
            assert status == 200
            assert headers["content-type"].startswith("text/plain")
            assert "gateway_fanout_latency_seconds_bucket" in before
            assert metric_value(before, "gateway_messages_in_total", 'type="location"') == 0

            async with ws_client(gw.port) as ws:
                await subscribe(ws, "trip-m")
                for i in range(3):
                    await send_location(ws, "trip-m", 10.0 + i, 20.0)
                    await recv_until(ws, lambda m: m["type"] == "location")
                await ws.send("garbage")
                await recv_json(ws)
                _, _, body = await http_get(gw.port, "/healthz")
                assert json.loads(body)["open_connections"] == 1

                _, _, after = await http_get(gw.metrics_port, "/metrics")
                assert metric_value(after, "gateway_open_connections") == 1
                assert metric_value(after, "gateway_messages_in_total", 'type="location"') == 3
                assert metric_value(after, "gateway_messages_in_total", 'type="invalid"') == 1
                assert metric_value(after, "gateway_messages_out_total", 'type="location"') == 3
                assert metric_value(after, "gateway_fanout_latency_seconds_count") == 3
                # On loopback every delivery is far below a second.
                assert metric_value(after, "gateway_fanout_latency_seconds_bucket", 'le="1.0"') == 3

    run(scenario())


def test_healthz_503_when_redis_unreachable() -> None:
    async def scenario() -> None:
        dead = gw_redis.free_port()  # nothing listens here
        s = settings(gateway_id="gw-dead", redis_url=f"redis://127.0.0.1:{dead}/0")
        async with running_gateway(s, ready=False) as gw:
            status, _, body = await http_get(gw.port, "/healthz")
            assert status == 503
            health = json.loads(body)
            assert health["redis_ok"] is False
            assert health["status"] == "redis_unavailable"
            # A driver is told when its update could not be published.
            async with ws_client(gw.port) as ws:
                await send_location(ws, "trip-x", 1.0, 1.0)
                reply = await recv_json(ws, 15)
                assert reply == {"type": "error", "error": "publish failed, please resend"}

    run(scenario(), 40)
