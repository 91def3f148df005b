"""Async helpers for the gateway tests: in-process gateways, WS and HTTP clients.

pytest-asyncio is not a dependency, so each test drives its own event loop via
:func:`run`, which also puts a hard time bound on the whole scenario.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin, Subprotocol

from gateway.auth import Role, mint_token
from gateway.config import AuthSettings, Settings
from gateway.server import BEARER_PREFIX, SUBPROTOCOL, Gateway

T = TypeVar("T")

STEP = 5.0  # bound for any single await in a test

# The HS256 key of the tests' gateways (at least 32 bytes, as the verifier insists).
TEST_SECRET = "tests-gateway-hs256-key-0123456789abcdef"


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,  # let the OS pick; Gateway.port tells which
        "gateway_id": "gw-test",
        "max_connections": 100,
        "redis_mode": "standalone",
        "redis_password": None,
        "drain_seconds": 2.0,
        "metrics_port": 0,
        # The fan-out, failover and drain tests are about Redis, not about who may do
        # what: their gateways run with authentication off (explicitly, as a stack must
        # say it). test_gateway_auth.py runs gateways with auth_required().
        "auth": AuthSettings(mode="disabled"),
    }
    base.update(overrides)
    return Settings(**base)


def auth_required(**overrides: Any) -> AuthSettings:
    return AuthSettings(**{"mode": "required", "jwt_secret": TEST_SECRET, **overrides})


def token(role: Role, *trips: str, ttl: float = 300, sub: str | None = None, **kw: Any) -> str:
    return mint_token(TEST_SECRET, sub=sub or f"{role}-1", role=role, trips=trips, ttl=ttl, **kw)


def bearer(jwt: str) -> list[Subprotocol]:
    """The subprotocols a client offers to present ``jwt``."""
    return [Subprotocol(SUBPROTOCOL), Subprotocol(BEARER_PREFIX + jwt)]


@asynccontextmanager
async def running_gateway(s: Settings, ready: bool = True) -> AsyncIterator[Gateway]:
    gw = Gateway(s)
    await gw.start()
    try:
        if ready:
            assert await gw.backend.wait_ready(10), f"{s.gateway_id}: redis not ready"
        yield gw
    finally:
        await asyncio.wait_for(gw.drain(), STEP)
        await asyncio.wait_for(gw.stop(), STEP)


async def recv_json(ws: ClientConnection, timeout: float = STEP) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(raw, str), f"expected a text frame, got {raw!r}"
    obj = json.loads(raw)
    assert isinstance(obj, dict)
    return obj


async def recv_until(
    ws: ClientConnection, predicate: Callable[[dict[str, Any]], bool], timeout: float = STEP
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("expected frame not received")
        msg = await recv_json(ws, remaining)
        if predicate(msg):
            return msg


async def no_message(ws: ClientConnection, wait: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(ws.recv(), wait)
    except TimeoutError:
        return True
    return False


@asynccontextmanager
async def ws_client(
    port: int, jwt: str | None = None, origin: str | None = None
) -> AsyncIterator[ClientConnection]:
    """Connected client (presenting ``jwt`` as a bearer subprotocol) whose welcome frame
    was already checked."""
    ws = await asyncio.wait_for(
        connect(
            f"ws://127.0.0.1:{port}/",
            open_timeout=STEP,
            subprotocols=bearer(jwt) if jwt else None,
            origin=Origin(origin) if origin else None,
        ),
        STEP,
    )
    try:
        welcome = await recv_json(ws)
        assert welcome["type"] == "welcome", welcome
        yield ws
    finally:
        await asyncio.wait_for(ws.close(), STEP)


@asynccontextmanager
async def rider_and_driver(
    rider_settings: Settings, driver_settings: Settings
) -> AsyncIterator[tuple[Gateway, Gateway, ClientConnection, ClientConnection]]:
    """Two gateways sharing one Redis: a rider on the first, a driver on the second."""
    async with (
        running_gateway(rider_settings) as a,
        running_gateway(driver_settings) as b,
        ws_client(a.port) as rider,
        ws_client(b.port) as driver,
    ):
        yield a, b, rider, driver


async def subscribe(ws: ClientConnection, trip_id: str) -> None:
    await ws.send(json.dumps({"type": "subscribe", "trip_id": trip_id}))
    reply = await recv_json(ws)
    assert reply == {"type": "subscribed", "trip_id": trip_id}, reply


async def send_location(ws: ClientConnection, trip_id: str, lat: float, lng: float) -> None:
    frame = {"type": "location", "trip_id": trip_id, "lat": lat, "lng": lng, "ts": time.time()}
    await ws.send(json.dumps(frame))


async def published_and_received(
    publisher: ClientConnection, subscriber: ClientConnection, trip_id: str, lat: float
) -> dict[str, Any]:
    """Publish until ``subscriber`` receives the update. "subscribed" is sent once the
    gateway has written SUBSCRIBE to Redis, not once Redis confirmed it, so the first
    update right after a first subscription can race it; tests about who may publish
    retry rather than depend on that timing."""
    deadline = time.monotonic() + STEP
    while time.monotonic() < deadline:
        await send_location(publisher, trip_id, lat, 0.0)
        try:
            return await recv_until(
                subscriber, lambda m: m["type"] == "location" and m["lat"] == lat, 0.5
            )
        except TimeoutError:
            continue
    raise TimeoutError(f"no update for {trip_id} reached the subscriber")


async def http_get(port: int, path: str) -> tuple[int, dict[str, str], str]:
    """Minimal HTTP/1.1 GET over loopback (keeps httpx out of the deps)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), STEP)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), STEP)
    finally:
        writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, body


def metric_value(text: str, name: str, labels: str = "") -> float:
    """Value of one sample in Prometheus text output (0 if absent)."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == wanted:
            return float(value)
    return 0.0
