"""Helpers for the integration tests: clients of a local run (WebSocket, Postgres, Redis).

Every wait is bounded; every connection goes to 127.0.0.1 (or 127.0.0.x replicas).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psutil
import psycopg
import redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from gateway.auth import Role, mint_token
from gateway.server import BEARER_PREFIX, SUBPROTOCOL
from scaling.local import LocalRun, runner
from scaling.local.context import Context
from scaling.local.ports import PortAllocator
from scaling.local.state import RunState
from scaling.local.topology import local_topology
from scaling.model import POOLER_ADMIN_USER, PhaseSpec


def tier_context(spec: PhaseSpec, state_dir: Path, stack: str, secrets: dict[str, str]) -> Context:
    """A local-runner context of ``spec`` for starting tiers one by one (``LocalRun(state,
    secrets).down()`` stops whatever it started)."""
    state = RunState(
        stack=stack,
        phase=spec.phase.value,
        state_dir=str(state_dir),
        secrets_file=str(state_dir / "secrets.json"),
    )
    return Context(
        spec=spec,
        state=state,
        secrets=secrets,
        ports=PortAllocator(),
        topology=local_topology(spec),
        progress=runner.print_progress,
    )


T = TypeVar("T")
STEP = 5.0  # bound for any single WebSocket await


@dataclass
class Phase:
    """A running local phase and the spec it was started from."""

    run: LocalRun
    spec: PhaseSpec

    @property
    def summary(self) -> dict[str, Any]:
        return self.run.summary

    @property
    def password(self) -> str:
        return self.run.secrets["postgres-password"]

    @property
    def redis_password(self) -> str:
        return self.run.secrets["redis-password"]

    @property
    def superuser_password(self) -> str:
        return self.run.secrets["postgres-superuser-password"]

    @property
    def pooler_admin_password(self) -> str:
        return self.run.secrets["pgbouncer-admin-password"]

    def redis_client(self, host: str, port: int, timeout: float = 3) -> redis.Redis:
        """A client for one Redis node of this run (text replies)."""
        return redis.Redis(
            host=host,
            port=port,
            password=self.redis_password,
            decode_responses=True,
            socket_timeout=timeout,
        )

    @property
    def nginx_ws(self) -> str:
        return str(self.summary["nginx"]["ws_url"])

    def token(self, role: Role, *trips: str, ttl: float = 600) -> str:
        """A token the run's gateways accept, signed with the run's key by the gateway's
        own helper (the key `local up` generated and wrote to gateway_auth.key_file)."""
        auth = self.spec.gateway.auth
        return mint_token(
            self.run.secrets["gateway-jwt-secret"],
            sub=f"{role}-{new_marker()[:8]}",
            role=role,
            trips=trips,
            ttl=ttl,
            issuer=auth.issuer,
            audience=auth.audience,
        )


def wait_for(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.2) -> float:
    """Poll until ``check()`` is true (exceptions count as false); returns seconds waited."""
    start = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - start < timeout:
        try:
            if check():
                return time.monotonic() - start
        except Exception as error:
            last = error
        time.sleep(interval)
    raise AssertionError(f"{what}: not true after {timeout}s (last error: {last})")


def run_async(coro: Awaitable[T], timeout: float = 60.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


# ------------------------------------------------------------------------- Postgres


def pg_connect(phase: Phase, url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """Connect to one of the summary's password-less URLs (libpq's, multi-host ones
    included: the hosts are tried in order) with the run's password."""
    options: dict[str, Any] = {"connect_timeout": 5, **kwargs}
    return psycopg.connect(url, password=phase.password, **options)


def url_hosts(url: str) -> list[tuple[str, int]]:
    """(host, port) of every host of a libpq URL, ``postgresql://u@h1:p1,h2:p2/db``."""
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    hosts = []
    for item in netloc.split(","):
        host, _, port = item.rpartition(":")
        hosts.append((host, int(port)))
    return hosts


