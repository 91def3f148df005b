"""Pipelined SPUBLISH on a real Redis Cluster (3 primaries + 3 replicas on loopback): no
publish lost or reordered, a moved slot followed, a primary's failover ridden out."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import gw_redis
import pytest
from gw_helpers import STEP, run
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from test_gateway_cluster import cluster_settings

from gateway import fanout
from gateway.fanout import PUBLISH_DEADLINE, ClusterBackend, PublishError

pytestmark = pytest.mark.integration


def backend_on(setup: gw_redis.ClusterSetup, name: str, received: Any = None) -> ClusterBackend:
    sink = received if received is not None else []
    return ClusterBackend(
        cluster_settings(setup, name), lambda channel, payload: sink.append((channel, payload))
    )


def owner_of(cluster: RedisCluster, channel: str) -> ClusterNode:
    """The primary the client's slot map sends ``channel`` to."""
    node = cluster.get_node_from_key(channel)
    assert node is not None
    return node


async def eventually(predicate: Any, timeout: float = STEP) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_concurrent_publishes_go_out_in_pipelines_none_lost_none_reordered(
    redis_cluster: gw_redis.ClusterSetup,
) -> None:
    """900 publishes at once on 30 channels spread over the 3 primaries: each channel
    receives its 30 in order, through far fewer pipelines than publishes."""

    async def scenario() -> None:
        received: list[tuple[str, bytes]] = []
        backend = backend_on(redis_cluster, "gw-pipe", received)
        await backend.start()
        try:
            assert await backend.wait_ready(10)
            channels = [f"trip:pipe-{n}" for n in range(30)]
            for channel in channels:
                await backend.subscribe(channel)
            assert backend._cluster is not None
            owners = {owner_of(backend._cluster, c).name for c in channels}
            assert len(owners) == 3  # every primary takes a share
            await asyncio.gather(
                *(backend.publish(c, b"%d" % n) for n in range(30) for c in channels)
            )
            await eventually(lambda: len(received) >= 900)
            by_channel: dict[str, list[int]] = defaultdict(list)
            for channel, payload in received:
                by_channel[channel].append(int(payload))
            assert by_channel == {c: list(range(30)) for c in channels}
            assert backend.pipelines <= 20, backend.pipelines
            assert set(backend._publishers) == owners  # one publishing client per primary
        finally:
            await backend.close()

    run(scenario(), 60)


def _node_id(port: int) -> str:
    return gw_redis.cli(port, "CLUSTER", "MYID").strip()


