"""The gauges the monitoring reads off a real gateway's /metrics: the connection cap it
accepts, the trips it serves, the connections it holds; per worker with GATEWAY_PROCESSES."""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import socket
import subprocess
import sys
from typing import Any

import gw_redis
import pytest
from gw_helpers import (
    bearer,
    http_get,
    metric_value,
    recv_json,
    run,
    running_gateway,
    settings,
    subscribe,
    token,
    ws_client,
)
from test_gateway_process import ROOT, gateway_env, wait_healthy
from websockets.asyncio.client import connect

from gateway.config import DEFAULT_REDIS_MAX_CONNECTIONS
from gateway.limits import connection_cap

pytestmark = pytest.mark.integration


def standalone(rp: gw_redis.RedisProc, gateway_id: str, **kw: Any) -> Any:
    return settings(
        gateway_id=gateway_id,
        redis_url=f"redis://127.0.0.1:{rp.port}/0",
        redis_password=gw_redis.PASSWORD,
        **kw,
    )


async def scrape(port: int) -> str:
    status, _, body = await http_get(port, "/metrics")
    assert status == 200
    return body


def test_active_trips_and_connections_follow_the_clients(
    redis_standalone: gw_redis.RedisProc,
) -> None:
    async def scenario() -> None:
        s = standalone(redis_standalone, "gw-gauges", max_connections=7)
        async with running_gateway(s) as gw:
            body = await scrape(gw.metrics_port)
            assert metric_value(body, "gateway_connection_limit") == 7
            assert metric_value(body, "gateway_active_trips") == 0
            assert metric_value(body, "gateway_open_connections") == 0
            async with ws_client(gw.port) as a, ws_client(gw.port) as b:
                async with ws_client(gw.port) as c:
                    # 3 clients on 2 trips (a and b share one, c watches both).
                    await subscribe(a, "trip-g1")
                    await subscribe(b, "trip-g1")
                    await subscribe(c, "trip-g1")
                    await subscribe(c, "trip-g2")
                    body = await scrape(gw.metrics_port)
                    assert metric_value(body, "gateway_active_trips") == 2
                    assert metric_value(body, "gateway_open_connections") == 3
                    assert metric_value(body, "gateway_messages_in_total", 'type="subscribe"') == 4
                    assert metric_value(body, "gateway_connection_limit") == 7
                # c gone: trip-g2 has no subscriber left here.
                await asyncio.sleep(0.2)
                body = await scrape(gw.metrics_port)
                assert metric_value(body, "gateway_active_trips") == 1
                assert metric_value(body, "gateway_open_connections") == 2
                await a.send(json.dumps({"type": "unsubscribe", "trip_id": "trip-g1"}))
                assert (await recv_json(a))["type"] == "unsubscribed"
                body = await scrape(gw.metrics_port)
                assert metric_value(body, "gateway_active_trips") == 1  # b still watches
                await b.send(json.dumps({"type": "unsubscribe", "trip_id": "trip-g1"}))
                assert (await recv_json(b))["type"] == "unsubscribed"
                body = await scrape(gw.metrics_port)
                assert metric_value(body, "gateway_active_trips") == 0
                assert metric_value(body, "gateway_open_connections") == 2
            await asyncio.sleep(0.2)
            body = await scrape(gw.metrics_port)
            assert metric_value(body, "gateway_open_connections") == 0

    run(scenario())


def _free_port_block(count: int) -> int:
    """The first of ``count`` consecutive free ports (workers serve /metrics on base + i)."""
    for base in range(21000, 32000, 16):
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no block of free ports")


def test_each_worker_reports_the_shared_cap_on_its_own_port(
    redis_standalone: gw_redis.RedisProc,
) -> None:
    """GATEWAY_PROCESSES=2 under an open-file limit too low for WEBSOCKET_MAX_CONNECTIONS:
    both workers report the lower cap the limit allows, each on metrics port + i, and
    between them they count every client and trip."""
    hard = 600
    cap = connection_cap(5000, DEFAULT_REDIS_MAX_CONNECTIONS, hard)
    assert cap < 5000
    port = gw_redis.free_port()
    metrics = _free_port_block(2)
    env = gateway_env(
        GATEWAY_HOST="127.0.0.1",
        GATEWAY_PORT=str(port),
        GATEWAY_METRICS_PORT=str(metrics),
        GATEWAY_ID="gw-cap",
        GATEWAY_PROCESSES="2",
        WEBSOCKET_MAX_CONNECTIONS="5000",
        REDIS_URL=f"redis://127.0.0.1:{redis_standalone.port}/0",
        REDIS_PASSWORD=gw_redis.PASSWORD,
        GATEWAY_DRAIN_SECONDS="1",
    )

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def scenario() -> list[str]:
        await wait_healthy(port)
        clients = []
        for n in range(6):
            jwt = token("rider", f"trip-c{n % 3}", sub=f"u{n}")
            ws = await connect(f"ws://127.0.0.1:{port}/", subprotocols=bearer(jwt))
            assert (await recv_json(ws))["type"] == "welcome"
            await subscribe(ws, f"trip-c{n % 3}")
            clients.append(ws)
        bodies = [await scrape(metrics + i) for i in range(2)]
        for ws in clients:
            await ws.close()
        return bodies

    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lower,
    )
    try:
        bodies = run(scenario(), 60)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    assert proc.returncode == 0, output
    assert f"serving at most {cap} connections" in output
    for body in bodies:
        assert metric_value(body, "gateway_connection_limit") == cap
    assert sum(metric_value(b, "gateway_open_connections") for b in bodies) == 6
    # Each trip is served by the workers holding its riders: 3 trips, at most 2 workers each.
    trips = [metric_value(b, "gateway_active_trips") for b in bodies]
    assert all(0 <= t <= 3 for t in trips) and 3 <= sum(trips) <= 6
