"""The topology's cluster script grows a Redis Cluster safely, against real servers.

Six local nodes form the scale phase's cluster through the local runner (3 masters + 3
replicas in the topology's fixed layout, formed by the shared script); 300 keys are
written. The spec then asks for 4 masters, so the topology appends redis-6 (a master) and
redis-7 (its replica): both are started and the same script runs again. The new master must
own slots, every key must stay readable, the new replica must replicate the new master, and
a third run must change nothing. Everything listens on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from local_helpers import tier_context
from redis.cluster import ClusterNode, RedisCluster

from scaling.local import LocalRun, runner
from scaling.local import redis as local_redis
from scaling.local.context import Context
from scaling.local.credentials import new_secrets
from scaling.local.topology import local_topology
from scaling.model import PhaseSpec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KEYS = 300
# name -> (role, master's name or "-", slot ranges) as the cluster itself reports it.
Layout = dict[str, tuple[str, str, tuple[str, ...]]]


def scale_spec(masters: int) -> PhaseSpec:
    overrides = {"redis": {"masters": masters, "maxMemoryMb": 512}}
    return runner.load_spec(ROOT / "Pulumi.scale.yaml", overrides)


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    """A local-runner context for the Redis tier alone; `down` stops whatever it started."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    secrets = new_secrets()
    context = tier_context(scale_spec(3), state_dir, "cluster-growth", secrets)
    try:
        yield context
    finally:
        LocalRun(context.state, secrets).down()


def node_client(ctx: Context, name: str) -> redis.Redis:
    endpoint = ctx.endpoints[name]
    return redis.Redis(
        host=endpoint.host,
        port=endpoint.port,
        password=ctx.secrets["redis-password"],
        decode_responses=True,
        socket_timeout=3,
    )


def cluster_client(ctx: Context) -> RedisCluster:
    return RedisCluster(
        startup_nodes=[ClusterNode(e.host, e.port) for e in ctx.endpoints.values()],
        password=ctx.secrets["redis-password"],
        decode_responses=True,
        socket_timeout=3,
        socket_connect_timeout=2,
    )


def cluster_layout(ctx: Context) -> Layout:
    """CLUSTER NODES of redis-0, with ports mapped back to topology node names."""
    by_port = {e.port: name for name, e in ctx.endpoints.items()}
    with node_client(ctx, "redis-0") as conn:
        text = str(conn.execute_command("CLUSTER", "NODES"))
    rows = [line.split() for line in text.splitlines() if line.strip()]
    names = {row[0]: by_port[int(row[1].split("@")[0].rsplit(":", 1)[1])] for row in rows}
    return {
        names[row[0]]: (
            "master" if "master" in row[2].split(",") else "replica",
            names.get(row[3], "-"),
            tuple(s for s in row[8:] if not s.startswith("[")),
        )
        for row in rows
    }


def slot_count(ranges: tuple[str, ...]) -> int:
    total = 0
    for item in ranges:
        first, _, last = item.partition("-")
        total += int(last or first) - int(first) + 1
    return total


def unreadable_keys(ctx: Context, prefix: str) -> list[int]:
    rc = cluster_client(ctx)
    try:
        values = [rc.get(f"{prefix}:{i}") for i in range(KEYS)]
    finally:
        rc.close()
    return [i for i, value in enumerate(values) if value != str(i)]


def write_keys(ctx: Context, prefix: str) -> None:
    rc = cluster_client(ctx)
    try:
        for index in range(KEYS):
            rc.set(f"{prefix}:{index}", str(index))
    finally:
        rc.close()


def grow_to(ctx: Context, spec: PhaseSpec) -> list[str]:
    """Switch the context to ``spec``'s topology and start its data nodes not yet running."""
    ctx.spec, ctx.topology = spec, local_topology(spec)
    added = [n for n in local_redis.data_nodes(ctx) if n.name not in ctx.endpoints]
    for entry in [local_redis.start_data_node(ctx, node) for node in added]:
        local_redis.wait_ping(ctx, entry)
    return [n.name for n in added]


def test_cluster_script_grows_the_cluster_safely(ctx: Context) -> None:
    local_redis.start_redis(ctx)  # 3 masters + 3 replicas, formed by the shared script
    formed = cluster_layout(ctx)
    assert {name: (role, master) for name, (role, master, _) in formed.items()} == {
        "redis-0": ("master", "-"),
        "redis-1": ("replica", "redis-0"),
        "redis-2": ("master", "-"),
        "redis-3": ("replica", "redis-2"),
        "redis-4": ("master", "-"),
        "redis-5": ("replica", "redis-4"),
    }
    prefix = f"growth:{time.monotonic_ns()}"
    write_keys(ctx, prefix)

    assert grow_to(ctx, scale_spec(4)) == ["redis-6", "redis-7"]
    started = time.monotonic()
    output = local_redis.run_cluster_script(ctx)
    rebalanced = time.monotonic() - started
    local_redis.wait_cluster_ready(ctx)
    ready = time.monotonic() - started

    grown = cluster_layout(ctx)
    new_slots = slot_count(grown["redis-6"][2])
    assert grown["redis-6"][:2] == ("master", "-") and new_slots > 0, grown["redis-6"]
    assert grown["redis-7"][:2] == ("replica", "redis-6"), grown["redis-7"]
    assert sum(slot_count(slots) for _, _, slots in grown.values()) == 16384
    with node_client(ctx, "redis-7") as conn:
        info = conn.info("replication")
    assert info["role"] == "slave" and int(info["master_port"]) == ctx.endpoints["redis-6"].port
    with node_client(ctx, "redis-6") as conn:
        moved = int(conn.dbsize())
    assert moved > 0, "no key moved onto the new master"
    assert unreadable_keys(ctx, prefix) == []

    started = time.monotonic()
    again = local_redis.run_cluster_script(ctx)
    third_run = time.monotonic() - started
    assert cluster_layout(ctx) == grown
    assert "Adding node" not in again and "Rebalancing" not in again, again
    assert unreadable_keys(ctx, prefix) == []
    print(
        f"\n[cluster growth] 3+3 -> 4+4: script joined redis-6/redis-7 and rebalanced in "
        f"{rebalanced:.2f}s (cluster ok, replicas online after {ready:.2f}s); redis-6 owns "
        f"{new_slots} slots and {moved} of the {KEYS} keys; all {KEYS} keys readable; "
        f"third run changed nothing ({third_run:.2f}s)\n{output.strip().splitlines()[-1]}"
    )
