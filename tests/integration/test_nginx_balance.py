"""A gateway at its share of connections is skipped: the real nginx, with the rendered
nginx.conf, in front of two stand-in gateways. Every client has the same sticky key, so
the consistent hash sends all of them to one gateway; once that one holds its max_conns the
rest go to the other, and only when both are full is a client refused."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from benchmarks.nginx_balance import StandIn, close_all, open_many, phase_spec, running_nginx

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed"),
]

PER_GATEWAY = 10


async def _fill(tmp_path: Path) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    spec = phase_spec(
        "growth",
        **{"sikka:gateway": {"maxConnections": 2 * PER_GATEWAY, "connectionsPerReplica": 10}},
    )
    # A stand-in holds more than its share, as a gateway refuses only at its own limit:
    # only Nginx's cap can keep the sticky gateway from taking every client.
    gateways = [StandIn(f"gateway-{i}", 1000) for i in range(2)]
    for gateway in gateways:
        await gateway.start()
    try:
        with running_nginx(spec, [g.port for g in gateways], tmp_path) as nginx:
            assert f"max_conns={PER_GATEWAY};" in nginx.conf
            first, opened = await open_many(nginx.port, 2 * PER_GATEWAY, 1, client_id="rider-1")
            held = {g.name: g.held for g in gateways}
            extra, more = await open_many(nginx.port, 1, 1, client_id="rider-1")
            await close_all(opened + more)
    finally:
        for gateway in gateways:
            await gateway.stop()
    return dict(first), held, dict(extra)


def test_a_full_gateways_clients_go_to_the_other(tmp_path: Path) -> None:
    first, held, extra = asyncio.run(_fill(tmp_path))
    # Every one of the first 20 is held, 10 by each gateway, though all hash to one.
    assert first == {"gateway-0": PER_GATEWAY, "gateway-1": PER_GATEWAY}
    assert held == {"gateway-0": PER_GATEWAY, "gateway-1": PER_GATEWAY}
    # Both at their max_conns: the next is refused by Nginx, not sent to a full gateway.
    assert extra == {"http 502": 1}
