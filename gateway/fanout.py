"""Redis pub/sub fan-out backends: one interface, three deployments.

A gateway subscribes to ``trip:<id>`` only while it has at least one local
subscriber to that trip, so Redis delivers each update to the gateways that
need it and to no other.

* :class:`StandaloneBackend` - one Redis server (``REDIS_URL``).
* :class:`SentinelBackend` - a Sentinel-managed master; the master is found
  through Sentinel on every (re)connect, so a failover is followed.
* :class:`ClusterBackend` - Redis Cluster with *sharded* pub/sub (SSUBSCRIBE /
  SPUBLISH): each channel lives on the shard owning its hash slot instead of
  being broadcast to every node of the cluster.

All three keep the set of wanted channels as the source of truth and rebuild
their subscriptions from it after any connection loss, so a Redis restart or
failover does not silently stop fan-out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    AskError,
    MovedError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.config import DEFAULT_REDIS_MAX_CONNECTIONS, Settings
from gateway.throttle import ThrottledLog

log = logging.getLogger(__name__)

# (channel, payload) -> None. Synchronous on purpose: delivery only writes to the
# clients' transports (never waits on one), so a slow client can never stall the reader.
# The payload is the published bytes, UTF-8 JSON, passed on to clients as they are.
MessageCallback = Callable[[str, bytes], None]

# Everything a Redis call can fail with short of a bug: redis-py errors
# (connection, timeout, MOVED, READONLY...), the cluster client's own (no node reachable,
# a slot no node serves), raw socket errors and our own asyncio.wait_for bounds.
REDIS_FAILURES: tuple[type[Exception], ...] = (
    RedisError,
    RedisClusterException,
    OSError,
    TimeoutError,
)

SOCKET_TIMEOUT = 2.0
CONNECT_TIMEOUT = 1.0
# How long one blocking read on a pub/sub connection waits before looping; it
# bounds how quickly a reader notices that it was asked to stop or rebuild.
READ_TIMEOUT = 1.0
# redis-py PINGs a pub/sub connection before a read once this long has passed since the
# last command, so a dead TCP connection is noticed even without traffic.
HEALTH_CHECK_INTERVAL = 15
# Library-level retries per command: together about 5 s of jittered
# exponential backoff, long enough to ride out a Sentinel failover or a
# Redis restart without surfacing an error to the driver.
COMMAND_RETRIES = 8
# A publish that failed after the library's retries (e.g. an error they do not cover, a
# failover longer than they last) is tried again, with backoff, until this many seconds
# after it began (waiting for a free connection included); then the driver is told to
# resend.
PUBLISH_DEADLINE = 8.0
# Most publishes sent in one pipeline (on a cluster: in one batch, a pipeline per primary).
MAX_BATCH = 256
# Pool connections kept out of the publishers' share: the pub/sub connection (standalone
# and Sentinel take it from the same pool) and /healthz's PING.
RESERVED_CONNECTIONS = 2


def command_retry() -> Retry:
    return Retry(
        ExponentialWithJitterBackoff(cap=1.0, base=0.05),
        COMMAND_RETRIES,
        # redis-py wraps socket errors in these two.
        supported_errors=(RedisConnectionError, RedisTimeoutError),
    )


def reconnect_backoff() -> ExponentialWithJitterBackoff:
    """Delay between attempts to rebuild a lost subscription connection."""
    return ExponentialWithJitterBackoff(cap=1.0, base=0.05)


class PublishError(RuntimeError):
    """Publishing failed even after retries; the driver is told to resend."""


class FanoutBackend(ABC):
    """Pub/sub transport between gateway instances.

    Publishes share ``max_connections`` pooled connections: at most that many (less the
    reserved ones) are in flight at once, the others wait their turn (within
    PUBLISH_DEADLINE)
    instead of failing with "too many connections", so no publish is lost while Redis
    is healthy. Failures are retried with backoff, then raised as PublishError; both are
    logged at most once per interval (gateway.throttle).
    """

    def __init__(
        self,
        on_message: MessageCallback,
        max_connections: int = DEFAULT_REDIS_MAX_CONNECTIONS,
        publish_slots: int | None = None,
    ) -> None:
        self._on_message = on_message
        # Publishes in flight at once (the others wait): by default one per pooled
        # connection; backends that pipeline publishes over one connection allow more.
        slots = publish_slots or max(1, max_connections - RESERVED_CONNECTIONS)
        self._publish_slots = asyncio.Semaphore(slots)
        self._publish_failures = ThrottledLog(log, "publish to redis failed after retries")
        self._publish_retries = ThrottledLog(log, "publish to redis failed; retrying")
        self._wanted: set[str] = set()
        self._closed = False
        # Counts how often subscriptions were rebuilt after a connection loss;
        # exposed for logs and tests.
        self.resubscribes = 0
        # Channels whose (S)SUBSCRIBE was sent and whose confirmation is awaited.
        self._unconfirmed: dict[str, asyncio.Event] = {}

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._wanted)

    @abstractmethod
    async def start(self) -> None:
        """Create clients and begin (re)connecting in the background."""

    @abstractmethod
    async def close(self) -> None:
        """Stop readers and close every connection."""

    @abstractmethod
    async def subscribe(self, channel: str) -> None: ...

    @abstractmethod
    async def unsubscribe(self, channel: str) -> None: ...

    async def publish(self, channel: str, payload: bytes) -> None:
        """Publish, waiting for a free connection and retrying failures with backoff for
        up to PUBLISH_DEADLINE; raise :class:`PublishError` when no attempt succeeded."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUBLISH_DEADLINE
        backoff = reconnect_backoff()
        attempt = 0
        while True:
            if self._closed:  # the gateway is stopping: nothing reopens the connections
                raise PublishError("the redis connections are closed (stopping)")
            attempt += 1
            try:
                if self._publish_slots.locked():
                    async with asyncio.timeout_at(deadline):
                        await self._publish_slots.acquire()
                else:  # a free slot is taken at once: no timeout to arm and cancel
                    await self._publish_slots.acquire()
            except TimeoutError:
                failure: Exception = TimeoutError(
                    f"no free redis connection within {PUBLISH_DEADLINE:g} s"
                )
            else:
                try:
                    await self._publish(channel, payload)
                    return
                except REDIS_FAILURES as exc:
                    failure = exc
                finally:
                    self._publish_slots.release()
            delay = backoff.compute(attempt)
            if self._closed or loop.time() + delay >= deadline:
                self._publish_failures.event(f"{type(failure).__name__}: {failure}")
                raise PublishError(str(failure)) from failure
            self._publish_retries.event(f"{type(failure).__name__}: {failure}")
            await asyncio.sleep(delay)

    @abstractmethod
    async def _publish(self, channel: str, payload: bytes) -> None:
        """One attempt (the client's own retries included)."""

    @abstractmethod
    async def healthy(self) -> bool:
        """True when publishing and receiving both work right now."""

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until :meth:`healthy` is true; used at start-up and in tests."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if await self.healthy():
                return True
            await asyncio.sleep(0.05)
        return False

    def _expect(self, channel: str) -> asyncio.Event:
        return self._unconfirmed.setdefault(channel, asyncio.Event())

    def _confirm(self, channel: Any) -> None:
        """The reader saw Redis confirm a subscription to ``channel``."""
        text = channel.decode() if isinstance(channel, bytes) else str(channel)
        event = self._unconfirmed.get(text)
        if event is not None:
            event.set()

    async def _confirmed(self, channel: str, event: asyncio.Event) -> None:
        """Return once Redis has confirmed the subscription, so that a message published
        after :meth:`subscribe` returns reaches this gateway ("subscribed" means it). Gives
        up after SOCKET_TIMEOUT: the reader re-subscribes after a lost connection."""
        try:
            await asyncio.wait_for(event.wait(), SOCKET_TIMEOUT)
        except TimeoutError:
            log.warning("subscription to %s not confirmed within %.1fs", channel, SOCKET_TIMEOUT)
        finally:
            if self._unconfirmed.get(channel) is event:
                del self._unconfirmed[channel]

    def _deliver(self, channel: Any, payload: Any) -> None:
        channel_text = channel.decode() if isinstance(channel, bytes) else str(channel)
        data = payload if isinstance(payload, bytes) else str(payload).encode()
        if channel_text in self._wanted:
            self._on_message(channel_text, data)


