"""`python -m gateway` as a real process: config errors and SIGTERM drain."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gw_redis
import pytest
from gw_helpers import TEST_SECRET, bearer, http_get, recv_json, run, token
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parents[2]


def gateway_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "REDIS_", "WEBSOCKET_"))
    }
    env["PYTHONPATH"] = str(ROOT)
    env["GATEWAY_JWT_SECRET"] = TEST_SECRET
    env["GATEWAY_METRICS_PORT"] = str(gw_redis.free_port())
    env.update(extra)
    return env


@contextmanager
def gateway_process(env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def run_gateway(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the gateway with ``env`` until it exits (a bad configuration stops it at once)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_bad_config_exits_nonzero_naming_the_variable() -> None:
    env = gateway_env(REDIS_MODE="sentinel", REDIS_SENTINELS="127.0.0.1:notaport")
    out = run_gateway(env)
    assert out.returncode == 2
    assert "REDIS_SENTINELS" in out.stderr
    assert "non-numeric port" in out.stderr


@pytest.mark.integration
def test_password_is_never_logged(redis_standalone: gw_redis.RedisProc) -> None:
    port = gw_redis.free_port()
    env = gateway_env(
        GATEWAY_HOST="127.0.0.1",
        GATEWAY_PORT=str(port),
        REDIS_URL=f"redis://127.0.0.1:{redis_standalone.port}/0",
        REDIS_PASSWORD=gw_redis.PASSWORD,
        GATEWAY_DRAIN_SECONDS="1",
    )
    with gateway_process(env) as proc:
        run(wait_healthy(port))
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "listening on" in output
    assert gw_redis.PASSWORD not in output
    assert TEST_SECRET not in output


def test_required_auth_without_a_key_exits_2() -> None:
    env = gateway_env(REDIS_URL="redis://127.0.0.1:1/0")
    del env["GATEWAY_JWT_SECRET"]
    out = run_gateway(env)
    assert out.returncode == 2
    assert "GATEWAY_JWT_SECRET: is required when GATEWAY_AUTH_MODE=required" in out.stderr


async def wait_healthy(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, _, _ = await http_get(port, "/healthz")
            if status == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError("gateway never became healthy")


async def stubborn_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client that completes the handshake (its token in the query string),
    then ignores everything (it never answers the close frame), so the drain must wait
    for it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /?token={token('rider', 'trip-1')} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


@pytest.mark.integration
def test_sigterm_drains_with_1001_and_exits_zero(redis_standalone: gw_redis.RedisProc) -> None:
    port = gw_redis.free_port()
    drain = 2.0
    env = gateway_env(
        GATEWAY_HOST="127.0.0.1",
        GATEWAY_PORT=str(port),
        GATEWAY_ID="gw-proc",
        REDIS_MODE="standalone",
        REDIS_URL=f"redis://127.0.0.1:{redis_standalone.port}/0",
        REDIS_PASSWORD=gw_redis.PASSWORD,
        GATEWAY_DRAIN_SECONDS=str(drain),
        DATABASE_URL="postgresql://ignored.invalid/db",  # set by the platform; unused
    )

    async def scenario(proc: subprocess.Popen[str]) -> float:
        await wait_healthy(port)
        jwt = token("rider", "trip-1")
        async with connect(f"ws://127.0.0.1:{port}/", subprotocols=bearer(jwt)) as ws:
            assert (await recv_json(ws))["gateway"] == "gw-proc"
            _, stubborn = await stubborn_client(port)

            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 5)
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1001

            # Still draining (the stubborn client holds it open): unhealthy,
            # and new WebSocket clients are turned away.
            status, _, body = await http_get(port, "/healthz")
            assert status == 503
            assert json.loads(body)["status"] == "draining"
            with pytest.raises(Exception, match="503"):
                async with connect(
                    f"ws://127.0.0.1:{port}/", open_timeout=5, subprotocols=bearer(jwt)
                ):
                    pass

            while proc.poll() is None and time.monotonic() - signalled < drain + 10:
                await asyncio.sleep(0.05)
            stubborn.close()
            return time.monotonic() - signalled

    with gateway_process(env) as proc:
        took = run(scenario(proc), 40)
        output, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0, output
    # It waited for the drain window before giving up on the stubborn client.
    assert drain - 0.2 <= took <= drain + 6, took
    assert "draining" in output


@pytest.mark.integration
def test_several_processes_share_the_port_and_the_connection_limit(
    redis_standalone: gw_redis.RedisProc,
) -> None:
    """GATEWAY_PROCESSES=3 on one port: updates cross between the processes through Redis,
    the container holds WEBSOCKET_MAX_CONNECTIONS in all (the next client gets 1013), and
    SIGTERM drains every process and exits 0."""
    port = gw_redis.free_port()
    metrics = gw_redis.free_port()
    env = gateway_env(
        GATEWAY_HOST="127.0.0.1",
        GATEWAY_PORT=str(port),
        GATEWAY_METRICS_PORT=str(metrics),
        GATEWAY_ID="gw-multi",
        GATEWAY_PROCESSES="3",
        WEBSOCKET_MAX_CONNECTIONS="12",
        REDIS_URL=f"redis://127.0.0.1:{redis_standalone.port}/0",
        REDIS_PASSWORD=gw_redis.PASSWORD,
        GATEWAY_DRAIN_SECONDS="1",
    )

    async def scenario() -> tuple[set[str], int]:
        await wait_healthy(port)
        clients = []
        gateways: set[str] = set()
        for n in range(12):
            jwt = token("driver" if n == 0 else "rider", "trip-multi", sub=f"u{n}")
            ws = await connect(f"ws://127.0.0.1:{port}/", subprotocols=bearer(jwt))
            gateways.add((await recv_json(ws))["gateway"])
            clients.append(ws)
        for ws in clients[1:]:
            await ws.send(json.dumps({"type": "subscribe", "trip_id": "trip-multi"}))
            assert (await recv_json(ws))["type"] == "subscribed"
        await clients[0].send(
            json.dumps(
                {"type": "location", "trip_id": "trip-multi", "lat": 1.5, "lng": 2.5, "ts": 3.0}
            )
        )
        for ws in clients[1:]:
            update = await recv_json(ws)
            assert (update["type"], update["lat"]) == ("location", 1.5)
        jwt = token("rider", "trip-multi", sub="u13")
        extra = await connect(f"ws://127.0.0.1:{port}/", subprotocols=bearer(jwt))
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(extra.recv(), 5)
        assert info.value.rcvd is not None
        for ws in clients:
            await ws.close()
        return gateways, info.value.rcvd.code

    with gateway_process(env) as proc:
        gateways, refused = run(scenario(), 60)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    assert refused == 1013
    assert gateways <= {"gw-multi-p0", "gw-multi-p1", "gw-multi-p2"}
    assert proc.returncode == 0, output
    assert "starting 3 gateway processes" in output
    for n in range(3):  # each on the shared port, with a metrics port of its own
        assert f"gw-multi-p{n} listening on 127.0.0.1:{port}, metrics on {metrics + n}" in output


def test_drain_does_not_wait_for_a_redis_that_is_gone(tmp_path: Path) -> None:
    """A transition's cut-over drains gateways after their Redis is gone (growth's
    Sentinels stopped, its master shut down): the subscribers are closed with 1001 and the
    process exits well within its drain window, whatever its Redis client is still trying."""
    setup = gw_redis.start_sentinel_setup(tmp_path)
    port = gw_redis.free_port()
    drain = 10.0
    trips = [f"trip-{i}" for i in range(5)]
    env = gateway_env(
        GATEWAY_HOST="127.0.0.1",
        GATEWAY_PORT=str(port),
        GATEWAY_ID="gw-orphan",
        REDIS_MODE="sentinel",
        REDIS_SENTINELS=setup.sentinel_env,
        REDIS_MASTER_NAME=gw_redis.MASTER_NAME,
        REDIS_PASSWORD=gw_redis.PASSWORD,
        GATEWAY_DRAIN_SECONDS=str(drain),
    )

    async def scenario(proc: subprocess.Popen[str]) -> tuple[float, list[int]]:
        await wait_healthy(port)
        sockets = []
        for trip in trips:
            ws = await connect(f"ws://127.0.0.1:{port}/", subprotocols=bearer(token("rider", trip)))
            await recv_json(ws)
            await ws.send(json.dumps({"type": "subscribe", "trip_id": trip}))
            while (await recv_json(ws))["type"] != "subscribed":
                pass
            sockets.append(ws)
        # A driver keeps publishing: its publishes to the gone Redis are being retried when
        # the drain begins.
        driver = await connect(
            f"ws://127.0.0.1:{port}/", subprotocols=bearer(token("driver", *trips))
        )
        await recv_json(driver)

        async def publish() -> None:
            with contextlib.suppress(ConnectionClosed):
                while True:
                    frame = {"type": "location", "trip_id": trips[0], "lat": 1.0, "lng": 2.0}
                    await driver.send(json.dumps({**frame, "ts": time.time()}))
                    await asyncio.sleep(0.05)

        publisher = asyncio.create_task(publish())
        await asyncio.sleep(0.3)
        for rp in [*setup.sentinels, setup.master, setup.replica]:
            rp.kill9()
        await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        codes = []
        for ws in [*sockets, driver]:
            with pytest.raises(ConnectionClosed) as info:
                while True:  # the driver may be told first that its publishes failed
                    await asyncio.wait_for(ws.recv(), 5)
            codes.append(info.value.rcvd.code if info.value.rcvd else 0)
        while proc.poll() is None and time.monotonic() - signalled < drain + 15:
            await asyncio.sleep(0.05)
        publisher.cancel()
        return time.monotonic() - signalled, codes

    try:
        with gateway_process(env) as proc:
            took, codes = run(scenario(proc), 60)
            output, _ = proc.communicate(timeout=10)
            assert proc.returncode == 0, output
    finally:
        setup.stop()
    assert codes == [1001] * (len(trips) + 1)
    assert took < 5.0, (took, output[-2000:])
