"""Load that a transition must carry without losing anything: the test side of issue 12.

Three kinds of client run in background threads while a phase is moved (or a part of it
restarted), each bounded in count and in time, each connecting to 127.0.0.1 only:

- RowWriter: INSERTs rows (its run id, a sequence number) into ``transition_load`` through one libpq
  multi-host URL (the source's database front door, then the target's,
  ``target_session_attrs=read-write``: libpq connects to whichever is writable). A row counts
  as acknowledged once its COMMIT returned; a failed INSERT is retried with the same number
  (``ON CONFLICT DO NOTHING``: a commit whose answer was lost is not written twice).
- RedisWriter: ``SET <prefix>:<seq> <seq>``, acknowledged by SET and, when the master has
  replicas, by ``WAIT 1``; on READONLY, a refused connection, a timeout or a cluster
  redirect it re-discovers the master (ROLE) among the endpoints it was given, in order,
  and uses redis-py's RedisCluster where the master is a cluster node.
- Subscribers: WebSocket clients through Nginx, each subscribed to a trip a publisher
  updates every few hundred milliseconds; on a close (1001 during a drain) they reconnect
  through the same URL and subscribe again. Recorded: close codes, the longest time without
  a connection, the longest time without an update, the gateways that welcomed them.

``Load.results()`` gives the figures a transition is judged by: rows acknowledged vs present,
keys acknowledged vs present, the longest gap between successful writes (rows, keys), the
longest WebSocket gap, total time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from gateway.auth import mint_token
from gateway.server import BEARER_PREFIX, SUBPROTOCOL
from scaling.transition import log as tlog

TABLE = "transition_load"
LOOPBACK = ("127.",)

# A fixed list, or a function giving the current one (a target's ports are only known once
# its `up` has run: a client's configuration names them, here they are read from its state).
Urls = Sequence[str] | Callable[[], Sequence[str]]
Endpoints = Sequence[tuple[str, int]] | Callable[[], Sequence[tuple[str, int]]]


def _loopback(host: str) -> str:
    if not host.startswith(LOOPBACK):
        raise ValueError(f"{host}: the load harness connects to 127.0.0.0/8 only")
    return host


# ---------------------------------------------------------------------------- rows


def hosts_of(url: str) -> list[tuple[str, int]]:
    """(host, port) of every host of a libpq URL ``postgresql://u@h1:p1,h2:p2/db``."""
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    found = []
    for item in netloc.split(","):
        host, _, port = item.rpartition(":")
        found.append((_loopback(host), int(port)))
    return found


def multi_host_url(urls: Sequence[str], *, connect_timeout: int = 2) -> str:
    """One libpq URL over every host of ``urls`` (in order; user and database of the first),
    connecting only to a read-write server."""
    first = urlsplit(urls[0])
    user = first.netloc.rpartition("@")[0]
    hosts = [h for url in urls for h in hosts_of(url)]
    unique = list(dict.fromkeys(hosts))
    netloc = ",".join(f"{host}:{port}" for host, port in unique)
    return (
        f"postgresql://{user}@{netloc}{first.path}"
        f"?target_session_attrs=read-write&connect_timeout={connect_timeout}"
    )


@dataclass
class Figures:
    """What one writer saw."""

    acknowledged: set[int] = field(default_factory=set)
    attempts: int = 0
    failures: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    longest_gap: float = 0.0
    longest_gap_at: float | None = None  # seconds after the start, when the gap ended
    reconnects: int = 0
    last_ack: float | None = None
    started: float = 0.0
    # The first ten and the last thirty failures: (seconds after the start, error type,
    # message), to see where a gap went.
    timeline: list[tuple[float, str, str]] = field(default_factory=list)

    def ack(self, seq: int) -> None:
        now = time.monotonic()
        previous = self.last_ack if self.last_ack is not None else self.started
        gap = now - previous
        if gap > self.longest_gap:
            self.longest_gap, self.longest_gap_at = gap, now - self.started
        self.last_ack = now
        self.acknowledged.add(seq)

    def fail(self, error: BaseException) -> None:
        self.failures += 1
        name = type(error).__name__
        self.errors[name] = self.errors.get(name, 0) + 1
        when = round(time.monotonic() - self.started, 3)
        self.timeline.append((when, name, " ".join(str(error).split())[:140]))
        if len(self.timeline) > 40:
            del self.timeline[10]  # the first ten and the last thirty


