"""`sikka:gateway.compression`, `sikka:gateway.processes` and the Redis publishing pool:
from the stack file to every gateway's environment."""

from __future__ import annotations

from typing import Any

import pytest

from scaling.issues import ConfigError
from scaling.model import Phase, PhaseSpec
from scaling.render.gateway_env import MIN_REDIS_POOL, redis_max_connections
from scaling.stackconfig import parse
from scaling.topology import build_topology


def spec_with(phase: str = "launch", **gateway: Any) -> PhaseSpec:
    values: dict[str, Any] = {"sikka:phase": phase}
    if gateway:
        values["sikka:gateway"] = gateway
    return parse(values, stack=phase)


@pytest.mark.parametrize(
    ("phase", "pool"),
    # launch: min(500 connections, 1000 maxClients / 2 / 1 gateway) = 500
    # growth: min(1000, 4000 / 2 / 2) = 1000; scale: min(2500, 10000 / 2 / 12 max replicas)
    [("launch", 500), ("growth", 1000), ("scale", 416)],
)
def test_defaults_reach_every_gateway(phase: str, pool: int) -> None:
    spec = spec_with(phase)
    assert (spec.gateway.compression, spec.gateway.processes) == (False, 1)
    assert redis_max_connections(spec) == pool
    for node in build_topology(spec).group("gateway"):
        assert node.env["GATEWAY_COMPRESSION"] == "none"
        assert node.env["GATEWAY_PROCESSES"] == "1"
        assert node.env["REDIS_MAX_CONNECTIONS"] == str(pool)


def test_compression_and_processes_from_the_stack_file() -> None:
    spec = spec_with("scale", compression=True, processes=4)
    # Four processes per replica: each gets a quarter of the replica's share.
    assert redis_max_connections(spec) == 10_000 // 2 // (12 * 4)
    for node in build_topology(spec).group("gateway"):
        assert node.env["GATEWAY_COMPRESSION"] == "deflate"
        assert node.env["GATEWAY_PROCESSES"] == "4"


def test_pool_never_below_the_floor_nor_above_one_per_connection() -> None:
    tiny = spec_with("launch", connectionsPerReplica=10, maxConnections=10)
    assert redis_max_connections(tiny) == MIN_REDIS_POOL
    many = spec_with("scale", processes=64)
    assert redis_max_connections(many) == MIN_REDIS_POOL


@pytest.mark.parametrize("phase", [p.value for p in Phase])
def test_bad_values_name_the_key(phase: str) -> None:
    for gateway, key in (
        ({"processes": 0}, "gateway.processes"),
        ({"processes": 65}, "gateway.processes"),
        ({"compression": "gzip"}, "gateway.compression"),
    ):
        with pytest.raises(ConfigError) as caught:
            spec_with(phase, **gateway)
        assert any(key in issue.key for issue in caught.value.issues), caught.value.issues
