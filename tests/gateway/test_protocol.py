"""Unit tests for frame parsing, validation and encoding (no I/O)."""

from __future__ import annotations

import json

import pytest

from gateway import protocol
from gateway.protocol import Location, ProtocolError, Subscribe, Unsubscribe, parse_client_frame


def test_valid_frames_parse() -> None:
    assert parse_client_frame('{"type":"subscribe","trip_id":"t-1"}') == Subscribe("t-1")
    assert parse_client_frame('{"type":"unsubscribe","trip_id":"t-1"}') == Unsubscribe("t-1")
    frame = parse_client_frame(
        '{"type":"location","trip_id":"t-1","lat":-90,"lng":180,"ts":1700000000.5}'
    )
    assert frame == Location("t-1", -90.0, 180.0, 1700000000.5)
    # Unknown extra fields are ignored, integers are accepted as numbers.
    frame = parse_client_frame('{"type":"location","trip_id":"a","lat":0,"lng":-180,"ts":1,"x":1}')
    assert isinstance(frame, Location) and frame.lng == -180.0


BAD = [
    pytest.param(b'{"type":"subscribe"}', "binary frames are not supported", id="binary"),
    pytest.param("", "invalid JSON", id="empty"),
    pytest.param("{not json", "invalid JSON", id="not-json"),
    pytest.param('{"type":"location","trip_id":"t","lat":NaN,"lng":0,"ts":1}', "NaN", id="nan"),
    pytest.param("[1,2]", "frame must be a JSON object", id="array"),
    pytest.param('"subscribe"', "frame must be a JSON object", id="string"),
    pytest.param("{}", "missing field: type", id="no-type"),
    pytest.param('{"type":"teleport"}', "unknown type: 'teleport'", id="unknown-type"),
    pytest.param('{"type":42}', "unknown type", id="type-not-string"),
    pytest.param('{"type":"subscribe"}', "missing field: trip_id", id="no-trip"),
    pytest.param('{"type":"subscribe","trip_id":""}', "invalid trip_id", id="empty-trip"),
    pytest.param('{"type":"subscribe","trip_id":7}', "invalid trip_id", id="trip-not-string"),
    pytest.param(
        json.dumps({"type": "subscribe", "trip_id": "x" * 65}), "invalid trip_id", id="long-trip"
    ),
    pytest.param('{"type":"subscribe","trip_id":"{a}b"}', "invalid trip_id", id="hash-tag"),
    pytest.param('{"type":"unsubscribe","trip_id":"a b"}', "invalid trip_id", id="space"),
    pytest.param(
        '{"type":"location","trip_id":"t","lng":0,"ts":1}', "missing field: lat", id="no-lat"
    ),
    pytest.param(
        '{"type":"location","trip_id":"t","lat":0,"ts":1}', "missing field: lng", id="no-lng"
    ),
    pytest.param(
        '{"type":"location","trip_id":"t","lat":0,"lng":0}', "missing field: ts", id="no-ts"
    ),
    pytest.param(
        '{"type":"location","trip_id":"t","lat":90.0001,"lng":0,"ts":1}',
        "invalid lat: must be between -90 and 90",
        id="lat-high",
    ),
    pytest.param(
        '{"type":"location","trip_id":"t","lat":-91,"lng":0,"ts":1}', "invalid lat", id="lat-low"
    ),
    pytest.param(
        '{"type":"location","trip_id":"t","lat":0,"lng":180.5,"ts":1}',
        "invalid lng: must be between -180 and 180",
        id="lng-high",
    ),
    pytest.param(
        '{"type":"location","trip_id":"t","lat":"1","lng":0,"ts":1}',
        "invalid lat: must be a number",
        id="lat-string",
    ),
    pytest.param(
        '{"type":"location","trip_id":"t","lat":0,"lng":true,"ts":1}',
        "invalid lng: must be a number",
        id="lng-bool",
    ),
    pytest.param(
        '{"type":"location","trip_id":"t","lat":0,"lng":0,"ts":null}',
        "invalid ts: must be a number",
        id="ts-null",
    ),
    pytest.param(
        '{"type":"location","trip_id":"t","lat":0,"lng":0,"ts":1e999}',
        "invalid ts: must be finite",
        id="ts-inf",
    ),
]


@pytest.mark.parametrize(("raw", "message"), BAD)
def test_bad_frames_raise_with_clear_message(raw: str | bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_frame(raw)
    assert message in str(info.value)


def test_error_frame_shape() -> None:
    assert json.loads(protocol.error("invalid JSON")) == {"type": "error", "error": "invalid JSON"}


def test_server_frames() -> None:
    assert json.loads(protocol.welcome("gw-1")) == {"type": "welcome", "gateway": "gw-1"}
    assert json.loads(protocol.subscribed("t")) == {"type": "subscribed", "trip_id": "t"}
    assert json.loads(protocol.unsubscribed("t")) == {"type": "unsubscribed", "trip_id": "t"}


def test_location_event_carries_origin_and_server_time() -> None:
    payload = protocol.location_event(Location("t", 1.5, -2.5, 99.0), "gw-b", 1234.5)
    assert json.loads(payload) == {
        "type": "location",
        "trip_id": "t",
        "lat": 1.5,
        "lng": -2.5,
        "ts": 99.0,
        "gateway": "gw-b",
        "server_ts": 1234.5,
    }
    assert protocol.event_server_ts(payload) == 1234.5
    assert protocol.event_server_ts("not json") is None
    assert protocol.event_server_ts('{"server_ts": true}') is None
    assert protocol.channel_for("t") == "trip:t"