def test_publish_follows_a_slot_moved_to_another_primary(
    disposable_cluster: gw_redis.ClusterSetup,
) -> None:
    """The slot of a channel moves to another primary after the publisher loaded its slot
    map: the pipeline's MOVED reply is followed, and the next publishes go straight to the
    new owner."""
    setup = disposable_cluster
    channel = "trip:moving"

    async def scenario() -> None:
        backend = backend_on(setup, "gw-moved")
        await backend.start()
        listener: Redis | None = None
        try:
            assert await backend.wait_ready(10)
            cluster = backend._cluster
            assert cluster is not None
            await backend.publish(channel, b"before")  # the slot map is loaded
            owner = owner_of(cluster, channel)
            target = next(n for n in cluster.get_primaries() if n.name != owner.name)
            slot = cluster.keyslot(channel)
            owner_id, target_id = _node_id(int(owner.port)), _node_id(int(target.port))
            gw_redis.cli(int(target.port), "CLUSTER", "SETSLOT", str(slot), "IMPORTING", owner_id)
            gw_redis.cli(int(owner.port), "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
            for port in (int(target.port), int(owner.port)):
                gw_redis.cli(port, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)

            listener = Redis(host="127.0.0.1", port=int(target.port), password=gw_redis.PASSWORD)
            pubsub = listener.pubsub()
            await pubsub.ssubscribe(channel)
            # The publisher's map is stale: it still sends this channel to the old owner.
            assert owner_of(cluster, channel).name == owner.name
            await backend.publish(channel, b"after-move")
            assert owner_of(cluster, channel).name == target.name
            await backend.publish(channel, b"direct")
            got: list[bytes] = []
            deadline = time.monotonic() + STEP
            while len(got) < 2 and time.monotonic() < deadline:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                if message is not None:
                    got.append(message["data"])
            assert got == [b"after-move", b"direct"]
            await pubsub.aclose()
        finally:
            if listener is not None:
                await listener.aclose()
            await backend.close()

    run(scenario(), 60)


def test_publishes_ride_out_a_primary_failover(
    disposable_cluster: gw_redis.ClusterSetup,
) -> None:
    """A steady stream of publishes while the channel's primary is killed: every publish
    succeeds within PUBLISH_DEADLINE (retried until the replica is promoted), and the
    ones made once the subscription is re-routed are all delivered."""
    setup = disposable_cluster
    channel = "trip:failover"

    async def scenario() -> dict[str, float]:
        received: list[tuple[str, bytes]] = []
        backend = backend_on(setup, "gw-fo", received)
        await backend.start()
        try:
            assert await backend.wait_ready(10)
            await backend.subscribe(channel)
            owner = next(
                n
                for n in setup.nodes
                if gw_redis.cli(n.port, "PUBSUB", "SHARDNUMSUB", channel).split()[-1] == "1"
            )
            slowest = 0.0
            failures: list[str] = []

            async def publish(n: int) -> None:
                nonlocal slowest
                began = time.monotonic()
                try:
                    await backend.publish(channel, b"%d" % n)
                except PublishError as exc:
                    failures.append(str(exc))
                slowest = max(slowest, time.monotonic() - began)

            tasks = []
            killed = False
            n = 0
            began = time.monotonic()
            # Publish every 20 ms; kill the primary after 1 s; go on until the
            # subscription lives on the promoted replica and 2 s more.
            recovered_at: float | None = None
            first_after = 0
            while recovered_at is None or time.monotonic() - recovered_at < 2:
                assert time.monotonic() - began < 40, "no recovery"
                tasks.append(asyncio.create_task(publish(n)))
                n += 1
                if not killed and time.monotonic() - began > 1:
                    owner.kill9()
                    killed = True
                if (
                    killed
                    and recovered_at is None
                    and backend.resubscribes
                    and await backend.healthy()
                ):
                    recovered_at = time.monotonic()
                    first_after = n
                await asyncio.sleep(0.02)
            await asyncio.gather(*tasks)
            assert failures == []
            await eventually(lambda: {int(p) for _, p in received} >= set(range(first_after, n)))
            delivered = {int(p) for _, p in received}
            assert set(range(first_after, n)) <= delivered
            return {"slowest": slowest, "published": n}
        finally:
            await backend.close()

    figures = run(scenario(), 90)
    assert figures["slowest"] < PUBLISH_DEADLINE


def test_a_quiet_shard_connection_is_still_pinged(
    redis_cluster: gw_redis.ClusterSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shard reader blocks until the next message; its connection is PINGed every
    HEALTH_CHECK_INTERVAL all the same, so a dead one is noticed without traffic."""
    monkeypatch.setattr(fanout, "HEALTH_CHECK_INTERVAL", 0.2)
    channel = "trip:quiet"

    async def scenario() -> None:
        backend = backend_on(redis_cluster, "gw-quiet")
        await backend.start()
        try:
            assert await backend.wait_ready(10)
            await backend.subscribe(channel)
            assert backend._cluster is not None
            owner = owner_of(backend._cluster, channel)
            await asyncio.sleep(1.0)
            clients = gw_redis.cli(int(owner.port), "CLIENT", "LIST").splitlines()
            shard_connections = [c for c in clients if "ssub=1" in c]
            assert len(shard_connections) == 1, clients
            assert "cmd=ping" in shard_connections[0]
            # ...and still delivers.
            received: list[tuple[str, bytes]] = []
            backend._on_message = lambda c, p: received.append((c, p))
            await backend.publish(channel, b"after-pings")
            await eventually(lambda: received == [(channel, b"after-pings")])
        finally:
            await backend.close()

    run(scenario(), 30)