class _Worker(threading.Thread):
    def __init__(self, name: str, interval: float, limit: int, duration: float) -> None:
        super().__init__(name=name, daemon=True)
        self.interval, self.limit, self.duration = interval, limit, duration
        self.halt = threading.Event()
        self.figures = Figures()
        self.crash: BaseException | None = None

    def stop(self, timeout: float = 30.0) -> None:
        self.halt.set()
        self.join(timeout)
        if self.is_alive():
            raise AssertionError(f"{self.name} did not stop within {timeout}s")

    def _bounded(self) -> bool:
        elapsed = time.monotonic() - self.figures.started
        return (
            not self.halt.is_set()
            and elapsed < self.duration
            and len(self.figures.acknowledged) < self.limit
        )

    def run(self) -> None:
        self.figures.started = time.monotonic()
        try:
            self.loop()
        except BaseException as error:  # reported by results(), never swallowed
            self.crash = error

    def loop(self) -> None:
        raise NotImplementedError


def create_table(url: str, password: str) -> None:
    with psycopg.connect(url, password=password, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (run text NOT NULL, seq bigint NOT NULL, "
            "written_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (run, seq))"
        )


class RowWriter(_Worker):
    """Rows 1, 2, 3... each retried until its COMMIT is acknowledged."""

    def __init__(
        self,
        urls: Urls,
        password: str,
        *,
        interval: float = 0.02,
        limit: int = 100_000,
        duration: float = 600.0,
    ) -> None:
        super().__init__("row-writer", interval, limit, duration)
        self.urls = urls
        self.password = password
        # Each writer's rows are its own: a table written by an earlier load is not counted.
        self.run_id = uuid.uuid4().hex[:12]
        self.servers: dict[str, int] = {}  # host:port that acknowledged -> rows

    def _connect(self) -> psycopg.Connection[Any]:
        # No prepared statements: PgBouncer in transaction mode hands each one to any server.
        urls = self.urls() if callable(self.urls) else self.urls
        conn = psycopg.connect(
            multi_host_url(urls), password=self.password, autocommit=True, prepare_threshold=None
        )
        self.figures.reconnects += 1
        return conn

    def loop(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        seq = 1
        insert = f"INSERT INTO {TABLE} (run, seq) VALUES (%s, %s) ON CONFLICT (run, seq) DO NOTHING"
        while self._bounded():
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                self.figures.attempts += 1
                conn.execute(insert, (self.run_id, seq))
            except psycopg.Error as error:
                self.figures.fail(error)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
                self.halt.wait(0.05)
                continue
            self.figures.ack(seq)
            where = f"{conn.info.host}:{conn.info.port}"
            self.servers[where] = self.servers.get(where, 0) + 1
            seq += 1
            self.halt.wait(self.interval)
        if conn is not None:
            conn.close()


def rows_present(url: str, password: str, run_id: str) -> set[int]:
    """The sequence numbers of writer ``run_id``'s rows in the table now (through ``url``,
    any libpq URL)."""
    with psycopg.connect(url, password=password, connect_timeout=5, prepare_threshold=None) as c:
        rows = c.execute(f"SELECT seq FROM {TABLE} WHERE run = %s", (run_id,)).fetchall()
    return {int(r[0]) for r in rows}


# ---------------------------------------------------------------------------- keys


def redis_endpoints(summary: dict[str, Any]) -> list[tuple[str, int]]:
    """Every Redis server of a run's summary (standalone url, sentinel/cluster nodes)."""
    section = summary["redis"]
    found: list[tuple[str, int]] = []
    if section.get("url"):
        parsed = urlsplit(section["url"])
        found.append((str(parsed.hostname), int(parsed.port or 6379)))
    for node in section.get("nodes", []) or []:
        host, _, port = str(node).rpartition(":")
        found.append((host, int(port)))
    return [(_loopback(h), p) for h, p in dict.fromkeys(found)]


class RedisWriter(_Worker):
    """Keys <prefix>:1, :2, ... each retried until SET (and WAIT 1 when the master has
    replicas) acknowledged it."""

    def __init__(
        self,
        endpoints: Endpoints,
        password: str,
        *,
        prefix: str | None = None,
        interval: float = 0.02,
        limit: int = 100_000,
        duration: float = 600.0,
        wait_ms: int = 1000,
    ) -> None:
        super().__init__("redis-writer", interval, limit, duration)
        self.endpoints = endpoints
        self.password = password
        self.prefix = prefix or f"tload:{uuid.uuid4().hex[:8]}"
        self.wait_ms = wait_ms
        self.masters: list[str] = []  # every master it wrote to, in order
        self.unreplicated = 0  # SETs whose WAIT 1 saw no replica (retried)

    def key(self, seq: int) -> str:
        return f"{self.prefix}:{seq}"

    def _client(self, host: str, port: int) -> redis.Redis:
        # No retries inside redis-py (its default backs off for seconds on a refused
        # connection): a failure comes back at once and the writer finds the master again.
        return redis.Redis(
            host=host,
            port=port,
            password=self.password,
            socket_timeout=2,
            socket_connect_timeout=1,
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),
        )

    def discover(self) -> tuple[redis.Redis | RedisCluster, bool] | None:
        """(client of the current master, whether it has replicas); None when no endpoint
        says it is a master (yet). Endpoints are asked in order: the source's first."""
        current = self.endpoints() if callable(self.endpoints) else self.endpoints
        for host, port in current:
            _loopback(host)
            probe = self._client(host, port)
            try:
                role = probe.execute_command("ROLE")
                if not role or role[0] != "master":
                    probe.close()
                    continue
                info = probe.info()
                if int(info.get("cluster_enabled", 0)):
                    probe.close()
                    cluster = RedisCluster(
                        startup_nodes=[ClusterNode(host, port)],
                        password=self.password,
                        socket_timeout=2,
                        socket_connect_timeout=1,
                        decode_responses=True,
                        retry=Retry(NoBackoff(), 0),
                    )
                    self._mark(f"cluster {host}:{port}")
                    return cluster, self._cluster_has_replicas(cluster)
                self._mark(f"{host}:{port}")
                return probe, int(info.get("connected_slaves", 0)) > 0
            except (redis.RedisError, RedisClusterException):
                probe.close()
                continue
        return None

    @staticmethod
    def _cluster_has_replicas(cluster: RedisCluster) -> bool:
        return any(node.server_type == "replica" for node in cluster.get_nodes())

    def _mark(self, where: str) -> None:
        if not self.masters or self.masters[-1] != where:
            self.masters.append(where)

    def _write(self, client: redis.Redis | RedisCluster, replicas: bool, seq: int) -> bool:
        key = self.key(seq)
        if not client.set(key, str(seq)):
            return False
        if not replicas:
            return True
        if isinstance(client, RedisCluster):
            node = client.get_node_from_key(key)
            copies = client.execute_command("WAIT", 1, self.wait_ms, target_nodes=node)
        else:
            copies = client.execute_command("WAIT", 1, self.wait_ms)
        if int(copies) >= 1:
            return True
        self.unreplicated += 1
        return False

    def loop(self) -> None:
        current: tuple[redis.Redis | RedisCluster, bool] | None = None
        seq = 1
        while self._bounded():
            if current is None:
                current = self.discover()
                if current is None:
                    self.halt.wait(0.05)
                    continue
                self.figures.reconnects += 1
            self.figures.attempts += 1
            try:
                acknowledged = self._write(current[0], current[1], seq)
            except (redis.RedisError, RedisClusterException) as error:
                # READONLY (the master became a replica), refused, timed out, MOVED on a
                # plain client, CLUSTERDOWN: find the master again.
                self.figures.fail(error)
                with contextlib.suppress(Exception):
                    current[0].close()
                current = None
                self.halt.wait(0.05)
                continue
            if not acknowledged:
                # No replica confirmed it within WAIT's timeout: the master may be changing.
                self.figures.fail(TimeoutError("WAIT 1 saw no replica"))
                current = None
                continue
            self.figures.ack(seq)
            seq += 1
            self.halt.wait(self.interval)
        if current is not None:
            with contextlib.suppress(Exception):
                current[0].close()

    def present(self, endpoints: Endpoints | None = None) -> set[int]:
        """Which acknowledged keys hold their value now, read from the master found among
        ``endpoints`` (default: the writer's own)."""
        if endpoints is not None:
            self.endpoints = endpoints
        found = self.discover()
        if found is None:
            raise AssertionError(f"no Redis master among {self.endpoints}")
        client = found[0]
        wanted = sorted(self.figures.acknowledged)
        present: set[int] = set()
        for start in range(0, len(wanted), 500):
            batch = wanted[start : start + 500]
            keys = [self.key(s) for s in batch]
            if isinstance(client, RedisCluster):
                values = client.mget_nonatomic(keys)
            else:
                values = client.mget(keys)
            present.update(s for s, v in zip(batch, values, strict=True) if v == str(s))
        client.close()
        return present


# ----------------------------------------------------------------------- WebSockets


@dataclass
class Subscriber:
    client_id: str
    trip: str
    connected: bool = False
    lost_at: float | None = None
    longest_gap: float = 0.0  # longest time without a subscribed connection
    last_update: float | None = None
    longest_update_gap: float = 0.0  # longest time between two location updates received
    close_codes: list[int | None] = field(default_factory=list)
    gateways: list[str] = field(default_factory=list)
    refused: int = 0
    connections: int = 0


class Subscribers(threading.Thread):
    """``count`` subscribers and one publisher (a driver of all their trips) through one
    WebSocket URL; they reconnect whenever their connection closes."""

    def __init__(
        self,
        ws_url: str,
        jwt_secret: str,
        *,
        count: int = 8,
        publish_interval: float = 0.25,
        duration: float = 600.0,
        issuer: str | None = None,
        audience: str | None = None,
    ) -> None:
        super().__init__(name="ws-subscribers", daemon=True)
        _loopback(str(urlsplit(ws_url).hostname))
        self.ws_url = ws_url
        self.secret = jwt_secret
        self.duration = duration
        self.publish_interval = publish_interval
        self.issuer, self.audience = issuer, audience
        run = uuid.uuid4().hex[:6]
        self.subscribers = [Subscriber(f"load-{run}-{i}", f"tload-{run}-{i}") for i in range(count)]
        self.publisher_gaps: list[float] = []
        self.published = 0
        self.started = 0.0
        self.crash: BaseException | None = None
        self._stop_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()
        self.connected_at_stop: int | None = None

    def _token(self, role: str, trips: Sequence[str]) -> str:
        return mint_token(
            self.secret,
            sub=f"{role}-load",
            role=role,  # type: ignore[arg-type]
            trips=trips,
            ttl=self.duration + 600,
            issuer=self.issuer,
            audience=self.audience,
        )

    async def _connect(self, client_id: str, token: str) -> tuple[ClientConnection, str]:
        ws = await connect(
            f"{self.ws_url}?client_id={client_id}",
            open_timeout=5,
            close_timeout=1,
            subprotocols=[Subprotocol(SUBPROTOCOL), Subprotocol(BEARER_PREFIX + token)],
        )
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
        return ws, str(welcome.get("gateway"))

    async def _subscriber(self, sub: Subscriber, stop: asyncio.Event) -> None:
        token = self._token("rider", [sub.trip])
        sub.lost_at = time.monotonic()
        while not stop.is_set():
            try:
                ws, gateway = await self._connect(sub.client_id, token)
            except (OSError, TimeoutError, InvalidStatus, ConnectionClosed):
                sub.refused += 1
                await asyncio.sleep(0.1)
                continue
            try:
                await ws.send(json.dumps({"type": "subscribe", "trip_id": sub.trip}))
                while True:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    if frame.get("type") == "subscribed":
                        break
                now = time.monotonic()
                if sub.lost_at is not None:
                    sub.longest_gap = max(sub.longest_gap, now - sub.lost_at)
                sub.lost_at = None
                sub.connected = True
                sub.connections += 1
                sub.gateways.append(gateway)
                if all(s.connected for s in self.subscribers):
                    self.ready.set()
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        frame = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                        if frame.get("type") == "location" and frame.get("trip_id") == sub.trip:
                            now = time.monotonic()
                            if sub.last_update is not None:
                                sub.longest_update_gap = max(
                                    sub.longest_update_gap, now - sub.last_update
                                )
                            sub.last_update = now
            except (ConnectionClosed, TimeoutError, OSError) as error:
                sub.close_codes.append(
                    ws.close_code if isinstance(error, ConnectionClosed) else None
                )
            finally:
                if sub.connected and not stop.is_set():
                    sub.lost_at = time.monotonic()
                sub.connected = False
                with contextlib.suppress(Exception):
                    await ws.close()

    async def _publisher(self, stop: asyncio.Event) -> None:
        token = self._token("driver", [s.trip for s in self.subscribers])
        lost: float | None = time.monotonic()
        while not stop.is_set():
            try:
                ws, _ = await self._connect(f"driver-{self.subscribers[0].client_id}", token)
            except (OSError, TimeoutError, InvalidStatus, ConnectionClosed):
                await asyncio.sleep(0.1)
                continue
            if lost is not None:
                self.publisher_gaps.append(time.monotonic() - lost)
                lost = None
            try:
                while not stop.is_set():
                    for sub in self.subscribers:
                        await ws.send(
                            json.dumps(
                                {
                                    "type": "location",
                                    "trip_id": sub.trip,
                                    "lat": 36.8,
                                    "lng": 10.18,
                                    "ts": time.time(),
                                }
                            )
                        )
                        self.published += 1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.publish_interval)
            except (ConnectionClosed, OSError):
                lost = time.monotonic()
            finally:
                with contextlib.suppress(Exception):
                    await ws.close()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        stop = self._stop_event
        tasks = [asyncio.create_task(self._subscriber(s, stop)) for s in self.subscribers]
        tasks.append(asyncio.create_task(self._publisher(stop)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), self.duration)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)

    def run(self) -> None:
        self.started = time.monotonic()
        try:
            asyncio.run(self._main())
        except BaseException as error:
            self.crash = error

    def stop(self, timeout: float = 30.0) -> None:
        self.connected_at_stop = sum(1 for s in self.subscribers if s.connected)
        if self._loop is not None and self._stop_event is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop_event.set)
        self.join(timeout)
        if self.is_alive():
            raise AssertionError(f"the WebSocket subscribers did not stop within {timeout}s")

    def figures(self) -> dict[str, Any]:
        now = time.monotonic()
        subs = self.subscribers
        # A subscriber still without a connection at the end: its gap runs until now.
        gaps = [max(s.longest_gap, now - s.lost_at if s.lost_at else 0.0) for s in subs]
        codes: dict[str, int] = {}
        for s in subs:
            for code in s.close_codes:
                codes[str(code)] = codes.get(str(code), 0) + 1
        return {
            "subscribers": len(subs),
            "connected_at_stop": self.connected_at_stop,
            "reconnections": sum(max(0, s.connections - 1) for s in subs),
            "close_codes": codes,
            "longest_gap_seconds": round(max(gaps, default=0.0), 3),
            "longest_update_gap_seconds": round(
                max((s.longest_update_gap for s in subs), default=0.0), 3
            ),
            "refused_attempts": sum(s.refused for s in subs),
            "published": self.published,
            "gateways_seen": sorted({g for s in subs for g in s.gateways}),
        }


