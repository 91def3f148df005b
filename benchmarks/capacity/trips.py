"""The trip load on open WebSockets: riders subscribe to their trip, each driver sends one
location per second, and every rider's receipt is timed against the driver's send.

Interface (what the capacity run uses; another client can stand in for it)::

    figures = await run_trip_load(sockets, members, trip_ids, seconds=60)

``sockets`` maps a connection's index to its open WebSocket, ``members`` (plan.members)
says which trip each index drives or rides. Driver and riders are connections of this one
process, so send and receipt are read off the same clock: the location's ``ts`` is the
driver's ``time.time()`` when it sent, and the latency is the rider's ``time.time()`` when
the frame arrives minus that ``ts``, which the gateways pass through unchanged.

Expected deliveries are, per trip, the locations its driver sent times the riders whose
subscription the gateway confirmed; ``loss`` is expected minus received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import psutil
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from benchmarks.capacity.plan import Member
from benchmarks.capacity.stats import percentile

SUBSCRIBE_TIMEOUT = 30.0
DRAIN_SECONDS = 5.0


@dataclass
class _Tally:
    latencies_ms: list[float] = field(default_factory=list)
    received: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    confirmed: dict[int, asyncio.Event] = field(default_factory=dict)
    # Riders whose subscription was confirmed before the first location: only theirs count.
    eligible: set[int] = field(default_factory=set)
    counting: bool = True


def _location(trip_id: str, sequence: int) -> bytes:
    # Coordinates stay in range whatever the sequence; ts carries the send time. UTF-8
    # JSON, sent as a text frame as it is (orjson: no str step, a fraction of json's CPU).
    lat = 52.5 + (sequence % 100) / 10_000
    return orjson.dumps(
        {"type": "location", "trip_id": trip_id, "lat": lat, "lng": 13.4, "ts": time.time()}
    )


async def _read(ws: ClientConnection, member: Member, tally: _Tally) -> None:
    try:
        async for raw in ws:
            now = time.time()
            try:
                message: Any = orjson.loads(raw)
            except orjson.JSONDecodeError:
                tally.errors["unreadable frame"] += 1
                continue
            kind = message.get("type") if isinstance(message, dict) else None
            if kind == "location":
                if tally.counting and member.index in tally.eligible:
                    tally.received[member.trip] += 1
                    tally.latencies_ms.append((now - float(message["ts"])) * 1000)
            elif kind == "subscribed":
                event = tally.confirmed.get(member.index)
                if event is not None:
                    event.set()
            elif kind == "error":
                tally.errors[str(message.get("error"))[:80]] += 1
    except ConnectionClosed:
        pass


async def _drive(
    ws: ClientConnection, trip_id: str, start: float, offset: float, seconds: int, sent: list[int]
) -> None:
    for second in range(seconds):
        delay = start + second + offset - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            await ws.send(_location(trip_id, second), text=True)
        except ConnectionClosed:
            sent[1] += 1  # a send the closed connection could not take
            continue
        sent[0] += 1


async def run_trip_load(
    sockets: Mapping[int, ClientConnection],
    members: Sequence[Member],
    trip_ids: Sequence[str],
    *,
    seconds: int,
    drain_seconds: float = DRAIN_SECONDS,
) -> dict[str, Any]:
    tally = _Tally()
    present = [m for m in members if m.index in sockets]
    readers = [asyncio.create_task(_read(sockets[m.index], m, tally)) for m in present]
    try:
        riders = [m for m in present if not m.driver]
        for rider in riders:
            tally.confirmed[rider.index] = asyncio.Event()
        await asyncio.gather(
            *(
                _send_quietly(
                    sockets[r.index], json.dumps({"type": "subscribe", "trip_id": trip_ids[r.trip]})
                )
                for r in riders
            )
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(e.wait() for e in tally.confirmed.values())), SUBSCRIBE_TIMEOUT
            )
        tally.eligible = {r.index for r in riders if tally.confirmed[r.index].is_set()}
        subscribed = Counter(r.trip for r in riders if r.index in tally.eligible)
        drivers = [m for m in present if m.driver]
        process = psutil.Process()
        cpu_before, began = process.cpu_times(), time.monotonic()
        start = began + 0.5
        # The sending window on the wall clock, for callers that sample other processes.
        window_start = time.time() + 0.5
        per_driver = {d.trip: [0, 0] for d in drivers}  # trip -> [sent, failed]
        await asyncio.gather(
            *(
                _drive(
                    sockets[d.index],
                    trip_ids[d.trip],
                    start,
                    i / max(1, len(drivers)),
                    seconds,
                    per_driver[d.trip],
                )
                for i, d in enumerate(drivers)
            )
        )
        window_end = time.time()
        expected = sum(sent * subscribed[trip] for trip, (sent, _) in per_driver.items())
        deadline = time.monotonic() + drain_seconds
        while sum(tally.received.values()) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        tally.counting = False
        cpu_after, ended = process.cpu_times(), time.monotonic()
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    received = sum(tally.received.values())
    latencies = tally.latencies_ms
    busy = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    return {
        "trips": len(trip_ids),
        "drivers": len(drivers),
        "riders": len(riders),
        "riders_subscribed": sum(subscribed.values()),
        "seconds": seconds,
        "sent": sum(s for s, _ in per_driver.values()),
        "send_failures": sum(f for _, f in per_driver.values()),
        "publish_errors": sum(
            n for text, n in tally.errors.items() if text.startswith("publish failed")
        ),
        "error_frames": dict(sorted(tally.errors.items())),
        "expected": expected,
        "received": received,
        "loss": expected - received,
        "deliveries_per_second": round(received / seconds, 1) if seconds else None,
        "window": [window_start, window_end],
        "latency_ms": {
            "p50": _rounded(percentile(latencies, 0.50)),
            "p90": _rounded(percentile(latencies, 0.90)),
            "p99": _rounded(percentile(latencies, 0.99)),
            "max": _rounded(max(latencies) if latencies else None),
            "samples": len(latencies),
        },
        # The client's own CPU (one process): near 100 % means the figures above are the
        # load generator's limit, not the phase's.
        "client_cpu_percent": round(100 * busy / max(1e-9, ended - began), 1),
    }


async def _send_quietly(ws: ClientConnection, frame: str) -> None:
    with contextlib.suppress(ConnectionClosed):
        await ws.send(frame)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
