"""Property-based: arbitrary JSON, text and bytes thrown at the frame parser and at a live
`python -m gateway` process. The parser raises nothing but ProtocolError; the gateway
answers every frame (an error frame for a bad one), never closes with 1011, and its log
holds no traceback.

Examples are derandomized (the same ones on every run, so CI cannot flake on a new draw)
and no example database is written.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gw_redis
import pytest
from gw_helpers import bearer, recv_json, run, token
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_gateway_process import ROOT, gateway_env, wait_healthy
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gateway import protocol
from gateway.protocol import (
    Location,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    nesting_depth,
    parse_client_frame,
)

PROPERTY = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Text a WebSocket can carry (UTF-8: no lone surrogates).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=200)
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**600), max_value=10**600),  # past float's range
    st.floats(),  # NaN and infinities included
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(TEXT, children, max_size=5),
    max_leaves=30,
)
FRAME_OBJECTS = st.fixed_dictionaries(
    {"type": st.sampled_from(["subscribe", "unsubscribe", "location"]) | JSON_VALUES},
    optional={
        "trip_id": st.sampled_from(["T1", "T2", "a" * 64, "a" * 65, "{x}"]) | JSON_VALUES,
        "lat": NUMBERS | JSON_VALUES,
        "lng": NUMBERS | JSON_VALUES,
        "ts": NUMBERS | JSON_VALUES,
        "extra": JSON_VALUES,
    },
)


def dumps(value: Any) -> str:
    # json.dumps writes NaN/Infinity for non-finite floats: hostile input, kept on purpose.
    return json.dumps(value)


NESTED = st.builds(
    lambda depth, opener, inner: (opener * depth) + inner + ("]" if opener == "[" else "}") * depth,
    st.integers(min_value=1, max_value=3000),
    st.sampled_from(["[", '{"a":']),
    st.sampled_from(["", "1", '"x"', "[]"]),
)
TEXT_FRAMES = st.one_of(
    FRAME_OBJECTS.map(dumps),
    JSON_VALUES.map(dumps),
    NESTED,
    st.text(st.characters(exclude_categories=("Cs",)), max_size=6000),
    # A valid frame cut short or with a character swapped: near-misses.
    st.builds(
        lambda frame, cut: frame[:cut],
        FRAME_OBJECTS.map(dumps),
        st.integers(min_value=0, max_value=200),
    ),
)
FRAMES = st.one_of(TEXT_FRAMES, st.binary(max_size=2000))
# Well-formed frames mixed in for the live gateway: allowed (T1 is the driver's trip) and
# forbidden (T2 is not), so the paths past the parser run too.
WELL_FORMED = st.sampled_from(
    [
        '{"type":"subscribe","trip_id":"T1"}',
        '{"type":"unsubscribe","trip_id":"T1"}',
        '{"type":"location","trip_id":"T1","lat":36.8,"lng":10.18,"ts":1700000000}',
        '{"type":"subscribe","trip_id":"T2"}',
        '{"type":"location","trip_id":"T2","lat":0,"lng":0,"ts":1700000000}',
    ]
)


@settings(PROPERTY, max_examples=1000)
@given(FRAMES)
def test_the_parser_raises_nothing_but_protocol_error(frame: str | bytes) -> None:
    try:
        parsed = parse_client_frame(frame)
    except ProtocolError as error:
        assert str(error)  # every refusal says why
        return
    assert isinstance(parsed, Subscribe | Unsubscribe | Location)
    if isinstance(parsed, Location):
        assert -90 <= parsed.lat <= 90 and -180 <= parsed.lng <= 180
        assert math.isfinite(parsed.ts)


@PROPERTY
@given(st.integers(min_value=0, max_value=10**4000))
def test_numbers_of_any_length_are_refused_or_read(number: int) -> None:
    frame = f'{{"type":"location","trip_id":"T1","lat":0,"lng":0,"ts":{number}}}'
    try:
        parsed = parse_client_frame(frame)
    except ProtocolError as error:
        assert len(str(number)) > 32 or "frame too large" in str(error), error
        return
    assert isinstance(parsed, Location) and parsed.ts == float(number)


def _reference_parse(frame: str) -> Any:
    """parse_client_frame's outcome with json.loads (and its number hooks) as the only
    JSON reader: the frame it returns, or the refusal's text."""
    original = protocol._loads
    protocol._loads = _json_only
    try:
        return parse_client_frame(frame)
    except ProtocolError as error:
        return str(error)
    finally:
        protocol._loads = original


def _json_only(data: str) -> Any:
    try:
        return json.loads(
            data,
            parse_constant=protocol._reject_constant,
            parse_int=protocol._parse_int,
            parse_float=protocol._parse_float,
        )
    except ProtocolError:
        raise
    except (ValueError, RecursionError):
        raise ProtocolError("invalid JSON") from None


@settings(PROPERTY, max_examples=1000)
@given(TEXT_FRAMES)
def test_the_fast_reader_decides_as_json_loads_would(frame: str) -> None:
    """orjson reads most frames; every frame gets the same frame or refusal as when
    json.loads with the number limits reads it."""
    try:
        parsed: Any = parse_client_frame(frame)
    except ProtocolError as error:
        parsed = str(error)
    assert parsed == _reference_parse(frame)