# ---------------------------------------------------------------------------- all


class Load:
    """Rows, keys and WebSocket subscribers together; start(), then stop() and results()."""

    def __init__(
        self,
        *,
        pg_urls: Urls,
        pg_password: str,
        redis_endpoints: Endpoints,
        redis_password: str,
        ws_url: str | None,
        jwt_secret: str | None,
        subscribers: int = 8,
        interval: float = 0.02,
        duration: float = 600.0,
    ) -> None:
        self.pg_password = pg_password
        self.pg_urls = pg_urls
        create_table(multi_host_url(self._urls(), connect_timeout=5), pg_password)
        self.rows = RowWriter(pg_urls, pg_password, interval=interval, duration=duration)
        self.keys = RedisWriter(
            redis_endpoints, redis_password, interval=interval, duration=duration
        )
        self.ws = (
            Subscribers(ws_url, jwt_secret, count=subscribers, duration=duration)
            if ws_url and jwt_secret
            else None
        )
        self.started = 0.0
        self.started_at = 0.0  # unix time, to line the figures up with the transition log
        self.stopped = 0.0

    def _urls(self) -> Sequence[str]:
        return self.pg_urls() if callable(self.pg_urls) else self.pg_urls

    def start(self, settle: float = 20.0) -> None:
        """Start every client; returns once each has one acknowledged write (or subscription)."""
        self.started = time.monotonic()
        self.started_at = time.time()
        for worker in (self.rows, self.keys, self.ws):
            if worker is not None:
                worker.start()
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            ready = (
                bool(self.rows.figures.acknowledged)
                and bool(self.keys.figures.acknowledged)
                and (self.ws is None or self.ws.ready.is_set())
            )
            if ready:
                return
            self._raise_crash()
            time.sleep(0.1)
        raise AssertionError(f"the load did not get going within {settle}s: {self.snapshot()}")

    def _raise_crash(self) -> None:
        for worker in (self.rows, self.keys, self.ws):
            if worker is not None and worker.crash is not None:
                raise AssertionError(f"{worker.name} crashed: {worker.crash!r}") from worker.crash

    def snapshot(self) -> dict[str, Any]:
        return {
            "rows_acknowledged": len(self.rows.figures.acknowledged),
            "keys_acknowledged": len(self.keys.figures.acknowledged),
            "ws": self.ws.figures() if self.ws else None,
        }

    def stop(self) -> None:
        for worker in (self.rows, self.keys, self.ws):
            if worker is not None:
                worker.stop()
        self.stopped = time.monotonic()
        self._raise_crash()

    def results(
        self,
        *,
        pg_read_url: str | None = None,
        redis_read_endpoints: Endpoints | None = None,
    ) -> dict[str, Any]:
        """Every figure (read back through ``pg_read_url`` / ``redis_read_endpoints``,
        by default the writers' own)."""
        rows_acked = self.rows.figures.acknowledged
        read_url = pg_read_url or multi_host_url(self._urls(), connect_timeout=5)
        present_rows = rows_present(read_url, self.pg_password, self.rows.run_id)
        keys_acked = self.keys.figures.acknowledged
        present_keys = self.keys.present(redis_read_endpoints)
        result: dict[str, Any] = {
            "rows_acknowledged": len(rows_acked),
            "rows_present": len(present_rows & rows_acked),
            "rows_missing": sorted(rows_acked - present_rows)[:20],
            "rows_in_doubt_present": len(present_rows - rows_acked),
            "row_failures": self.rows.figures.failures,
            "row_errors": self.rows.figures.errors,
            "row_error_timeline": self.rows.figures.timeline,
            "rows_by_server": self.rows.servers,
            "longest_row_gap_seconds": round(self.rows.figures.longest_gap, 3),
            "longest_row_gap_ended_at": _round(self.rows.figures.longest_gap_at),
            "keys_acknowledged": len(keys_acked),
            "keys_present": len(present_keys),
            "keys_missing": sorted(keys_acked - present_keys)[:20],
            "key_failures": self.keys.figures.failures,
            "key_errors": self.keys.figures.errors,
            "key_error_timeline": self.keys.figures.timeline,
            "redis_masters": self.keys.masters,
            "keys_unreplicated_retried": self.keys.unreplicated,
            "longest_key_gap_seconds": round(self.keys.figures.longest_gap, 3),
            "longest_key_gap_ended_at": _round(self.keys.figures.longest_gap_at),
            "total_seconds": round((self.stopped or time.monotonic()) - self.started, 3),
            "started_at": round(self.started_at, 3),
        }
        if self.ws is not None:
            ws = self.ws.figures()
            result["ws"] = ws
            result["longest_ws_gap_seconds"] = ws["longest_gap_seconds"]
        return result


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def print_figures(title: str, figures: dict[str, Any]) -> None:
    print(f"\n=== {title} ===", flush=True)
    for key, value in figures.items():
        print(f"  {key}: {value}", flush=True)


