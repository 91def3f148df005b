"""Open WebSockets through Nginx at a bounded rate, each from a given source address, and
count what happened to every attempt.

Interface (what the capacity run uses; another client can stand in for it)::

    run_client(main())        # the load generator's event loop (uvloop)

    opened = await open_connections(url, count, source_for=..., token_for=..., rate=...)
    # url: one URL (Nginx) or a function of the index (gateways directly, as
    # benchmarks/gateway_fanout.py does); compression: what the client offers (None, or
    # "deflate" as browsers do - the server decides)
    opened.connections        # the ones the gateway welcomed, by index
    opened.refused            # Counter: "http 429", "close 1013", ...
    opened.errors             # Counter: "timeout", "ConnectionResetError", ...
    tally(opened)             # held / refused / errors, counted again at the end

An attempt counts as opened once the gateway's ``welcome`` frame arrives (a full gateway
completes the handshake, then closes with 1013). Refused: an HTTP status instead of the
upgrade, or a close code from the server before the welcome. Errors: anything else (a
timeout, a reset, a close without a code), and connections that were open and closed later.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus
from websockets.typing import Subprotocol

SUBPROTOCOL = "sikka.v1"
BEARER_PREFIX = "bearer."
OPEN_TIMEOUT = 15.0

T = TypeVar("T")


@dataclass
class Opened:
    index: int
    address: str
    ws: ClientConnection
    gateway: str


@dataclass
class OpenResult:
    attempted: int
    connections: dict[int, Opened] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


def _subprotocols(token: str | None) -> list[Subprotocol] | None:
    if token is None:
        return None
    return [Subprotocol(SUBPROTOCOL), Subprotocol(BEARER_PREFIX + token)]


def close_reason(error: ConnectionClosed) -> tuple[bool, str]:
    """(refused?, label) for a connection the server closed: a close code it chose is a
    refusal (1013 full, 4401 token, ...); a close without one is an error."""
    received = error.rcvd
    if received is None or received.code in (1005, 1006):
        return False, "closed without a close frame"
    return True, f"close {received.code}"


def _count_close(result: OpenResult, closed: ConnectionClosed) -> None:
    """A connection closed before its welcome: a refusal (a close code the gateway or Nginx
    refuses with) or an error, under its label."""
    is_refusal, label = close_reason(closed)
    (result.refused if is_refusal else result.errors)[label] += 1


async def _open_one(
    url: str,
    index: int,
    address: str,
    token: str | None,
    compression: str | None,
    result: OpenResult,
) -> None:
    try:
        ws = await connect(
            f"{url}?client_id=bench-{index}",
            subprotocols=_subprotocols(token),
            compression=compression,
            proxy=None,
            open_timeout=OPEN_TIMEOUT,
            ping_interval=None,
            close_timeout=2,
            local_addr=(address, 0),
        )
    except InvalidStatus as refused:
        result.refused[f"http {refused.response.status_code}"] += 1
        return
    except ConnectionClosed as closed:
        _count_close(result, closed)
        return
    except TimeoutError:
        result.errors["timeout"] += 1
        return
    except InvalidMessage:  # the connection ended before an HTTP response was read
        result.errors["no HTTP response"] += 1
        return
    except Exception as error:  # reset, refused by the kernel, ...: one label per kind
        result.errors[type(error).__name__] += 1
        return
    try:
        first = await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT)
    except ConnectionClosed as closed:
        _count_close(result, closed)
        return
    except TimeoutError:
        result.errors["no welcome"] += 1
        await _abort(ws)
        return
    gateway = _welcome_gateway(first)
    if gateway is None:
        result.errors["no welcome"] += 1
        await _abort(ws)
        return
    result.connections[index] = Opened(index, address, ws, gateway)


def _welcome_gateway(frame: str | bytes) -> str | None:
    try:
        message: Any = json.loads(frame)
    except ValueError:
        return None
    if isinstance(message, dict) and message.get("type") == "welcome":
        return str(message.get("gateway"))
    return None


async def _abort(ws: ClientConnection) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(), 2)


async def open_connections(
    url: str | Callable[[int], str],
    count: int,
    *,
    source_for: Callable[[int], str],
    token_for: Callable[[int], str | None],
    rate: float,
    concurrency: int,
    compression: str | None = None,
) -> OpenResult:
    """Open ``count`` connections, starting at most ``rate`` per second with at most
    ``concurrency`` handshakes in flight. ``url`` is one URL for all, or the URL of
    connection ``index``; ``compression`` is what the client offers."""

    def url_for(index: int) -> str:
        return url if isinstance(url, str) else url(index)

    result = OpenResult(attempted=count)
    gate = asyncio.Semaphore(concurrency)
    began = time.monotonic()

    async def attempt(index: int) -> None:
        async with gate:
            await _open_one(
                url_for(index), index, source_for(index), token_for(index), compression, result
            )

    tasks = []
    for index in range(count):
        delay = began + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await gate.acquire()  # keep the schedule from running ahead of the slots
        gate.release()
        tasks.append(asyncio.create_task(attempt(index)))
    await asyncio.gather(*tasks)
    result.seconds = time.monotonic() - began
    return result


def run_client(main: Coroutine[Any, Any, T]) -> T:
    """Run the load generator's coroutine on uvloop, the event loop the gateways run on:
    the generator shares the machine's cores with the system it measures, and uvloop's
    socket I/O costs a fraction of the selector loop's per frame."""
    return uvloop.run(main)


def tally(result: OpenResult) -> dict[str, Any]:
    """Held now, refused, errors (including connections that were open and are closed
    now): held + refused + errors == attempted."""
    errors = Counter(result.errors)
    held = 0
    for opened in result.connections.values():
        if opened.ws.close_code is None:
            held += 1
        else:
            errors[f"dropped (close {opened.ws.close_code})"] += 1
    refused = sum(result.refused.values())
    return {
        "attempted": result.attempted,
        "opened": len(result.connections),
        "held": held,
        "refused": refused,
        "errors": sum(errors.values()),
        "refused_by": dict(sorted(result.refused.items())),
        "errors_by": dict(sorted(errors.items())),
        "open_seconds": round(result.seconds, 2),
        "per_gateway": dict(
            sorted(Counter(o.gateway for o in result.connections.values()).items())
        ),
    }


async def close_all(result: OpenResult) -> None:
    await asyncio.gather(*(_abort(o.ws) for o in result.connections.values()))
