"""WebSocket + HTTP server: connection lifecycle, local subscriptions, drain.

One port serves both the WebSocket endpoint and the two HTTP paths
(``/healthz``, ``/metrics``) through websockets' ``process_request`` hook, so
load balancers and Prometheus need no second port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from gateway import protocol
from gateway.config import Settings
from gateway.fanout import FanoutBackend, MessageCallback, PublishError, create_backend
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

# Location frames are ~150 bytes; anything much larger is abuse. websockets
# closes the connection with 1009 (message too big) past this size.
MAX_FRAME_BYTES = 4096
# Bounds the memory one client can pin on this instance.
MAX_SUBSCRIPTIONS_PER_CONNECTION = 100
# Outbound frames buffered per client before it is considered too slow and
# dropped; a rider's app only needs the latest positions anyway.
OUTBOUND_QUEUE_SIZE = 256
# Upper bound for one /healthz Redis check, so probes never hang.
HEALTH_TIMEOUT = 1.0

BackendFactory = Callable[[Settings, MessageCallback], FanoutBackend]


class Client:
    """One WebSocket connection and everything this instance holds for it."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.trips: set[str] = set()
        # (frame, type for metrics, origin server_ts for latency or None)
        self.queue: asyncio.Queue[tuple[str, str, float | None]] = asyncio.Queue(
            OUTBOUND_QUEUE_SIZE
        )
        self.dropped = False