GAP_TARGET = 5.0  # seconds: issue 12's longest gap between two acknowledged writes


def no_loss(figures: dict[str, Any]) -> bool:
    """Every acknowledged row and key is present afterwards."""
    return (
        figures["rows_acknowledged"] == figures["rows_present"]
        and figures["keys_acknowledged"] == figures["keys_present"]
    )


def assert_nothing_lost(figures: dict[str, Any]) -> None:
    assert figures["rows_acknowledged"] > 0 and figures["keys_acknowledged"] > 0
    assert figures["rows_missing"] == [], figures
    assert figures["keys_missing"] == [], figures
    assert no_loss(figures), figures


def assert_gaps(figures: dict[str, Any]) -> None:
    """No gap between two acknowledged writes (rows, keys) of GAP_TARGET or more."""
    over = {
        name: figures[name]
        for name in ("longest_row_gap_seconds", "longest_key_gap_seconds")
        if figures[name] >= GAP_TARGET
    }
    assert not over, f"over the {GAP_TARGET} s target: {over}"


def report(title: str, result: dict[str, Any], figures: dict[str, Any]) -> None:
    """Print a transition's result, its measurements and the client load's figures, and
    append the figures to the transition's own log (step "client-load")."""
    print_figures(f"transition {title}: {result['outcome']}", result)
    print_figures("transition measurements", result["measurements"])
    print_figures(f"client load {title}", figures)
    tlog.append(
        Path(result["log"]),
        {
            "transition": result["transition"],
            "step": "client-load",
            "event": "report",
            "at": round(time.time(), 3),
            "outcome": "ok" if no_loss(figures) else "failed",
            "measurements": figures,
        },
    )


