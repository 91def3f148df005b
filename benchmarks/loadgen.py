"""Trip load against gateways: drivers publish locations, riders receive them.

    from benchmarks.loadgen import run_trip_load
    result = await run_trip_load(["ws://127.0.0.1:8080/"], trips=400, riders_per_trip=4,
                                 seconds=20)

Each trip has one driver and ``riders_per_trip`` riders. The driver sends one ``location``
frame per ``interval`` seconds (drivers are spread evenly over the interval), carrying its
own wall clock as ``ts``; the gateway passes ``ts`` through untouched, so a rider's latency
is ``time.time()`` at receipt minus ``ts`` - driver send to rider receive on one clock (all
clients run on this machine). Riders and drivers of a trip are spread over the URLs so that
updates cross gateways through Redis as they do in production.

Clients may run in several processes (``processes``), each owning a slice of the trips, so
the clients are not the bottleneck; their figures are merged. Nothing is asserted: the
result is a dict of counts and percentiles for the caller to print or record.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

Role = Literal["driver", "rider"]
# token_for(role, trip_id, index) -> a JWT, or None for gateways without authentication.
TokenFor = Callable[[Role, str, int], str | None]

# The gateway's subprotocols (gateway/README.md "Authentication").
SUBPROTOCOL = "sikka.v1"
BEARER_PREFIX = "bearer."


def no_token(role: Role, trip_id: str, index: int) -> str | None:
    return None


def trip_id(n: int) -> str:
    return f"bench-{n}"


@dataclass
class _Tally:
    """One process's figures."""

    opened: int = 0
    refused: int = 0
    errors: int = 0
    sent: int = 0
    expected: int = 0
    received: int = 0
    error_frames: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    closed_early: int = 0
    window: tuple[float, float] = (0.0, 0.0)
    error_texts: set[str] = field(default_factory=set)

    def error_frame(self, text: str) -> None:
        self.error_frames += 1
        if len(self.error_texts) < 5:
            self.error_texts.add(text[:200])