def true_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((true_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((true_depth(v) for v in value.values()), default=0)
    return 0


# Strings full of what the depth scan must skip: brackets, quotes and backslashes.
TRICKY_TEXT = st.text(st.sampled_from('[]{}"\\ab'), max_size=12)
TRICKY_JSON = st.recursive(
    st.none() | st.integers() | TRICKY_TEXT,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(TRICKY_TEXT, children, max_size=3)
    ),
    max_leaves=40,
)


@settings(PROPERTY, max_examples=1000)
@given(TRICKY_JSON, st.integers(min_value=0, max_value=12))
def test_the_depth_scan_is_exact_on_valid_json(value: Any, limit: int) -> None:
    text = json.dumps(value, ensure_ascii=False)
    assert (nesting_depth(text, limit) > limit) == (true_depth(value) > limit)


# ------------------------------------------------------------------- a live gateway


class LiveGateway:
    def __init__(self, port: int, log: Path, proc: subprocess.Popen[bytes]) -> None:
        self.port, self.log, self.proc = port, log, proc
        self.examples = 0
        self.replies: dict[str, int] = {}
        self.probes = itertools.count()


@pytest.fixture(scope="module")
def live_gateway(
    redis_standalone: gw_redis.RedisProc, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    port = gw_redis.free_port()
    log = tmp_path_factory.mktemp("gateway-fuzz") / "gateway.log"
    env = gateway_env(
        GATEWAY_HOST="127.0.0.1",
        GATEWAY_PORT=str(port),
        GATEWAY_ID="gw-fuzz",
        REDIS_URL=f"redis://127.0.0.1:{redis_standalone.port}/0",
        REDIS_PASSWORD=gw_redis.PASSWORD,
        GATEWAY_DRAIN_SECONDS="1",
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway"], env=env, cwd=ROOT, stdout=out, stderr=out
        )
    try:
        run(wait_healthy(port))
        yield LiveGateway(port, log, proc)
    finally:
        proc.terminate()
        proc.wait(15)


async def exchange(gw: LiveGateway, frames: list[str | bytes]) -> list[dict[str, Any]]:
    """Send the frames, then an unsubscribe probe; every reply up to the probe's answer.
    Fails if the gateway closes the connection."""
    probe = f"probe-{next(gw.probes)}"
    jwt = token("driver", "T1")
    async with connect(f"ws://127.0.0.1:{gw.port}/", subprotocols=bearer(jwt)) as ws:
        assert (await recv_json(ws))["type"] == "welcome"
        try:
            for frame in frames:
                await ws.send(frame)
            await ws.send(json.dumps({"type": "unsubscribe", "trip_id": probe}))
            replies = []
            while True:
                reply = await recv_json(ws)
                if reply == {"type": "unsubscribed", "trip_id": probe}:
                    return replies
                replies.append(reply)
        except ConnectionClosed as closed:
            raise AssertionError(f"the gateway closed the connection: {closed}") from None


def assert_clean(gw: LiveGateway) -> None:
    assert gw.proc.poll() is None, "the gateway died"
    log = gw.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    assert " ERROR " not in log, log[-3000:]


@pytest.mark.integration
@settings(PROPERTY, max_examples=200)
@given(frames=st.lists(WELL_FORMED | FRAMES, min_size=1, max_size=6))
def test_a_live_gateway_answers_every_frame_and_stays_open(
    live_gateway: LiveGateway, frames: list[str | bytes]
) -> None:
    replies = run(exchange(live_gateway, frames))
    live_gateway.examples += 1
    for reply in replies:
        kind = str(reply.get("type"))
        live_gateway.replies[kind] = live_gateway.replies.get(kind, 0) + 1
        assert kind in ("error", "subscribed", "unsubscribed", "location"), reply
    errors = [r for r in replies if r["type"] == "error"]
    assert all(isinstance(e["error"], str) and e["error"] for e in errors)
    # At most one answer per frame, plus the deliveries of the driver's own locations.
    assert len(replies) <= 2 * len(frames)
    assert_clean(live_gateway)


@pytest.mark.integration
def test_the_issues_frames_leave_the_live_gateway_clean(live_gateway: LiveGateway) -> None:
    """The two frames of the report, against the same process; then its whole log."""
    frames: list[str | bytes] = [
        '{"type":"location","trip_id":"T1","lat":' + "9" * 400 + ',"lng":0,"ts":1}',
        "[" * 1900 + "]" * 1900,
    ]
    replies = run(exchange(live_gateway, frames))
    assert [r["error"] for r in replies] == [
        "invalid JSON: numbers are limited to 32 characters",
        "invalid JSON: nested deeper than 8 levels",
    ]
    assert_clean(live_gateway)
    assert "listening on" in live_gateway.log.read_text()
    if live_gateway.examples:
        print(f"\n[fuzz] {live_gateway.examples} connections, replies {live_gateway.replies}")