# ---------------------------------------------------------------------- phase doors


def pg_front_door(summary: dict[str, Any]) -> str:
    """A run's database front door: its PgBouncers where it has them, else its primary
    (HAProxy's read-write door, a Citus coordinator or the plain primary)."""
    section = summary["postgres"]
    return str(section.get("pooler") or section["primary"])


class PhaseDoors:
    """The database front doors and Redis servers of the runs in ``state_dirs`` (source
    first, then the target), read from their state files: a target appears once its `up`
    has completed. What a client configured with both phases' addresses would use."""

    def __init__(self, state_dirs: Sequence[Path]) -> None:
        self.state_dirs = list(state_dirs)
        self._summaries: dict[Path, dict[str, Any]] = {}

    def summaries(self) -> list[dict[str, Any]]:
        found = []
        for folder in self.state_dirs:
            if folder not in self._summaries:
                try:
                    data = json.loads((folder / "state.json").read_text())
                except (OSError, ValueError):
                    continue
                if not data.get("complete") or "postgres" not in data.get("summary", {}):
                    continue
                self._summaries[folder] = data["summary"]
            found.append(self._summaries[folder])
        return found

    def pg_urls(self) -> list[str]:
        return [pg_front_door(s) for s in self.summaries()]

    def redis_endpoints(self) -> list[tuple[str, int]]:
        return [e for s in self.summaries() for e in redis_endpoints(s)]
