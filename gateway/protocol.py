"""Wire protocol: pure parsing, validation and encoding of JSON frames.

No I/O here, so every rule can be unit-tested without a socket or Redis.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

# Trip ids become Redis channel names. Restricting the alphabet keeps clients
# from injecting cluster hash tags ("{...}") or glob characters, and the length
# cap bounds memory per subscription.
TRIP_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
CHANNEL_PREFIX = "trip:"

# Limits checked before (or while) the JSON parser runs, so that no frame can make it
# recurse, allocate or convert its way into an exception other than ProtocolError:
# a location frame is ~150 characters and one level deep.
MAX_FRAME_CHARS = 4096
MAX_DEPTH = 8
# Longest number literal accepted: enough for any coordinate or timestamp with full
# float precision ("-1.2345678901234567e+308" is 24), far short of a 400-digit integer
# that float() cannot convert.
MAX_NUMBER_CHARS = 32

# Everything but brackets (removed before the depth is counted).
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
# A run of number characters longer than MAX_NUMBER_CHARS: a number literal that long
# (or a string holding such a run) goes to the parser that measures each literal.
_LONG_NUMBER = re.compile(f"[-+.0-9eE]{{{MAX_NUMBER_CHARS + 1},}}")


class ProtocolError(ValueError):
    """A client frame is malformed; the message is sent back to the client."""


@dataclass(frozen=True)
class Subscribe:
    trip_id: str


@dataclass(frozen=True)
class Unsubscribe:
    trip_id: str


@dataclass(frozen=True)
class Location:
    trip_id: str
    lat: float
    lng: float
    ts: float


ClientFrame = Subscribe | Unsubscribe | Location


def channel_for(trip_id: str) -> str:
    return CHANNEL_PREFIX + trip_id


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN/Infinity by default; they are not valid JSON and
    # would poison coordinates downstream.
    raise ProtocolError(f"invalid JSON: {name} is not allowed")


def _number_text(text: str) -> str:
    if len(text) > MAX_NUMBER_CHARS:
        raise ProtocolError(f"invalid JSON: numbers are limited to {MAX_NUMBER_CHARS} characters")
    return text


def _parse_int(text: str) -> int:
    # Bounded length: int() of a huge literal is slow and float() of it overflows.
    return int(_number_text(text))


def _parse_float(text: str) -> float:
    # May be inf ("1e999"); fields that are read are checked to be finite.
    return float(_number_text(text))


def nesting_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """How deep ``[`` / ``{`` nest in ``text`` outside string literals, as far as it
    matters: the result exceeds ``limit`` exactly when the nesting does (so the frame is
    refused before json.loads recurses into it). Linear, with C-speed passes; a frame
    with at most ``limit`` opening brackets needs no scan at all."""
    opens = text.count("[") + text.count("{")
    if opens <= limit:
        return opens
    # Drop escaped backslashes, then escaped quotes: what remains splits on '"' into
    # outside / inside / outside ... string literals.
    outside = "".join(text.replace("\\\\", "").replace('\\"', "").split('"')[0::2])
    depth = deepest = 0
    for char in _NOT_BRACKET.sub("", outside):
        if char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def _trip_id(obj: dict[str, Any]) -> str:
    value = obj.get("trip_id")
    if value is None:
        raise ProtocolError("missing field: trip_id")
    if not isinstance(value, str) or not TRIP_ID_RE.match(value):
        raise ProtocolError("invalid trip_id: expected 1-64 characters of [A-Za-z0-9._:-]")
    return value


def _number(
    obj: dict[str, Any], name: str, lo: float | None = None, hi: float | None = None
) -> float:
    if name not in obj:
        raise ProtocolError(f"missing field: {name}")
    value = obj[name]
    # bool is a subclass of int; true/false are not coordinates.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"invalid {name}: must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise ProtocolError(f"invalid {name}: must be finite")
    if lo is not None and hi is not None and not lo <= number <= hi:
        raise ProtocolError(f"invalid {name}: must be between {lo:g} and {hi:g}")
    return number


def _loads(data: str) -> Any:
    """The JSON value of ``data``, read as json.loads with the number limits would.

    orjson reads every frame whose number literals are all within MAX_NUMBER_CHARS (no
    longer run of number characters anywhere) several times faster; what it refuses
    (NaN, Infinity, 1e999, lone surrogates, malformed text) goes to json.loads with the
    hooks that enforce the limits and say why. For a frame both accept they agree (the
    one difference, an integer beyond 64 bits that orjson reads as a float, is read as a
    float by every field that takes a number)."""
    if _LONG_NUMBER.search(data) is None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(
            data,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
            parse_float=_parse_float,
        )
    except ProtocolError:
        raise
    except (ValueError, RecursionError):
        # RecursionError cannot happen within MAX_DEPTH; kept as a second line of defence.
        raise ProtocolError("invalid JSON") from None


def parse_client_frame(data: str | bytes) -> ClientFrame:
    """Parse one client frame or raise :class:`ProtocolError`."""
    if isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError("binary frames are not supported; send JSON text frames")
    if len(data) > MAX_FRAME_CHARS:
        raise ProtocolError(f"frame too large: at most {MAX_FRAME_CHARS} characters")
    if nesting_depth(data) > MAX_DEPTH:
        raise ProtocolError(f"invalid JSON: nested deeper than {MAX_DEPTH} levels")
    obj = _loads(data)
    if not isinstance(obj, dict):
        raise ProtocolError("frame must be a JSON object")
    kind = obj.get("type")
    if kind is None:
        raise ProtocolError("missing field: type")
    if kind == "subscribe":
        return Subscribe(_trip_id(obj))
    if kind == "unsubscribe":
        return Unsubscribe(_trip_id(obj))
    if kind == "location":
        return Location(
            trip_id=_trip_id(obj),
            lat=_number(obj, "lat", -90.0, 90.0),
            lng=_number(obj, "lng", -180.0, 180.0),
            ts=_number(obj, "ts"),
        )
    if isinstance(kind, str) and len(kind) <= 32:
        raise ProtocolError(f"unknown type: {kind!r}")
    raise ProtocolError("unknown type")


def _dumps(obj: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, ready to go out as a text frame's payload as it is (orjson:
    several times cheaper than json.dumps, and no str -> bytes step before the socket).
    Frames only ever hold finite numbers (parse_client_frame checks them)."""
    return orjson.dumps(obj)


def welcome(gateway_id: str) -> bytes:
    return _dumps({"type": "welcome", "gateway": gateway_id})


def subscribed(trip_id: str) -> bytes:
    return _dumps({"type": "subscribed", "trip_id": trip_id})


def unsubscribed(trip_id: str) -> bytes:
    return _dumps({"type": "unsubscribed", "trip_id": trip_id})


def error(message: str) -> bytes:
    return _dumps({"type": "error", "error": message})


def location_event(frame: Location, gateway_id: str, server_ts: float) -> bytes:
    """The message published to Redis and delivered verbatim to subscribers.

    ``gateway`` names the instance the driver is connected to and ``server_ts``
    is its wall clock at publish time (epoch seconds), so the receiving gateway
    can measure fan-out latency.
    """
    return _dumps(
        {
            "type": "location",
            "trip_id": frame.trip_id,
            "lat": frame.lat,
            "lng": frame.lng,
            "ts": frame.ts,
            "gateway": gateway_id,
            "server_ts": server_ts,
        }
    )


def event_server_ts(payload: str | bytes) -> float | None:
    """Extract ``server_ts`` from a published event, or None if unusable."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    value = obj.get("server_ts") if isinstance(obj, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