class Gateway:
    def __init__(
        self,
        settings: Settings,
        backend_factory: BackendFactory = create_backend,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.backend = backend_factory(settings, self._on_fanout)
        self._clients: set[Client] = set()
        self._subscribers: dict[str, set[Client]] = {}
        self._draining = False
        self._no_clients = asyncio.Event()
        self._no_clients.set()
        self._server: Server | None = None
        # Strong references to fire-and-forget tasks (asyncio keeps only weak ones).
        self._tasks: set[asyncio.Task[None]] = set()
        self.port: int = settings.port

    # ----------------------------------------------------------- lifecycle

    async def start(self) -> None:
        await self.backend.start()
        self._server = await serve(
            self._handle,
            self.settings.host,
            self.settings.port,
            process_request=self._process_request,
            max_size=MAX_FRAME_BYTES,
            # Keepalive pings detect dead mobile clients so their slots and
            # subscriptions are released.
            ping_interval=20,
            ping_timeout=20,
            # Bounds how long a close (drain, limit, slow client) waits for a
            # client that never answers the close frame.
            close_timeout=2,
        )
        sockets = list(self._server.sockets)
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info(
            "gateway %s listening on %s:%d (redis mode %s)",
            self.settings.gateway_id,
            self.settings.host,
            self.port,
            self.settings.redis_mode,
        )

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def open_connections(self) -> int:
        return len(self._clients)

    async def drain(self) -> None:
        """Turn unhealthy, refuse new clients, ask current ones to leave.

        The listener stays open while draining so /healthz can answer 503 and
        new WebSocket attempts get a clean refusal rather than a TCP reset.
        """
        if self._draining:
            return
        self._draining = True
        clients = list(self._clients)
        log.info("draining: closing %d connections with 1001", len(clients))
        for client in clients:
            # close() waits for the client's close frame; run them all at once.
            self._spawn(self._close(client, CloseCode.GOING_AWAY, "server shutting down"))
        try:
            await asyncio.wait_for(self._no_clients.wait(), self.settings.drain_seconds)
        except TimeoutError:
            log.warning("drain timeout: %d connections still open", len(self._clients))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close(close_connections=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        await self.backend.close()

    # ---------------------------------------------------------------- HTTP

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return await self._healthz(connection)
        if path == "/metrics":
            response = connection.respond(HTTPStatus.OK, self.metrics.render().decode())
            _set_content_type(response, self.metrics.content_type)
            return response
        if self._draining:
            self.metrics.rejected_connections.labels("draining").inc()
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "draining\n")
        return None  # proceed with the WebSocket handshake

    async def _healthz(self, connection: ServerConnection) -> Response:
        redis_ok = False
        if not self._draining:
            with contextlib.suppress(TimeoutError):
                redis_ok = await asyncio.wait_for(self.backend.healthy(), HEALTH_TIMEOUT)
        if self._draining:
            status = "draining"
        elif redis_ok:
            status = "ok"
        else:
            status = "redis_unavailable"
        body = {
            "status": status,
            "gateway": self.settings.gateway_id,
            "open_connections": len(self._clients),
            "max_connections": self.settings.max_connections,
            "redis_ok": redis_ok,
            "redis_mode": self.settings.redis_mode,
        }
        code = HTTPStatus.OK if status == "ok" else HTTPStatus.SERVICE_UNAVAILABLE
        response = connection.respond(code, json.dumps(body) + "\n")
        _set_content_type(response, "application/json")
        return response

    # ----------------------------------------------------------- WebSocket

    async def _handle(self, ws: ServerConnection) -> None:
        if self._draining:
            self.metrics.rejected_connections.labels("draining").inc()
            await ws.close(CloseCode.GOING_AWAY, "server shutting down")
            return
        if len(self._clients) >= self.settings.max_connections:
            self.metrics.rejected_connections.labels("limit").inc()
            await ws.close(CloseCode.TRY_AGAIN_LATER, "connection limit reached, try again later")
            return

        client = Client(ws)
        self._clients.add(client)
        self._no_clients.clear()
        self.metrics.open_connections.set(len(self._clients))
        writer = asyncio.create_task(self._write_loop(client))
        try:
            self._send(client, protocol.welcome(self.settings.gateway_id), "welcome")
            async for raw in ws:
                await self._on_frame(client, raw)
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(client)
            self.metrics.open_connections.set(len(self._clients))
            for trip_id in list(client.trips):
                await self._leave(client, trip_id)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            if not self._clients:
                self._no_clients.set()

    async def _on_frame(self, client: Client, raw: str | bytes) -> None:
        try:
            frame = protocol.parse_client_frame(raw)
        except protocol.ProtocolError as exc:
            self.metrics.messages_in.labels("invalid").inc()
            self._send(client, protocol.error(str(exc)), "error")
            return

        if isinstance(frame, protocol.Subscribe):
            self.metrics.messages_in.labels("subscribe").inc()
            if frame.trip_id not in client.trips:
                if len(client.trips) >= MAX_SUBSCRIPTIONS_PER_CONNECTION:
                    self._send(client, protocol.error("too many subscriptions"), "error")
                    return
                await self._join(client, frame.trip_id)
            self._send(client, protocol.subscribed(frame.trip_id), "subscribed")
        elif isinstance(frame, protocol.Unsubscribe):
            self.metrics.messages_in.labels("unsubscribe").inc()
            await self._leave(client, frame.trip_id)
            self._send(client, protocol.unsubscribed(frame.trip_id), "unsubscribed")
        else:
            self.metrics.messages_in.labels("location").inc()
            event = protocol.location_event(frame, self.settings.gateway_id, time.time())
            try:
                await self.backend.publish(protocol.channel_for(frame.trip_id), event)
            except PublishError:
                self.metrics.redis_errors.labels("publish").inc()
                self._send(client, protocol.error("publish failed, please resend"), "error")

    async def _join(self, client: Client, trip_id: str) -> None:
        client.trips.add(trip_id)
        local = self._subscribers.setdefault(trip_id, set())
        local.add(client)
        if len(local) == 1:  # first local subscriber: start receiving the trip
            await self.backend.subscribe(protocol.channel_for(trip_id))

    async def _leave(self, client: Client, trip_id: str) -> None:
        if trip_id not in client.trips:
            return
        client.trips.discard(trip_id)
        local = self._subscribers.get(trip_id)
        if local is None:
            return
        local.discard(client)
        if not local:  # last local subscriber gone: stop receiving the trip
            del self._subscribers[trip_id]
            await self.backend.unsubscribe(protocol.channel_for(trip_id))

    # ------------------------------------------------------------ outbound

    def _on_fanout(self, channel: str, payload: str) -> None:
        """Called by the backend for every message on a subscribed channel."""
        trip_id = channel.removeprefix(protocol.CHANNEL_PREFIX)
        local = self._subscribers.get(trip_id)
        if not local:
            return
        server_ts = protocol.event_server_ts(payload)
        for client in list(local):
            self._send(client, payload, "location", server_ts)

    def _send(self, client: Client, frame: str, kind: str, server_ts: float | None = None) -> None:
        if client.dropped:
            return
        try:
            client.queue.put_nowait((frame, kind, server_ts))
        except asyncio.QueueFull:
            # Never block fan-out on one slow reader: disconnect it instead.
            client.dropped = True
            self.metrics.dropped_slow_clients.inc()
            reason = "client too slow, reconnect"
            self._spawn(self._close(client, CloseCode.POLICY_VIOLATION, reason))

    async def _write_loop(self, client: Client) -> None:
        try:
            while True:
                frame, kind, server_ts = await client.queue.get()
                await client.ws.send(frame)
                self.metrics.messages_out.labels(kind).inc()
                if server_ts is not None:
                    # Wall clocks of different hosts can disagree slightly;
                    # clamp so skew never produces a negative observation.
                    self.metrics.fanout_latency.observe(max(0.0, time.time() - server_ts))
        except ConnectionClosed:
            pass

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close(self, client: Client, code: CloseCode, reason: str) -> None:
        with contextlib.suppress(Exception):
            await client.ws.close(code, reason)


def _set_content_type(response: Response, value: str) -> None:
    headers: Headers = response.headers
    del headers["Content-Type"]
    headers["Content-Type"] = value