class _PipelinedBackend(FanoutBackend):
    """Publishes made while a pipeline is in flight go out together in the next one: one
    round trip, one socket write and a fraction of redis-py's per-command cost (~20
    instead of ~70 us of CPU per publish, measured) per batch. An error fails only the
    publishes it concerns, which FanoutBackend.publish retries."""

    def __init__(
        self, on_message: MessageCallback, max_connections: int = DEFAULT_REDIS_MAX_CONNECTIONS
    ) -> None:
        # Publishes share pipelines: bound them by batches, not by the pool.
        super().__init__(on_message, max_connections, publish_slots=MAX_BATCH * 8)
        # Publishes waiting for the next pipeline, and the task sending them.
        self._batch: list[tuple[str, bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        # Pipelines sent; exposed for tests.
        self.pipelines = 0

    @abstractmethod
    async def _send_batch(self, publishes: list[tuple[str, bytes]]) -> list[Any]:
        """Send ``publishes`` as one pipeline (or one per server); per publish its
        result, or the exception that failed it."""

    async def _publish(self, channel: str, payload: bytes) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._batch.append((channel, payload, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="fanout-publisher")
        await done

    async def _flush(self) -> None:
        while self._batch:
            batch, self._batch = self._batch[:MAX_BATCH], self._batch[MAX_BATCH:]
            self.pipelines += 1
            try:
                results = await self._send_batch([(c, p) for c, p, _ in batch])
            except BaseException as exc:
                failure = exc if isinstance(exc, Exception) else RedisConnectionError("closed")
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(failure)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, _, done), result in zip(batch, results, strict=True):
                if done.done():
                    continue
                if isinstance(result, Exception):
                    done.set_exception(result)
                else:
                    done.set_result(None)

    async def _stop_flusher(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._flusher


class _SingleMasterBackend(_PipelinedBackend):
    """Shared logic for standalone and Sentinel: one master at a time.

    One client (pooled connections) publishes; one dedicated pub/sub
    connection carries every subscription. A reader task owns that connection:
    when it breaks beyond the library's own retries, the reader rebuilds it and
    re-subscribes every wanted channel, backing off between attempts.
    """

    def __init__(
        self,
        on_message: MessageCallback,
        control_channel: str,
        max_connections: int = DEFAULT_REDIS_MAX_CONNECTIONS,
    ) -> None:
        super().__init__(on_message, max_connections)
        # Subscribed for the whole lifetime so the pub/sub connection exists
        # (and its failure is noticed) even while no trip is watched.
        self._control_channel = control_channel
        self._client: Redis | None = None
        self._pubsub: PubSub | None = None
        self._rebuild = asyncio.Event()
        # Serialises SUBSCRIBE/UNSUBSCRIBE so commands reach Redis in the same
        # order as the local subscription changes that caused them.
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None

    @abstractmethod
    def _make_client(self) -> Redis: ...

    async def start(self) -> None:
        self._client = self._make_client()
        self._reader = asyncio.create_task(self._read_loop(), name="fanout-reader")

    async def _close_connections(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._drop_pubsub()
        if self._client is not None:
            await self._client.aclose()

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _open_pubsub(self) -> PubSub:
        assert self._client is not None
        # Confirmations are read (not dropped): subscribe() waits for them.
        pubsub = self._client.pubsub(ignore_subscribe_messages=False)
        try:
            async with self._lock:
                await pubsub.subscribe(self._control_channel, *sorted(self._wanted))
                self._pubsub = pubsub
        except BaseException:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            raise
        return pubsub

    async def _read_loop(self) -> None:
        backoff = reconnect_backoff()
        failures = 0
        first = True
        while not self._closed:
            try:
                pubsub = self._pubsub
                if pubsub is None or self._rebuild.is_set():
                    self._rebuild.clear()
                    await self._drop_pubsub()
                    pubsub = await self._open_pubsub()
                    if not first:
                        self.resubscribes += 1
                        log.warning(
                            "pub/sub reconnected; re-subscribed %d channels", len(self._wanted)
                        )
                    first = False
                    failures = 0
                message = await pubsub.get_message(
                    ignore_subscribe_messages=False, timeout=READ_TIMEOUT
                )
                if message is None:
                    continue
                if message.get("type") == "message":
                    self._deliver(message["channel"], message["data"])
                elif message.get("type") == "subscribe":
                    self._confirm(message["channel"])
            except asyncio.CancelledError:
                raise
            except REDIS_FAILURES as exc:
                failures += 1
                delay = backoff.compute(failures)
                log.warning("pub/sub connection lost (%s); retrying in %.2fs", exc, delay)
                await self._drop_pubsub()
                await asyncio.sleep(delay)
            except Exception:
                # A bug in delivery must not kill fan-out for everyone.
                log.exception("unexpected error in pub/sub reader")
                await asyncio.sleep(0.1)

    async def subscribe(self, channel: str) -> None:
        async with self._lock:
            if channel in self._wanted:
                return
            self._wanted.add(channel)
            confirmation = self._expect(channel)
            await self._send(lambda ps: ps.subscribe(channel))
        await self._confirmed(channel, confirmation)

    async def unsubscribe(self, channel: str) -> None:
        async with self._lock:
            if channel not in self._wanted:
                return
            self._wanted.discard(channel)
            await self._send(lambda ps: ps.unsubscribe(channel))

    async def _send(self, command: Callable[[PubSub], Any]) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            return  # the reader subscribes to all wanted channels when it reconnects
        try:
            await asyncio.wait_for(command(pubsub), SOCKET_TIMEOUT)
        except REDIS_FAILURES as exc:
            # The wanted set is already updated; have the reader rebuild the
            # connection from it instead of guessing what Redis applied.
            log.warning("pub/sub command failed (%s); scheduling resubscribe", exc)
            self._rebuild.set()

    async def _send_batch(self, publishes: list[tuple[str, bytes]]) -> list[Any]:
        assert self._client is not None
        pipe = self._client.pipeline(transaction=False)
        for channel, payload in publishes:
            pipe.publish(channel, payload)
        return list(await pipe.execute(raise_on_error=False))

    async def close(self) -> None:
        await self._stop_flusher()
        await self._close_connections()

    async def healthy(self) -> bool:
        if self._client is None or self._pubsub is None or self._rebuild.is_set():
            return False
        try:
            return bool(await asyncio.wait_for(self._client.ping(), CONNECT_TIMEOUT))
        except REDIS_FAILURES:
            return False


def _client_kwargs(settings: Settings) -> dict[str, Any]:
    return {
        "password": settings.redis_password,
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_keepalive": True,
        # Lets redis-py PING idle connections (including the pub/sub one) so
        # a half-open TCP connection is detected even without traffic.
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "retry": command_retry(),
        "decode_responses": False,
        "max_connections": settings.redis_max_connections,
    }


class StandaloneBackend(_SingleMasterBackend):
    def __init__(self, settings: Settings, on_message: MessageCallback) -> None:
        super().__init__(
            on_message, f"gateway:{settings.gateway_id}", settings.redis_max_connections
        )
        assert settings.redis_url is not None
        self._settings = settings

    def _make_client(self) -> Redis:
        kwargs = _client_kwargs(self._settings)
        if kwargs["password"] is None:
            del kwargs["password"]  # let a password in REDIS_URL apply
        return Redis.from_url(self._settings.redis_url or "", **kwargs)


class SentinelBackend(_SingleMasterBackend):
    """Master discovered through Sentinel.

    redis-py's Sentinel connection pool asks the sentinels for the current
    master each time it opens a connection, so every reconnect (library retry
    or our rebuild) lands on the promoted replica after a failover.
    """

    def __init__(self, settings: Settings, on_message: MessageCallback) -> None:
        super().__init__(
            on_message, f"gateway:{settings.gateway_id}", settings.redis_max_connections
        )
        assert settings.redis_master_name is not None
        self._settings = settings
        self._sentinel: Sentinel | None = None

    def _make_client(self) -> Redis:
        s = self._settings
        sentinel = Sentinel(
            list(s.redis_sentinels),
            # Sentinels are expected to share the data nodes' password (the
            # common Helm/operator layout); None works for open sentinels.
            sentinel_kwargs={
                "password": s.redis_password,
                "socket_timeout": CONNECT_TIMEOUT,
                "socket_connect_timeout": CONNECT_TIMEOUT,
            },
        )
        self._sentinel = sentinel
        client: Redis = sentinel.master_for(s.redis_master_name or "", **_client_kwargs(s))
        return client

    async def close(self) -> None:
        await super().close()
        if self._sentinel is not None:
            for sentinel_client in self._sentinel.sentinels:
                with contextlib.suppress(Exception):
                    await sentinel_client.aclose()


class _Shard:
    """Sharded subscriptions held on one cluster primary, with its reader."""

    def __init__(self, backend: ClusterBackend, name: str, client: Redis) -> None:
        self.name = name
        self.client = client
        # (S)SUBSCRIBE confirmations and Redis's own SUNSUBSCRIBE (the slot moved) reach the
        # reader: redis-py drops them when the pub/sub object ignores subscribe messages.
        self.pubsub: PubSub = client.pubsub(ignore_subscribe_messages=False)
        self.channels: set[str] = set()
        self._backend = backend
        self.task: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None

    def start_reader(self) -> None:
        # Started after the first successful SSUBSCRIBE: reading a pub/sub
        # object that never subscribed is an error in redis-py.
        if self.task is None:
            self.task = asyncio.create_task(
                self._backend._read_shard(self), name=f"fanout-shard-{self.name}"
            )
            self._pinger = asyncio.create_task(self._ping(), name=f"fanout-ping-{self.name}")

    async def _ping(self) -> None:
        """PING the connection every HEALTH_CHECK_INTERVAL: the reader blocks until the
        next message (no timeout to arm per read), so redis-py's own check before a read
        would not run while the shard is quiet. A failure here is the reader's to see."""
        while True:
            await asyncio.sleep(HEALTH_CHECK_INTERVAL)
            with contextlib.suppress(*REDIS_FAILURES):
                await asyncio.wait_for(self.pubsub.ping(), SOCKET_TIMEOUT)

    async def close(self) -> None:
        current = asyncio.current_task()
        for task in (self._pinger, self.task):
            if task is not None and task is not current:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()
        with contextlib.suppress(Exception):
            await self.client.aclose()


class ClusterBackend(_PipelinedBackend):
    """Redis Cluster with sharded pub/sub.

    Publishing uses ``SPUBLISH``, pipelined: each batch is split by the primary owning
    each channel's hash slot (the slot map of :class:`RedisCluster`) and sent as one
    pipeline per primary, over a connection of this backend's own to that primary. A
    publish refused with a redirection (MOVED, ASK, TRYAGAIN: the slot moved or is
    moving) is sent again on its own through :class:`RedisCluster`, which follows the
    redirection and updates the slot map; one whose primary cannot be reached fails
    (FanoutBackend.publish retries it with backoff) and has the slot map refreshed, so
    the retries reach the promoted replica after a failover. Subscribing
    uses one pub/sub connection per primary that owns a wanted channel; when a
    primary dies, or Redis pushes an ``sunsubscribe`` because the slot moved,
    the affected channels are re-routed to the current owner after refreshing
    the slot map, backing off while the cluster elects a new primary.
    """

    def __init__(self, settings: Settings, on_message: MessageCallback) -> None:
        super().__init__(on_message, settings.redis_max_connections)
        self._settings = settings
        self._cluster: RedisCluster | None = None
        # Pipelined publishes: one client per primary, by node name.
        self._publishers: dict[str, Redis] = {}
        self._refreshing: asyncio.Task[None] | None = None
        self._shards: dict[str, _Shard] = {}
        self._owner: dict[str, str] = {}  # channel -> shard name holding it
        self._orphans: set[str] = set()  # wanted but currently not subscribed
        self._orphans_event = asyncio.Event()
        self._lock = asyncio.Lock()
        self._repairer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self._settings
        self._cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in s.redis_cluster_nodes],
            password=s.redis_password,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            retry=command_retry(),
            # Per node; publishes wait for a slot (FanoutBackend) rather than run out.
            max_connections=s.redis_max_connections,
        )
        self._repairer = asyncio.create_task(self._repair_loop(), name="fanout-repair")

    async def close(self) -> None:
        self._closed = True
        await self._stop_flusher()
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refreshing
        for publisher in list(self._publishers.values()):
            with contextlib.suppress(Exception):
                await publisher.aclose()
        self._publishers.clear()
        if self._repairer is not None:
            self._repairer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._repairer
        for shard in list(self._shards.values()):
            await shard.close()
        self._shards.clear()
        if self._cluster is not None:
            await self._cluster.aclose()

    def _node_client(self, node: ClusterNode) -> Redis:
        return Redis(
            host=node.host,
            port=int(node.port),
            password=self._settings.redis_password,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_keepalive=True,
            health_check_interval=HEALTH_CHECK_INTERVAL,
            # Fail fast: a dead primary is handled by re-routing its channels
            # (publishes: refreshing the slot map) to the promoted replica, not by
            # retrying it.
            retry=Retry(ExponentialWithJitterBackoff(cap=0.2, base=0.05), 1),
            # One pipeline in flight per primary (one flusher); one spare.
            max_connections=2,
        )

    def _shard_for(self, channel: str) -> _Shard:
        assert self._cluster is not None
        node = self._cluster.get_node_from_key(channel, replica=False)
        if node is None:
            raise RedisConnectionError(f"no node owns the slot of {channel!r}")
        shard = self._shards.get(node.name)
        if shard is None:
            client = self._node_client(node)
            shard = self._shards[node.name] = _Shard(self, node.name, client)
        return shard

    async def _send_batch(self, publishes: list[tuple[str, bytes]]) -> list[Any]:
        cluster = self._cluster
        assert cluster is not None
        if not cluster.nodes_manager.slots_cache:  # nothing sent yet: no slot map
            await cluster.initialize()
        results: list[Any] = [None] * len(publishes)
        by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
        for index, (channel, _) in enumerate(publishes):
            try:
                node = cluster.get_node_from_key(channel, replica=False)
            except REDIS_FAILURES as exc:  # no slot map yet, or the slot has no owner
                results[index] = exc
                continue
            if node is None:
                results[index] = RedisConnectionError(f"no node owns the slot of {channel!r}")
                continue
            by_node.setdefault(node.name, (node, []))[1].append(index)

        async def to_node(node: ClusterNode, indexes: list[int]) -> None:
            publisher = self._publishers.get(node.name)
            if publisher is None:
                publisher = self._publishers[node.name] = self._node_client(node)
            pipe = publisher.pipeline(transaction=False)
            for index in indexes:
                pipe.execute_command("SPUBLISH", *publishes[index])
            try:
                replies = await pipe.execute(raise_on_error=False)
            except REDIS_FAILURES as exc:
                replies = [exc] * len(indexes)
                # Reconnected from scratch next time (the node may be gone for good).
                if self._publishers.get(node.name) is publisher:
                    del self._publishers[node.name]
                with contextlib.suppress(Exception):
                    await publisher.aclose()
            for index, reply in zip(indexes, replies, strict=True):
                results[index] = reply

        if len(by_node) == 1:  # the usual small batch: no task per primary
            await to_node(*next(iter(by_node.values())))
        else:
            await asyncio.gather(*(to_node(node, ix) for node, ix in by_node.values()))
        unreachable = False
        for index, result in enumerate(results):
            if isinstance(result, MovedError | AskError | TryAgainError):
                # The slot moved (or is moving): RedisCluster follows the redirection
                # and updates the slot map the next batches are split by.
                try:
                    results[index] = await cluster.spublish(*publishes[index])
                except REDIS_FAILURES as exc:
                    results[index] = exc
            elif isinstance(result, Exception):
                unreachable = True
        if unreachable:
            self._refresh_slots()
        return results

    def _refresh_slots(self) -> None:
        """Reload the slot map in the background (one reload at a time): a primary did
        not answer, and the retried publishes must reach whichever node owns its slots
        once the cluster has promoted a replica."""
        if self._closed or (self._refreshing is not None and not self._refreshing.done()):
            return

        async def refresh() -> None:
            assert self._cluster is not None
            with contextlib.suppress(*REDIS_FAILURES):
                await self._cluster.nodes_manager.initialize()

        self._refreshing = asyncio.create_task(refresh(), name="fanout-slots")

    async def _ssubscribe_locked(self, channel: str) -> None:
        shard = self._shard_for(channel)
        try:
            await asyncio.wait_for(shard.pubsub.ssubscribe(channel), SOCKET_TIMEOUT)
        except BaseException:
            if not shard.channels:  # never worked (e.g. node down): forget it
                if self._shards.get(shard.name) is shard:
                    del self._shards[shard.name]
                await shard.close()
            raise
        shard.channels.add(channel)
        self._owner[channel] = shard.name
        shard.start_reader()

    async def subscribe(self, channel: str) -> None:
        async with self._lock:
            if channel in self._wanted:
                return
            self._wanted.add(channel)
            confirmation = self._expect(channel)
            try:
                await self._ssubscribe_locked(channel)
            except REDIS_FAILURES as exc:
                log.warning("ssubscribe %s failed (%s); will retry", channel, exc)
                self._orphan_locked({channel})
        await self._confirmed(channel, confirmation)

    async def unsubscribe(self, channel: str) -> None:
        async with self._lock:
            if channel not in self._wanted:
                return
            self._wanted.discard(channel)
            self._orphans.discard(channel)
            name = self._owner.pop(channel, None)
            shard = self._shards.get(name) if name else None
            if shard is None:
                return
            shard.channels.discard(channel)
            if not shard.channels:
                # Last channel on this primary: drop the whole connection.
                del self._shards[shard.name]
                await shard.close()
                return
            with contextlib.suppress(*REDIS_FAILURES):
                await asyncio.wait_for(shard.pubsub.sunsubscribe(channel), SOCKET_TIMEOUT)

    def _orphan_locked(self, channels: set[str]) -> None:
        for channel in channels:
            self._owner.pop(channel, None)
            if channel in self._wanted:
                self._orphans.add(channel)
        if self._orphans:
            self._orphans_event.set()

    async def _read_shard(self, shard: _Shard) -> None:
        try:
            while not self._closed:
                # Blocks until a message arrives (close() cancels the reader): the busiest
                # loop of a gateway, without a timeout armed and cancelled per message.
                message = await shard.pubsub.get_message(
                    ignore_subscribe_messages=False, timeout=None
                )
                if message is None:
                    continue
                kind = message.get("type")
                if kind == "smessage":
                    self._deliver(message["channel"], message["data"])
                elif kind == "ssubscribe":
                    self._confirm(message["channel"])
                elif kind == "sunsubscribe":
                    channel = message["channel"]
                    channel = channel.decode() if isinstance(channel, bytes) else str(channel)
                    async with self._lock:
                        if self._owner.get(channel) == shard.name and channel in self._wanted:
                            # Not asked for by us: Redis moved the slot away.
                            shard.channels.discard(channel)
                            self._orphan_locked({channel})
        except asyncio.CancelledError:
            raise
        except REDIS_FAILURES as exc:
            log.warning("shard %s lost (%s); re-routing its channels", shard.name, exc)
            async with self._lock:
                if self._shards.get(shard.name) is shard:
                    del self._shards[shard.name]
                self._orphan_locked(set(shard.channels))
            await shard.close()

    async def _repair_loop(self) -> None:
        backoff = reconnect_backoff()
        while not self._closed:
            await self._orphans_event.wait()
            self._orphans_event.clear()
            failures = 0
            while self._orphans and not self._closed:
                try:
                    assert self._cluster is not None
                    # Refresh the slot map so channels go to the new owner.
                    await self._cluster.nodes_manager.initialize()
                    async with self._lock:
                        for channel in sorted(self._orphans):
                            await self._ssubscribe_locked(channel)
                            self._orphans.discard(channel)
                    self.resubscribes += 1
                    log.warning("sharded subscriptions re-routed")
                except asyncio.CancelledError:
                    raise
                except REDIS_FAILURES as exc:
                    failures += 1
                    delay = backoff.compute(failures)
                    log.warning("re-routing subscriptions failed (%s); retry in %.2fs", exc, delay)
                    await asyncio.sleep(delay)

    async def healthy(self) -> bool:
        if self._cluster is None or self._orphans:
            return False
        try:
            return bool(await asyncio.wait_for(self._cluster.ping(), CONNECT_TIMEOUT))
        except REDIS_FAILURES:
            return False


def create_backend(settings: Settings, on_message: MessageCallback) -> FanoutBackend:
    if settings.redis_mode == "sentinel":
        return SentinelBackend(settings, on_message)
    if settings.redis_mode == "cluster":
        return ClusterBackend(settings, on_message)
    return StandaloneBackend(settings, on_message)
