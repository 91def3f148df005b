"""WebSocket + HTTP server: authentication, connection lifecycle, local subscriptions, drain.

The clients' port serves the WebSocket endpoint and the probes (``/healthz`` for
readiness, ``/livez`` for liveness) through websockets' ``process_request`` hook;
``/metrics`` has a port of its own (``GATEWAY_METRICS_PORT``) that only scrapers reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Subprotocol

from gateway import protocol
from gateway.auth import (
    FORBIDDEN,
    TRY_AGAIN_LATER,
    UNAUTHENTICATED,
    AuthError,
    Claims,
    OriginPolicy,
    TokenVerifier,
)
from gateway.config import Settings
from gateway.fanout import FanoutBackend, MessageCallback, PublishError, create_backend
from gateway.metrics import Metrics
from gateway.processes import ConnectionCount
from gateway.ratelimit import Strikes, TokenBucket

log = logging.getLogger(__name__)

# Frames up to protocol.MAX_FRAME_CHARS are parsed; larger ones, up to this size, get an
# error frame and the connection stays open. Past it websockets closes with 1009 (message
# too big) without buffering the rest.
MAX_MESSAGE_BYTES = 65536
# Bounds the memory one client can pin on this instance.
MAX_SUBSCRIPTIONS_PER_CONNECTION = 100
# Outbound bytes buffered for one client (beyond what its socket took) before it is
# considered too slow and dropped: about 300 location frames. A rider's app only needs
# the latest positions anyway.
OUTBOUND_BUFFER_BYTES = 65536
# Upper bound for one /healthz Redis check, so probes never hang.
HEALTH_TIMEOUT = 1.0
# Upper bound for verifying one token (a JWKS fetch included).
AUTH_TIMEOUT = 10.0
# Stop: Redis connections closing after the drain get this long (an unreachable Redis must
# not keep a drained process from exiting).
BACKEND_CLOSE_TIMEOUT = 3.0

# Tokens travel as a subprotocol ``bearer.<jwt>`` (browsers cannot set headers on a
# WebSocket, and a subprotocol stays out of URLs and access logs) or as ``?token=<jwt>``.
# A client offering the bearer also offers SUBPROTOCOL, which the server selects:
# browsers fail a handshake whose offered subprotocols got no answer.
SUBPROTOCOL = "sikka.v1"
BEARER_PREFIX = "bearer."
TOKEN_PARAMETER = "token"
# Sustained flooding past the frame rate limit (after HTTP's 429).
RATE_LIMITED = 4429

BackendFactory = Callable[[Settings, MessageCallback], FanoutBackend]
# Frame types sent to clients (gateway_messages_out_total{type}).
OUT_KINDS = ("welcome", "subscribed", "unsubscribed", "location", "error")
# Frame types received from clients (gateway_messages_in_total{type}).
IN_KINDS = ("subscribe", "unsubscribe", "location", "invalid")


class Client:
    """One WebSocket connection and everything this instance holds for it."""

    __slots__ = ("bucket", "claims", "dropped", "expiry", "plain", "strikes", "trips", "ws")

    def __init__(self, ws: ServerConnection, claims: Claims, settings: Settings) -> None:
        self.ws = ws
        self.claims = claims
        now = time.monotonic()
        self.bucket = TokenBucket(settings.rate_limit, settings.rate_burst, now)
        # Refused frames leak away at a tenth of the allowed rate: only a client that
        # keeps flooding piles up more than a burst of them.
        self.strikes = Strikes(settings.rate_burst, settings.rate_limit / 10, now)
        self.expiry: asyncio.TimerHandle | None = None
        self.trips: set[str] = set()
        self.dropped = False
        # No extension (permessage-deflate) negotiated: every frame to this client is the
        # same bytes on the wire as to any other such client, so one encoded frame serves
        # them all.
        self.plain = not ws.protocol.extensions


def text_frame(payload: bytes) -> bytes:
    """``payload`` (UTF-8 JSON) framed as an unmasked, unfragmented WebSocket text frame,
    as a server sends it to a client without extensions: built once per fan-out message
    and written as it is to every such subscriber."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


