"""The fan-out path: one encoded frame shared by every subscriber without compression,
per-client compression when negotiated, and publishes that wait for a pool connection
instead of failing, retried with backoff, so none is lost while Redis is healthy."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import gw_redis
import pytest
from gw_helpers import STEP, recv_until, run, running_gateway, send_location, settings, subscribe
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from gateway import protocol
from gateway.fanout import FanoutBackend, StandaloneBackend
from gateway.server import text_frame


def test_shared_frame_is_what_the_library_would_send() -> None:
    payload = protocol.location_event(protocol.Location("T1", 52.5, 13.4, 1.5), "gw-a", 2.5)
    server = ServerProtocol()
    server.state = OPEN
    server.send_text(payload)
    assert text_frame(payload) == b"".join(server.data_to_send())
    # Longer payloads take the 16-bit length form; still one frame, unmasked.
    long_payload = b'{"x":"' + b"y" * 300 + b'"}'
    server.send_text(long_payload)
    assert text_frame(long_payload) == b"".join(server.data_to_send())


@pytest.mark.integration
@pytest.mark.parametrize("compression", ["none", "deflate"])
def test_plain_and_compressed_subscribers_get_the_same_update(
    redis_standalone: gw_redis.RedisProc, compression: str
) -> None:
    """Riders with and without permessage-deflate on one gateway, the driver on another."""
    url = f"redis://:{gw_redis.PASSWORD}@127.0.0.1:{redis_standalone.port}/0"

    async def scenario() -> None:
        a = settings(gateway_id="gw-frames-a", redis_url=url, compression=compression)
        b = settings(gateway_id="gw-frames-b", redis_url=url, compression=compression)
        async with running_gateway(a) as gw_a, running_gateway(b) as gw_b:
            plain = await connect(f"ws://127.0.0.1:{gw_a.port}/", compression=None)
            deflating = await connect(f"ws://127.0.0.1:{gw_a.port}/")  # offers deflate
            driver = await connect(f"ws://127.0.0.1:{gw_b.port}/", compression=None)
            try:
                assert plain.protocol.extensions == []
                negotiated = [e.name for e in deflating.protocol.extensions]
                assert negotiated == (["permessage-deflate"] if compression == "deflate" else [])
                for ws in (plain, deflating, driver):
                    await recv_until(ws, lambda m: m["type"] == "welcome")
                for ws in (plain, deflating):
                    await subscribe(ws, "T-frames")
                got = []
                for lat in (1.25, 2.5, 3.75):
                    await send_location(driver, "T-frames", lat, 7.0)
                    for ws in (plain, deflating):
                        got.append(
                            await recv_until(ws, lambda m, lat=lat: m.get("lat") == lat, STEP)
                        )
                assert [m["lat"] for m in got] == [1.25, 1.25, 2.5, 2.5, 3.75, 3.75]
                assert all(m["gateway"] == "gw-frames-b" and m["lng"] == 7.0 for m in got)
                assert got[0] == got[1]  # byte-identical updates decode identically
            finally:
                for ws in (plain, deflating, driver):
                    await ws.close()

    run(scenario(), 40)


@pytest.mark.integration
def test_no_publish_lost_when_publishes_outnumber_the_pool(
    redis_standalone: gw_redis.RedisProc,
) -> None:
    """600 concurrent publishes through a pool of 4 connections: all reach a subscriber,
    none fails, and the pool never grew past its size."""
    url = f"redis://:{gw_redis.PASSWORD}@127.0.0.1:{redis_standalone.port}/0"

    async def scenario() -> None:
        received: list[bytes] = []
        backend = StandaloneBackend(
            settings(gateway_id="gw-pool", redis_url=url, redis_max_connections=4),
            lambda channel, payload: received.append(payload),
        )
        await backend.start()
        try:
            assert await backend.wait_ready(10)
            await backend.subscribe("trip:pool")
            await asyncio.gather(
                *(backend.publish("trip:pool", b'{"n":%d}' % n) for n in range(600))
            )
            deadline = asyncio.get_running_loop().time() + STEP
            while len(received) < 600 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            assert sorted(json.loads(p)["n"] for p in received) == list(range(600))
            client: Redis | None = backend._client
            assert client is not None
            pool: Any = client.connection_pool
            assert pool.max_connections == 4
            assert len(pool._available_connections) + len(pool._in_use_connections) <= 4
        finally:
            await backend.close()

    run(scenario(), 60)


class Flaky(FanoutBackend):
    """A backend whose first publishes fail the way an exhausted cluster pool does."""

    def __init__(self, failures: int) -> None:
        super().__init__(lambda channel, payload: None, max_connections=8)
        self.failures = failures
        self.published: list[bytes] = []

    async def _publish(self, channel: str, payload: bytes) -> None:
        if self.failures:
            self.failures -= 1
            from redis.exceptions import MaxConnectionsError

            raise MaxConnectionsError("Too many connections")
        self.published.append(payload)

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def subscribe(self, channel: str) -> None: ...
    async def unsubscribe(self, channel: str) -> None: ...
    async def healthy(self) -> bool:
        return True


def test_failed_publish_retried_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> Flaky:
        backend = Flaky(failures=3)
        await backend.publish("trip:x", b"1")
        return backend

    with caplog.at_level(logging.WARNING, "gateway.fanout"):
        backend = run(scenario())
    assert backend.published == [b"1"]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["publish to redis failed; retrying: MaxConnectionsError: Too many connections"]


class Slow(Flaky):
    """Publishes that take a while, counting how many run at once."""

    def __init__(self) -> None:
        FanoutBackend.__init__(self, lambda channel, payload: None, max_connections=4)
        self.failures = 0
        self.published: list[bytes] = []
        self.running = 0
        self.most = 0

    async def _publish(self, channel: str, payload: bytes) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.01)
        self.running -= 1
        self.published.append(payload)


def test_publishes_beyond_the_pool_wait_for_a_connection() -> None:
    """A pool of 4 (2 for publishing, 2 reserved): 50 publishes at once all succeed,
    never more than 2 in flight (the cluster backend's per-node pools work this way)."""

    async def scenario() -> Slow:
        backend = Slow()
        await asyncio.gather(*(backend.publish("trip:x", b"%d" % n) for n in range(50)))
        return backend

    backend = run(scenario())
    assert sorted(backend.published) == sorted(b"%d" % n for n in range(50))
    assert backend.most == 2