def pooler_console(
    phase: Phase, user: str = POOLER_ADMIN_USER, password: str | None = None
) -> psycopg.Connection[Any]:
    """The first PgBouncer's console (the virtual database ``pgbouncer``), by default as
    its admin; simple queries only (SHOW, SHUTDOWN, ... are not prepared statements)."""
    host, port = url_hosts(phase.summary["postgres"]["pooler"])[0]
    return psycopg.connect(
        host=host,
        port=port,
        user=user,
        password=phase.pooler_admin_password if password is None else password,
        dbname="pgbouncer",
        autocommit=True,
        connect_timeout=5,
        cursor_factory=psycopg.ClientCursor,
    )


def pg_value(phase: Phase, url: str, query: str, *params: Any) -> Any:
    with pg_connect(phase, url, prepare_threshold=None) as conn:
        row = conn.execute(query, params or None).fetchone()
        return row[0] if row else None


def new_marker() -> str:
    return uuid.uuid4().hex


# ------------------------------------------------------------------------ WebSocket


def bearer(token: str) -> list[Subprotocol]:
    """The subprotocols that present ``token`` (gateway/README.md, Authentication)."""
    return [Subprotocol(SUBPROTOCOL), Subprotocol(BEARER_PREFIX + token)]


async def open_client(base_url: str, client_id: str, token: str) -> tuple[ClientConnection, str]:
    """Connect through Nginx with ``client_id``, presenting ``token``; returns the socket
    and the gateway id."""
    ws = await connect(
        f"{base_url}?client_id={client_id}",
        open_timeout=STEP,
        close_timeout=1,
        subprotocols=bearer(token),
    )
    welcome = await recv_json(ws)
    assert welcome["type"] == "welcome", welcome
    return ws, str(welcome["gateway"])


async def recv_json(ws: ClientConnection, timeout: float = STEP) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    data = json.loads(raw)
    assert isinstance(data, dict)
    return data


async def subscribe(ws: ClientConnection, trip_id: str) -> None:
    await ws.send(json.dumps({"type": "subscribe", "trip_id": trip_id}))
    while True:
        frame = await recv_json(ws)
        if frame["type"] == "subscribed" and frame["trip_id"] == trip_id:
            return


async def send_location(ws: ClientConnection, trip_id: str, lat: float = 36.8) -> None:
    await ws.send(
        json.dumps(
            {"type": "location", "trip_id": trip_id, "lat": lat, "lng": 10.18, "ts": time.time()}
        )
    )


async def wait_location(ws: ClientConnection, trip_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no location for {trip_id} within {timeout}s")
        frame = await recv_json(ws, left)
        if frame.get("type") == "location" and frame.get("trip_id") == trip_id:
            return frame


async def deliver(
    publisher: ClientConnection, subscriber: ClientConnection, trip_id: str, timeout: float
) -> float:
    """Publish until the subscriber receives one update (publishing may be refused during a
    failover: the gateway then answers "publish failed, please resend"). Returns seconds."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        await send_location(publisher, trip_id)
        try:
            await wait_location(subscriber, trip_id, 1.0)
            return time.monotonic() - start
        except TimeoutError:
            continue
    raise TimeoutError(f"no update for {trip_id} reached the subscriber within {timeout}s")


async def client_ids_on_distinct_gateways(
    base_url: str, wanted: int, token: str, attempts: int = 60
) -> dict[str, str]:
    """client_id -> gateway id, ``wanted`` ids that hash to ``wanted`` different gateways
    (each probe connects with ``token``)."""
    found: dict[str, str] = {}
    for index in range(attempts):
        client_id = f"rider-{index}"
        ws, gateway = await open_client(base_url, client_id, token)
        await ws.close()
        if gateway not in found.values():
            found[client_id] = gateway
        if len(found) == wanted:
            return found
    raise AssertionError(f"only {len(found)} distinct gateways after {attempts} client ids")


# -------------------------------------------------------------------------- processes


def run_pids(run: LocalRun) -> dict[int, float]:
    """pid -> start time of every process of the run and all their descendants."""
    pids: dict[int, float] = {}
    for entry in run.state.processes:
        if entry.pid is None or not run.alive(entry.name):
            continue
        proc = psutil.Process(entry.pid)
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                pids[p.pid] = p.create_time()
    return pids


def still_alive(pids: dict[int, float]) -> list[int]:
    alive = []
    for pid, started in pids.items():
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - started) < 0.05 and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive
