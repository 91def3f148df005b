"""Readings, Samples and their history-line form."""

from __future__ import annotations

import json

import pytest

from scaling.metrics.model import (
    ReadinessCheck,
    Reading,
    Sample,
    SampleFormatError,
    sample_from_json,
    sample_to_json,
)


def _sample() -> Sample:
    return Sample(
        at=1_790_000_000.5,
        source="direct",
        readings=(
            Reading("host.cpu", "host", "laptop", 42.5, None, "percent"),
            Reading("postgres.connections", "postgres", "127.0.0.1:5432", 30, 100, "connections"),
            Reading("redis.memory", "redis", "127.0.0.1:6379", None, 1e9, "bytes", "refused"),
        ),
    )


def test_a_sample_survives_a_history_line() -> None:
    sample = _sample()
    line = sample_to_json(sample)
    assert "\n" not in line
    assert sample_from_json(line) == sample


def test_unreachable_stays_none_not_zero() -> None:
    back = sample_from_json(sample_to_json(_sample()))
    redis = back.readings[2]
    assert redis.value is None and not redis.reachable and redis.error == "refused"
    assert redis.percent is None


def test_percent_of_limit() -> None:
    pg = Reading("postgres.connections", "postgres", "pg", 30, 120, "connections")
    assert pg.percent == pytest.approx(25.0)
    assert Reading("host.cpu", "host", "h", 55.0, None, "percent").percent == 55.0
    assert Reading("pgbouncer.clients", "pgbouncer", "p", 5, None, "connections").percent is None


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("at"), "sample.at: missing"),
        (lambda d: d.update(source="guess"), "sample.source"),
        (lambda d: d["readings"][0].update(value="high"), "sample.readings[0].value"),
        (lambda d: d["readings"][1].pop("key"), "sample.readings[1].key: missing"),
        (lambda d: d.update(readings={}), "sample.readings"),
    ],
)
def test_a_damaged_line_names_the_field(mutate, field) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(sample_to_json(_sample()))
    mutate(data)
    with pytest.raises(SampleFormatError, match=field.replace("[", r"\[").replace("]", r"\]")):
        sample_from_json(json.dumps(data))


def test_not_json_is_an_error() -> None:
    with pytest.raises(SampleFormatError, match="not JSON"):
        sample_from_json("{truncated")


def test_nan_is_refused_on_write() -> None:
    bad = Sample(1.0, "direct", (Reading("host.cpu", "host", "h", float("nan"), None, "percent"),))
    with pytest.raises(ValueError):
        sample_to_json(bad)


def test_readiness_check_defaults() -> None:
    check = ReadinessCheck("replicas streaming", ok=False, detail="0 of 2")
    assert not check.ok and not check.critical and check.detail == "0 of 2"
