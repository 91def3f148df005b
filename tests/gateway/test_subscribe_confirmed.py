""" "subscribed" means delivered: a backend's subscribe() returns only once Redis has
confirmed the subscription, so a location published right after reaches this gateway."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import gw_redis
import pytest
from gw_helpers import run, settings
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from gateway.fanout import ClusterBackend, StandaloneBackend, _SingleMasterBackend


class HeldConfirmations:
    """A pub/sub stand-in whose SUBSCRIBE confirmations arrive only when released."""

    def __init__(self, released: set[str]) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.held: list[str] = []
        self.released = released

    async def subscribe(self, *channels: str) -> None:
        for channel in channels:
            if channel in self.released:
                self.inbox.put_nowait({"type": "subscribe", "channel": channel})
            else:
                self.held.append(channel)

    def release(self) -> None:
        for channel in self.held:
            self.inbox.put_nowait({"type": "subscribe", "channel": channel})
        self.held.clear()

    async def get_message(self, **options: Any) -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(self.inbox.get(), options.get("timeout") or 0.1)
        except TimeoutError:
            return None

    async def aclose(self) -> None:
        return None


class HeldBackend(_SingleMasterBackend):
    def __init__(self) -> None:
        super().__init__(lambda channel, data: None, "control")
        self.pubsub = HeldConfirmations(released={"control"})

    def _make_client(self) -> Any:
        backend = self

        class Client:
            def pubsub(self, **options: Any) -> HeldConfirmations:
                return backend.pubsub

            async def aclose(self) -> None:
                return None

        return Client()


def test_subscribe_waits_for_the_confirmation() -> None:
    async def scenario() -> None:
        backend = HeldBackend()
        await backend.start()
        try:
            while backend._pubsub is None:  # the reader opens the pub/sub connection
                await asyncio.sleep(0.01)
            subscribing = asyncio.create_task(backend.subscribe("trip:T1"))
            await asyncio.sleep(0.2)
            assert not subscribing.done(), "subscribe returned before Redis confirmed it"
            backend.pubsub.release()
            await asyncio.wait_for(subscribing, 1.0)
        finally:
            await backend.close()

    run(scenario())


integration = pytest.mark.integration


@integration
def test_publish_right_after_subscribe_reaches_the_gateway(
    redis_standalone: gw_redis.RedisProc,
) -> None:
    async def scenario() -> int:
        s = settings(
            redis_url=f"redis://127.0.0.1:{redis_standalone.port}/0",
            redis_password=gw_redis.PASSWORD,
        )
        backend = StandaloneBackend(s, lambda channel, data: None)
        other = Redis(host="127.0.0.1", port=redis_standalone.port, password=gw_redis.PASSWORD)
        await backend.start()
        try:
            assert await backend.wait_ready(10)
            missed = 0
            for _ in range(100):
                channel = f"trip:{uuid.uuid4().hex}"
                await backend.subscribe(channel)
                missed += await other.publish(channel, "x") == 0
            return missed
        finally:
            await backend.close()
            await other.aclose()

    assert run(scenario(), timeout=60) == 0


@integration
def test_spublish_right_after_subscribe_reaches_the_gateway(
    redis_cluster: gw_redis.ClusterSetup,
) -> None:
    nodes = tuple(("127.0.0.1", n.port) for n in redis_cluster.nodes[:3])

    async def scenario() -> int:
        s = settings(
            redis_mode="cluster", redis_cluster_nodes=nodes, redis_password=gw_redis.PASSWORD
        )
        backend = ClusterBackend(s, lambda channel, data: None)
        other = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            password=gw_redis.PASSWORD,
        )
        await backend.start()
        try:
            assert await backend.wait_ready(20)
            await other.initialize()
            missed = 0
            for _ in range(60):
                channel = f"trip:{uuid.uuid4().hex}"
                await backend.subscribe(channel)
                receivers = await other.execute_command("SPUBLISH", channel, "x")
                missed += receivers == 0
            return missed
        finally:
            await backend.close()
            await other.aclose()

    assert run(scenario(), timeout=90) == 0