class Gateway:
    def __init__(
        self,
        settings: Settings,
        backend_factory: BackendFactory = create_backend,
        count: ConnectionCount | None = None,
    ) -> None:
        self.settings = settings
        # Open connections against WEBSOCKET_MAX_CONNECTIONS: this process's, or those of
        # every process sharing the port (GATEWAY_PROCESSES).
        self._count = count or ConnectionCount()
        self.metrics = Metrics()
        # settings.max_connections is already the open-file-derived cap when that is lower
        # (gateway.__main__ lowers it before the gateway starts).
        self.metrics.connection_limit.set(settings.max_connections)
        self.backend = backend_factory(settings, self._on_fanout)
        auth = settings.auth
        self.verifier: TokenVerifier | None = (
            TokenVerifier(
                secret=auth.jwt_secret,
                jwks_url=auth.jwks_url,
                issuer=auth.issuer,
                audience=auth.audience,
            )
            if auth.mode == "required"
            else None
        )
        self.origins = OriginPolicy(auth.allowed_origins)
        self._clients: set[Client] = set()
        self._subscribers: dict[str, set[Client]] = {}
        # Read at scrape time: always current, nothing to keep in step per (un)subscribe.
        self.metrics.active_trips.set_function(lambda: len(self._subscribers))
        self._draining = False
        self._no_clients = asyncio.Event()
        self._no_clients.set()
        self._server: Server | None = None
        self._metrics_server: Server | None = None
        # Strong references to fire-and-forget tasks (asyncio keeps only weak ones).
        self._tasks: set[asyncio.Task[None]] = set()
        self.port: int = settings.port
        self.metrics_port: int = settings.metrics_port
        # Label lookups cost a lock and a dict each: bind the hot ones once.
        self._out = {kind: self.metrics.messages_out.labels(kind) for kind in OUT_KINDS}
        self._in = {kind: self.metrics.messages_in.labels(kind) for kind in IN_KINDS}
        self._out_location = self._out["location"]
        self._in_location = self._in["location"]

    # ----------------------------------------------------------- lifecycle

    async def start(self) -> None:
        await self.backend.start()
        self._server = await serve(
            self._handle,
            self.settings.host,
            self.settings.port,
            process_request=self._process_request,
            select_subprotocol=_select_subprotocol,
            max_size=MAX_MESSAGE_BYTES,
            # Keepalive pings detect dead mobile clients so their slots and
            # subscriptions are released.
            ping_interval=20,
            ping_timeout=20,
            # Bounds how long a close (drain, limit, slow client) waits for a
            # client that never answers the close frame.
            close_timeout=2,
            compression="deflate" if self.settings.compression == "deflate" else None,
            # Several processes may share the port (GATEWAY_PROCESSES): the kernel
            # spreads new connections over them.
            reuse_port=self.settings.reuse_port,
        )
        self.port = _bound_port(self._server, self.port)
        self._metrics_server = await serve(
            _no_websocket,
            self.settings.host,
            self.settings.metrics_port,
            process_request=self._metrics_request,
            close_timeout=1,
        )
        self.metrics_port = _bound_port(self._metrics_server, self.metrics_port)
        log.info(
            "gateway %s listening on %s:%d, metrics on %d (redis mode %s, auth %s)",
            self.settings.gateway_id,
            self.settings.host,
            self.port,
            self.metrics_port,
            self.settings.redis_mode,
            f"required: {'/'.join(self.verifier.algorithms)}" if self.verifier else "DISABLED",
        )
        if self.verifier is None:
            log.warning("authentication is disabled: any client may subscribe and publish")

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
        # Drained once every connection is closed: a handler may still be finishing a
        # publish to a Redis that is gone (stop() ends that), which no client waits for.
        closed = asyncio.gather(*(c.ws.wait_closed() for c in clients), return_exceptions=True)
        try:
            await asyncio.wait_for(closed, self.settings.drain_seconds)
        except TimeoutError:
            still = sum(1 for c in clients if c.ws.state is not State.CLOSED)
            log.warning("drain timeout: %d connections still open", still)

    async def stop(self) -> None:
        servers = [s for s in (self._server, self._metrics_server) if s is not None]
        for server in servers:
            server.close(close_connections=True)
        # The Redis connections close before the handlers are waited for: a handler blocked
        # on an unreachable Redis (a publish being retried) then fails at once and ends.
        try:
            await asyncio.wait_for(self.backend.close(), BACKEND_CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning("redis connections not closed within %gs; exiting", BACKEND_CLOSE_TIMEOUT)
        for server in servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)

    # ---------------------------------------------------------------- HTTP

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return await self._healthz(connection)
        if path == "/livez":
            return self._livez(connection)
        if path == "/metrics":
            return connection.respond(
                HTTPStatus.NOT_FOUND, "metrics are served on the metrics port only\n"
            )
        if self._draining:
            self.metrics.rejected_connections.labels("draining").inc()
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "draining\n")
        return None  # proceed with the WebSocket handshake

    async def _metrics_request(self, connection: ServerConnection, request: Request) -> Response:
        if request.path.split("?", 1)[0] != "/metrics":
            return connection.respond(HTTPStatus.NOT_FOUND, "only /metrics is served here\n")
        response = connection.respond(HTTPStatus.OK, self.metrics.render().decode())
        _set_content_type(response, self.metrics.content_type)
        return response

    @property
    def full(self) -> bool:
        return self._count.value >= self.settings.max_connections

    def _livez(self, connection: ServerConnection) -> Response:
        """Liveness: the event loop answers. Stays 200 while full, draining or cut off
        from Redis, which restarting the process would not cure (and would drop every
        WebSocket it holds)."""
        body = {"status": "alive", "gateway": self.settings.gateway_id}
        response = connection.respond(HTTPStatus.OK, json.dumps(body) + "\n")
        _set_content_type(response, "application/json")
        return response

    async def _healthz(self, connection: ServerConnection) -> Response:
        """Readiness: 200 only while this instance would take a new client."""
        redis_ok = False
        if not self._draining:
            with contextlib.suppress(TimeoutError):
                redis_ok = await asyncio.wait_for(self.backend.healthy(), HEALTH_TIMEOUT)
        if self._draining:
            status = "draining"
        elif not redis_ok:
            status = "redis_unavailable"
        elif self.full:
            # Load balancers route new clients elsewhere; this one's are kept.
            status = "full"
        else:
            status = "ok"
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
        claims = await self._authenticate(ws)
        if isinstance(claims, AuthError):
            reason = {UNAUTHENTICATED: "unauthenticated", FORBIDDEN: "forbidden"}
            self.metrics.rejected_connections.labels(
                reason.get(claims.code, "auth_unavailable")
            ).inc()
            # Debug only: refusals are counted in metrics, and a stream of bad tokens must
            # not flood the log.
            log.debug("refused a connection: %d %s", claims.code, claims.reason)
            await ws.close(claims.code, claims.reason[:120])
            return
        if self._draining:  # the drain began while this client authenticated
            self.metrics.rejected_connections.labels("draining").inc()
            await ws.close(CloseCode.GOING_AWAY, "server shutting down")
            return
        if not self._count.take(self.settings.max_connections):
            self.metrics.rejected_connections.labels("limit").inc()
            await ws.close(CloseCode.TRY_AGAIN_LATER, "connection limit reached, try again later")
            return

        client = Client(ws, claims, self.settings)
        self._clients.add(client)
        self._no_clients.clear()
        self.metrics.open_connections.set(len(self._clients))
        if claims.expires_at is not None and self.verifier is not None:
            # Verification tolerates the leeway; so does the open connection.
            left = claims.expires_at + self.verifier.leeway - time.time()
            client.expiry = asyncio.get_running_loop().call_later(
                max(0.0, left), self._expire, client
            )
        try:
            self._send(client, protocol.welcome(self.settings.gateway_id), "welcome")
            async for raw in ws:
                await self._on_frame(client, raw)
        except ConnectionClosed:
            pass
        finally:
            if client.expiry is not None:
                client.expiry.cancel()
            self._clients.discard(client)
            self._count.release()
            self.metrics.open_connections.set(len(self._clients))
            for trip_id in list(client.trips):
                await self._leave(client, trip_id)
            if not self._clients:
                self._no_clients.set()

    async def _authenticate(self, ws: ServerConnection) -> Claims | AuthError:
        """The client's claims, or an AuthError carrying the close code to send."""
        try:
            return await self._claims(ws)
        except AuthError as refused:
            return refused
        except TimeoutError:
            return AuthError(TRY_AGAIN_LATER, "token check timed out, try again")
        except Exception:
            # Never a 1011 for a client's token: refuse it, and keep the evidence.
            log.exception("unexpected error while checking a token")
            return AuthError(UNAUTHENTICATED, "invalid token")

    async def _claims(self, ws: ServerConnection) -> Claims:
        request = ws.request
        if request is None:  # not reachable after a completed handshake
            raise AuthError(UNAUTHENTICATED, "no handshake request")
        origins = request.headers.get_all("Origin")
        if len(origins) > 1 or not self.origins.allows(origins[0] if origins else None):
            raise AuthError(FORBIDDEN, "origin not allowed")
        if self.verifier is None:
            return Claims.anyone()
        token = request_token(request.path, request.headers.get_all("Sec-WebSocket-Protocol"))
        if self.verifier.uses_network:
            # A JWKS fetch blocks: keep it off the event loop.
            return await asyncio.wait_for(
                asyncio.to_thread(self.verifier.verify, token), AUTH_TIMEOUT
            )
        return self.verifier.verify(token)

    def _expire(self, client: Client) -> None:
        self.metrics.policy_closes.labels("token_expired").inc()
        client.dropped = True  # nothing more is sent or accepted
        self._spawn(self._close(client, UNAUTHENTICATED, "token expired"))

    async def _on_frame(self, client: Client, raw: str | bytes) -> None:
        if client.dropped:
            return  # closing: frames still in flight are ignored
        now = time.monotonic()
        if not client.bucket.take(now):
            self.metrics.denied_frames.labels("rate_limited").inc()
            if client.strikes.add(now):
                self.metrics.policy_closes.labels("rate_limit").inc()
                client.dropped = True
                self._spawn(self._close(client, RATE_LIMITED, "rate limit exceeded"))
                return
            message = f"rate limit exceeded: at most {self.settings.rate_limit:g} frames/s"
            self._send(client, protocol.error(message), "error")
            return
        try:
            frame = protocol.parse_client_frame(raw)
        except protocol.ProtocolError as exc:
            self._in["invalid"].inc()
            self._send(client, protocol.error(str(exc)), "error")
            return
        except Exception:
            # The parser raises nothing else (tests throw arbitrary input at it); should
            # it ever, the client still gets its error frame and keeps its connection.
            log.exception("unexpected error parsing a client frame")
            self._in["invalid"].inc()
            self._send(client, protocol.error("invalid frame"), "error")
            return

        if isinstance(frame, protocol.Subscribe):
            self._in["subscribe"].inc()
            denial = client.claims.subscribe_denial(frame.trip_id)
            if denial is not None:
                self.metrics.denied_frames.labels("forbidden").inc()
                self._send(client, protocol.error(denial), "error")
                return
            if frame.trip_id not in client.trips:
                if len(client.trips) >= MAX_SUBSCRIPTIONS_PER_CONNECTION:
                    self._send(client, protocol.error("too many subscriptions"), "error")
                    return
                await self._join(client, frame.trip_id)
            self._send(client, protocol.subscribed(frame.trip_id), "subscribed")
        elif isinstance(frame, protocol.Unsubscribe):
            self._in["unsubscribe"].inc()
            await self._leave(client, frame.trip_id)
            self._send(client, protocol.unsubscribed(frame.trip_id), "unsubscribed")
        else:
            self._in_location.inc()
            denial = client.claims.publish_denial(frame.trip_id)
            if denial is not None:
                self.metrics.denied_frames.labels("forbidden").inc()
                self._send(client, protocol.error(denial), "error")
                return
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
            if self._draining:
                # The process is leaving: its pub/sub connection closes with it. Telling
                # Redis first would hold the drain up by a round trip per trip, and by a
                # timeout each while Redis is unreachable (a transition's cut-over).
                return
            await self.backend.unsubscribe(protocol.channel_for(trip_id))

    # ------------------------------------------------------------ outbound

    def _on_fanout(self, channel: str, payload: bytes) -> None:
        """Called by the backend for every message on a subscribed channel: writes it to
        every local subscriber at once, from one encoded frame (no task or queue per
        client)."""
        local = self._subscribers.get(channel[len(protocol.CHANNEL_PREFIX) :])
        if not local:
            return
        frame = text_frame(payload)
        sent = 0
        # _write never changes the set (closing a client is left to a task).
        for client in local:
            sent += self._write(client, payload, frame)
        if sent:
            self._out_location.inc(sent)
            server_ts = protocol.event_server_ts(payload)
            if server_ts is not None:
                # Wall clocks of different hosts can disagree slightly; clamp so skew
                # never produces a negative observation.
                latency = max(0.0, time.time() - server_ts)
                self.metrics.fanout_latency.observe(latency, sent)

    def _send(self, client: Client, payload: bytes, kind: str) -> None:
        """Send one frame of this instance's own (welcome, replies, errors)."""
        if self._write(client, payload, None):
            self._out[kind].inc()

    def _write(self, client: Client, payload: bytes, frame: bytes | None) -> bool:
        """Write one text frame now, without waiting: ``frame`` is ``payload`` already
        framed for clients without extensions (None: frame it here). A client that let
        more than OUTBOUND_BUFFER_BYTES pile up is closed with 1008 instead: fan-out never
        waits for one slow reader. Writes are synchronous and whole, so frames never
        interleave with the library's own (pings, close)."""
        ws = client.ws
        if client.dropped or ws.protocol.state is not State.OPEN:
            return False
        transport = ws.transport
        if transport.get_write_buffer_size() > OUTBOUND_BUFFER_BYTES:
            client.dropped = True
            self.metrics.dropped_slow_clients.inc()
            self._spawn(
                self._close(client, CloseCode.POLICY_VIOLATION, "client too slow, reconnect")
            )
            return False
        if client.plain:
            transport.write(text_frame(payload) if frame is None else frame)
        else:  # permessage-deflate: the connection's own compressor frames it
            ws.protocol.send_text(payload)
            ws.send_data()
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close(self, client: Client, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await client.ws.close(code, reason)


def request_token(path: str, subprotocols: Sequence[str]) -> str:
    """The token a handshake presents: a ``bearer.<jwt>`` subprotocol or ``?token=``.
    Raises AuthError when there is none, or more than one."""
    offered = [p.strip() for value in subprotocols for p in value.split(",")]
    found = {p.removeprefix(BEARER_PREFIX) for p in offered if p.startswith(BEARER_PREFIX)}
    try:
        query = parse_qs(urlsplit(path).query, max_num_fields=32)
    except ValueError:
        raise AuthError(UNAUTHENTICATED, "malformed query string") from None
    found.update(query.get(TOKEN_PARAMETER, []))
    found.discard("")
    if not found:
        raise AuthError(UNAUTHENTICATED, "missing token")
    if len(found) > 1:
        raise AuthError(UNAUTHENTICATED, "more than one token presented")
    return found.pop()


def _select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    return Subprotocol(SUBPROTOCOL) if SUBPROTOCOL in offered else None


async def _no_websocket(ws: ServerConnection) -> None:
    """The metrics port answers every request in process_request; never reached."""
    await ws.close()


def _bound_port(server: Server, configured: int) -> int:
    sockets = list(server.sockets)
    return int(sockets[0].getsockname()[1]) if sockets else configured


def _set_content_type(response: Response, value: str) -> None:
    headers: Headers = response.headers
    del headers["Content-Type"]
    headers["Content-Type"] = value