def percentile(values: Sequence[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _open(
    url: str, jwt: str | None, compression: str | None, tally: _Tally
) -> ClientConnection | None:
    subprotocols = [Subprotocol(SUBPROTOCOL), Subprotocol(BEARER_PREFIX + jwt)] if jwt else None
    try:
        ws = await connect(
            url,
            subprotocols=subprotocols,
            compression=compression,
            open_timeout=30,
            ping_interval=None,
            close_timeout=2,
            max_queue=None,
        )
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if welcome.get("type") != "welcome":
            raise ConnectionError(f"no welcome: {welcome}")
    except InvalidStatus:
        tally.refused += 1
        return None
    except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, ConnectionError):
        tally.errors += 1
        return None
    tally.opened += 1
    return ws


async def _subscribe(ws: ClientConnection, trip: str) -> bool:
    await ws.send(json.dumps({"type": "subscribe", "trip_id": trip}))
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if reply.get("type") == "subscribed":
            return True
        if reply.get("type") == "error":
            return False


async def _slice(
    urls: Sequence[str],
    trips: Sequence[int],
    riders_per_trip: int,
    seconds: float,
    warmup: float,
    interval: float,
    token_for: TokenFor,
    compression: str | None,
    open_concurrency: int,
    settle: float = 3.0,
) -> _Tally:
    tally = _Tally()
    gate = asyncio.Semaphore(open_concurrency)

    async def opened(url: str, role: Role, trip: str, index: int) -> ClientConnection | None:
        async with gate:
            ws = await _open(url, token_for(role, trip, index), compression, tally)
            if ws is not None and role == "rider":
                try:
                    if not await _subscribe(ws, trip):
                        tally.errors += 1
                except (ConnectionClosed, TimeoutError):
                    tally.errors += 1
                    return None
            return ws

    n = len(urls)
    drivers: list[asyncio.Task[ClientConnection | None]] = []
    riders: list[list[asyncio.Task[ClientConnection | None]]] = []
    for t in trips:
        name = trip_id(t)
        drivers.append(asyncio.create_task(opened(urls[t % n], "driver", name, 0)))
        riders.append(
            [
                asyncio.create_task(opened(urls[(t + 1 + i) % n], "rider", name, i))
                for i in range(riders_per_trip)
            ]
        )
    driver_ws = [await d for d in drivers]
    rider_ws = [[await r for r in group] for group in riders]

    loop = asyncio.get_running_loop()
    start = time.time() + 0.5  # everyone starts from the same second
    measure_from = start + warmup
    stop_at = measure_from + seconds
    # ts of the frames sent inside the measured window
    counted: set[float] = set()
    tally.window = (measure_from, stop_at)

    async def drive(k: int, ws: ClientConnection, trip: str, live_riders: int) -> None:
        # Spread the drivers evenly over one interval.
        when = start + interval * k / max(1, len(trips))
        lat = 10.0
        while when < stop_at:
            await asyncio.sleep(max(0.0, when - time.time()))
            now = time.time()
            lat = lat + 0.0001 if lat < 80 else 10.0
            frame = (
                f'{{"type":"location","trip_id":"{trip}","lat":{lat:.6f},"lng":13.4,"ts":{now!r}}}'
            )
            try:
                await ws.send(frame)
            except ConnectionClosed:
                tally.closed_early += 1
                return
            if now >= measure_from:
                tally.sent += 1
                tally.expected += live_riders
                counted.add(now)
            when += interval

    async def ride(ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                now = time.time()
                # Cheap parse: only ts matters ({"...","ts":<float>,"gateway":...}).
                text = raw if isinstance(raw, str) else raw.decode()
                at = text.find('"ts":')
                if at < 0:
                    if '"error"' in text:
                        tally.error_frame(text)
                    continue
                end = text.find(",", at)
                ts = float(text[at + 5 : end])
                if ts in counted:
                    tally.received += 1
                    tally.latencies_ms.append((now - ts) * 1000.0)
        except ConnectionClosed:
            if time.time() < stop_at:
                tally.closed_early += 1

    async def watch_driver(ws: ClientConnection) -> None:
        try:
            async for raw in ws:  # drivers only get error frames ("publish failed")
                text = raw if isinstance(raw, str) else raw.decode()
                if '"error"' in text:
                    tally.error_frame(text)
        except ConnectionClosed:
            pass

    tasks: list[asyncio.Task[None]] = []
    for k, (t, dws, group) in enumerate(zip(trips, driver_ws, rider_ws, strict=True)):
        live = [ws for ws in group if ws is not None]
        for ws in live:
            tasks.append(asyncio.create_task(ride(ws)))
        if dws is not None:
            tasks.append(asyncio.create_task(drive(k, dws, trip_id(t), len(live))))
            tasks.append(asyncio.create_task(watch_driver(dws)))
    await asyncio.sleep(max(0.0, stop_at - time.time()) + settle)  # the last frames land
    del loop
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    everyone = [ws for ws in driver_ws if ws] + [ws for g in rider_ws for ws in g if ws]
    await asyncio.gather(*(ws.close() for ws in everyone), return_exceptions=True)
    return tally


def _slice_in_process(kwargs: dict[str, Any]) -> _Tally:
    try:
        import uvloop

        return uvloop.run(_slice(**kwargs))
    except ImportError:
        return asyncio.run(_slice(**kwargs))


def _merge(tallies: Sequence[_Tally], seconds: float) -> dict[str, Any]:
    total = _Tally()
    for t in tallies:
        for name in ("opened", "refused", "errors", "sent", "expected", "received"):
            setattr(total, name, getattr(total, name) + getattr(t, name))
        total.error_frames += t.error_frames
        total.error_texts |= t.error_texts
        total.closed_early += t.closed_early
        total.latencies_ms.extend(t.latencies_ms)
    lat = total.latencies_ms
    return {
        "window_start": min(t.window[0] for t in tallies),
        "window_end": max(t.window[1] for t in tallies),
        "connections_opened": total.opened,
        "connections_refused": total.refused,
        "connection_errors": total.errors,
        "closed_early": total.closed_early,
        "published": total.sent,
        "expected_deliveries": total.expected,
        "delivered": total.received,
        "loss": (1 - total.received / total.expected) if total.expected else None,
        "error_frames": total.error_frames,
        "error_samples": sorted(total.error_texts),
        "deliveries_per_second": total.received / seconds if seconds else None,
        "p50_ms": percentile(lat, 0.50),
        "p90_ms": percentile(lat, 0.90),
        "p99_ms": percentile(lat, 0.99),
        "max_ms": max(lat) if lat else None,
    }


async def run_trip_load(
    urls: Sequence[str],
    trips: int,
    riders_per_trip: int,
    seconds: float,
    token_for: TokenFor = no_token,
    *,
    warmup: float = 2.0,
    interval: float = 1.0,
    processes: int = 1,
    compression: str | None = "deflate",
    open_concurrency: int = 200,
    settle: float = 3.0,
) -> dict[str, Any]:
    """Open ``trips`` drivers and ``trips * riders_per_trip`` riders over ``urls``, drive
    one location per ``interval`` per driver for ``warmup + seconds``, and return counts
    and percentiles (ms) of the frames sent during the last ``seconds``.

    ``processes`` > 1 runs the clients in that many processes (trips dealt round-robin);
    ``token_for`` must then be picklable (a module-level function). ``compression`` is what
    the clients offer (``"deflate"`` as browsers do, or None); the gateway decides. A
    frame not received within ``settle`` seconds after the last send counts as lost.
    """
    if not urls:
        raise ValueError("at least one URL is needed")
    base: dict[str, Any] = {
        "urls": list(urls),
        "riders_per_trip": riders_per_trip,
        "seconds": seconds,
        "warmup": warmup,
        "interval": interval,
        "token_for": token_for,
        "compression": compression,
        "open_concurrency": max(1, open_concurrency // max(1, processes)),
        "settle": settle,
    }
    if processes <= 1:
        tallies = [await _slice(trips=list(range(trips)), **base)]
    else:
        slices = [{**base, "trips": list(range(p, trips, processes))} for p in range(processes)]
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(processes) as pool:
            tallies = await asyncio.to_thread(pool.map, _slice_in_process, slices)
    return _merge(tallies, seconds)
