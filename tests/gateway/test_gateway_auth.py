"""The attacks of issue 8, replayed against live gateways (in-process, real Redis), each
refused the way gateway/README.md promises: close 4401/4403 at the handshake, an error
frame for a forbidden frame on an open connection, 4429 for a flood."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import gw_redis
import pytest
from gw_helpers import (
    STEP,
    auth_required,
    bearer,
    http_get,
    metric_value,
    no_message,
    published_and_received,
    recv_json,
    recv_until,
    run,
    running_gateway,
    send_location,
    settings,
    subscribe,
    token,
    ws_client,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from gateway.auth import LEEWAY_SECONDS
from gateway.config import Settings

pytestmark = pytest.mark.integration

APP = "https://app.example.com"


def secured(rp: gw_redis.RedisProc, gateway_id: str, **kw: Any) -> Settings:
    return settings(
        gateway_id=gateway_id,
        redis_url=f"redis://127.0.0.1:{rp.port}/0",
        redis_password=gw_redis.PASSWORD,
        auth=kw.pop("auth", auth_required(allowed_origins=(APP,))),
        **kw,
    )


async def closed_with(port: int, **connect_args: Any) -> tuple[int, str]:
    """Open a connection that the gateway refuses: (close code, reason)."""
    path = connect_args.pop("path", "/")
    async with connect(f"ws://127.0.0.1:{port}{path}", open_timeout=STEP, **connect_args) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), STEP)
    assert info.value.rcvd is not None, "closed without a close frame"
    return info.value.rcvd.code, info.value.rcvd.reason


async def error_for(ws: ClientConnection, frame: dict[str, Any] | str) -> str:
    await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
    reply = await recv_json(ws)
    assert reply["type"] == "error", reply
    return str(reply["error"])


def location(trip: str, lat: float = 0.0, lng: float = 0.0) -> dict[str, Any]:
    return {"type": "location", "trip_id": trip, "lat": lat, "lng": lng, "ts": time.time()}


def test_no_token_or_a_bad_one_is_closed_with_4401(redis_standalone: gw_redis.RedisProc) -> None:
    async def scenario() -> None:
        async with running_gateway(secured(redis_standalone, "gw-auth-none")) as gw:
            assert await closed_with(gw.port) == (4401, "missing token")
            expired = token("rider", "T1", ttl=-(LEEWAY_SECONDS + 60))
            assert await closed_with(gw.port, subprotocols=bearer(expired)) == (
                4401,
                "token expired",
            )
            assert await closed_with(gw.port, path="/?token=not-a-jwt") == (
                4401,
                "invalid token: malformed",
            )
            from gateway.auth import mint_token

            forged = mint_token("an-attackers-own-key-of-32-bytes!", sub="x", role="ops", trips=[])
            assert await closed_with(gw.port, subprotocols=bearer(forged)) == (
                4401,
                "invalid token: bad signature",
            )
            _, _, body = await http_get(gw.metrics_port, "/metrics")
            rejected = 'reason="unauthenticated"'
            assert metric_value(body, "gateway_rejected_connections_total", rejected) == 4
            assert metric_value(body, "gateway_open_connections") == 0

    run(scenario())


def test_token_in_the_query_string_works_too(redis_standalone: gw_redis.RedisProc) -> None:
    async def scenario() -> None:
        async with running_gateway(secured(redis_standalone, "gw-auth-query")) as gw:
            jwt = token("rider", "T1")
            async with connect(f"ws://127.0.0.1:{gw.port}/?client_id=c1&token={jwt}") as ws:
                assert (await recv_json(ws))["type"] == "welcome"
                await subscribe(ws, "T1")
            # The bearer subprotocol: the server answers with sikka.v1, never the token.
            async with connect(f"ws://127.0.0.1:{gw.port}/", subprotocols=bearer(jwt)) as ws:
                assert ws.subprotocol == "sikka.v1"
                assert (await recv_json(ws))["type"] == "welcome"
            # Two different tokens at once are ambiguous.
            other = token("rider", "T2")
            code, reason = await closed_with(
                gw.port, path=f"/?token={other}", subprotocols=bearer(jwt)
            )
            assert (code, reason) == (4401, "more than one token presented")

    run(scenario())


def test_origin_allow_list(redis_standalone: gw_redis.RedisProc) -> None:
    async def scenario() -> None:
        async with running_gateway(secured(redis_standalone, "gw-auth-origin")) as gw:
            jwt = token("rider", "T1")
            evil = Origin("https://evil.example")
            assert await closed_with(gw.port, subprotocols=bearer(jwt), origin=evil) == (
                4403,
                "origin not allowed",
            )
            # Refused even without a token: the Origin is checked first.
            assert await closed_with(gw.port, origin=evil) == (4403, "origin not allowed")
            async with ws_client(gw.port, jwt, origin=APP) as ws:  # the app's own page
                await subscribe(ws, "T1")
            async with ws_client(gw.port, jwt) as ws:  # a native app: no Origin at all
                await subscribe(ws, "T1")
            _, _, body = await http_get(gw.metrics_port, "/metrics")
            forbidden = 'reason="forbidden"'
            assert metric_value(body, "gateway_rejected_connections_total", forbidden) == 2

    run(scenario())


def test_a_stranger_cannot_watch_or_move_another_riders_trip(
    redis_standalone: gw_redis.RedisProc,
) -> None:
    """The reported attack: a stranger moved another rider's driver to 0,0. The rider and
    driver of T1 are on gateway A, the stranger (a driver of T9) on gateway B."""

    async def scenario() -> None:
        async with (
            running_gateway(secured(redis_standalone, "gw-auth-a")) as a,
            running_gateway(secured(redis_standalone, "gw-auth-b")) as b,
            ws_client(a.port, token("rider", "T1", sub="alice")) as rider,
            ws_client(b.port, token("driver", "T1", sub="bob")) as driver,
            ws_client(b.port, token("driver", "T9", sub="mallory")) as stranger,
        ):
            await subscribe(rider, "T1")
            # The stranger may neither watch T1 nor publish for it...
            assert await error_for(stranger, {"type": "subscribe", "trip_id": "T1"}) == (
                "forbidden: trip 'T1' is not in your token"
            )
            assert await error_for(stranger, location("T1")) == (
                "forbidden: trip 'T1' is not in your token"
            )
            # ...so the rider never sees 0,0, while the real driver's update arrives,
            # from the other gateway, through Redis.
            assert await no_message(rider)
            await send_location(driver, "T1", 36.8, 10.18)
            update = await recv_json(rider)
            assert (update["lat"], update["lng"], update["gateway"]) == (36.8, 10.18, "gw-auth-b")
            # The stranger's connection stays open and usable for its own trip.
            await subscribe(stranger, "T9")
            own = await published_and_received(stranger, stranger, "T9", 1.0)
            assert own["trip_id"] == "T9"
            _, _, body = await http_get(b.metrics_port, "/metrics")
            assert metric_value(body, "gateway_denied_frames_total", 'reason="forbidden"') == 2

    run(scenario())


def test_roles(redis_standalone: gw_redis.RedisProc) -> None:
    async def scenario() -> None:
        async with (
            running_gateway(secured(redis_standalone, "gw-auth-roles")) as gw,
            ws_client(gw.port, token("rider", "T1")) as rider,
            ws_client(gw.port, token("driver", "T1", sub="d1")) as driver,
            ws_client(gw.port, token("driver", "T2", sub="d2")) as other_driver,
            ws_client(gw.port, token("ops")) as ops,
        ):
            # A rider cannot publish, not even for its own trip.
            assert await error_for(rider, location("T1")) == (
                "forbidden: a rider may not publish locations"
            )
            # A driver cannot publish another driver's trip.
            assert await error_for(other_driver, location("T1")) == (
                "forbidden: trip 'T1' is not in your token"
            )
            # Ops watch any trip and publish none.
            await subscribe(ops, "T1")
            await subscribe(ops, "T2")
            assert await error_for(ops, location("T1")) == (
                "forbidden: ops may not publish locations"
            )
            # The driver of T1 may watch and publish T1.
            await subscribe(driver, "T1")
            await send_location(driver, "T1", 5.0, 5.0)
            for ws in (driver, ops):
                assert (await recv_until(ws, lambda m: m["type"] == "location"))["lat"] == 5.0
            # Unsubscribing is always allowed, also from a trip one never had.
            await rider.send(json.dumps({"type": "unsubscribe", "trip_id": "T2"}))
            assert await recv_json(rider) == {"type": "unsubscribed", "trip_id": "T2"}

    run(scenario())


def test_a_token_that_expires_closes_its_connection_with_4401(
    redis_standalone: gw_redis.RedisProc,
) -> None:
    async def scenario() -> None:
        async with running_gateway(secured(redis_standalone, "gw-auth-exp")) as gw:
            # Accepted within the leeway, then closed when the leeway runs out (~1 s).
            jwt = token("rider", "T1", ttl=-(LEEWAY_SECONDS - 1))
            async with ws_client(gw.port, jwt) as ws:
                await subscribe(ws, "T1")
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        await asyncio.wait_for(ws.recv(), 10)
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (4401, "token expired")

    run(scenario())


HOSTILE_FRAMES = [
    pytest.param(
        '{"type":"location","trip_id":"T1","lat":' + "9" * 400 + ',"lng":0,"ts":1}',
        "invalid JSON: numbers are limited to 32 characters",
        id="400-digit-number",
    ),
    pytest.param(
        "[" * 1900 + "]" * 1900,
        "invalid JSON: nested deeper than 8 levels",
        id="1900-deep-list",
    ),
    pytest.param(
        '{"a":' * 1900 + "1" + "}" * 1900,
        "frame too large: at most 4096 characters",
        id="1900-deep-object",
    ),
    pytest.param(
        '{"type":"subscribe","trip_id":"T1","x":' + "[" * 9 + "]" * 9 + "}",
        "invalid JSON: nested deeper than 8 levels",
        id="9-deep",
    ),
    pytest.param(
        '{"type":"location","trip_id":"T1","lat":1e999,"lng":0,"ts":1}',
        "invalid lat: must be finite",
        id="inf",
    ),
    pytest.param("x" * 10_000, "frame too large: at most 4096 characters", id="10k-frame"),
]


@pytest.mark.parametrize(("frame", "error"), HOSTILE_FRAMES)
def test_hostile_frames_get_an_error_frame_and_the_connection_stays(
    redis_standalone: gw_redis.RedisProc, frame: str, error: str
) -> None:
    async def scenario() -> None:
        async with (
            running_gateway(secured(redis_standalone, "gw-auth-frames")) as gw,
            ws_client(gw.port, token("driver", "T1")) as ws,
        ):
            assert await error_for(ws, frame) == error
            await subscribe(ws, "T1")
            assert (await published_and_received(ws, ws, "T1", 1.0))["trip_id"] == "T1"

    run(scenario())


def test_a_frame_past_64_kib_closes_with_1009(redis_standalone: gw_redis.RedisProc) -> None:
    async def scenario() -> None:
        async with (
            running_gateway(secured(redis_standalone, "gw-auth-huge")) as gw,
            ws_client(gw.port, token("rider", "T1")) as ws,
        ):
            await ws.send("x" * 70_000)
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), STEP)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009

    run(scenario())


def test_a_flood_gets_error_frames_then_4429(redis_standalone: gw_redis.RedisProc) -> None:
    async def scenario() -> None:
        s = secured(redis_standalone, "gw-auth-flood", rate_limit=5.0, rate_burst=5)
        async with running_gateway(s) as gw, ws_client(gw.port, token("rider", "T1")) as ws:
            frame = json.dumps({"type": "subscribe", "trip_id": "T1"})
            for _ in range(200):
                await ws.send(frame)
            replies: list[dict[str, Any]] = []
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    replies.append(await recv_json(ws))
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (4429, "rate limit exceeded")
            # The burst went through, then frames were refused with an error each.
            kinds = [r.get("type") for r in replies]
            assert kinds[:5] == ["subscribed"] * 5
            errors = [r["error"] for r in replies if r["type"] == "error"]
            assert errors and set(errors) == {"rate limit exceeded: at most 5 frames/s"}
            _, _, body = await http_get(gw.metrics_port, "/metrics")
            assert metric_value(body, "gateway_policy_closes_total", 'reason="rate_limit"') == 1

    run(scenario())


def test_auth_disabled_lets_anyone_in(redis_standalone: gw_redis.RedisProc) -> None:
    """mode disabled (a stack must say so explicitly): no token, every trip."""

    async def scenario() -> None:
        s = secured(redis_standalone, "gw-auth-off", auth=settings().auth)
        assert s.auth.mode == "disabled"
        async with running_gateway(s) as gw, ws_client(gw.port) as ws:
            await subscribe(ws, "T1")
            assert (await published_and_received(ws, ws, "T1", 3.0))["trip_id"] == "T1"

    run(scenario())
