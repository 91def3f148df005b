"""What a measurement of a live phase is: Readings grouped into timestamped Samples, and the
outcome of a readiness check.

These records are the one interface between the sources that measure (direct probes,
Prometheus queries), the sample history kept between runs and the pure advisor that
judges them. A part that cannot be reached is a Reading whose ``value`` is ``None`` with the
reason in ``error`` — never a zero.

The history file holds one Sample per line as JSON (:func:`sample_to_json` /
:func:`sample_from_json`); a line that does not parse raises :class:`SampleFormatError`
naming the field, so a damaged history is reported rather than silently misread.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

SOURCES = ("direct", "prometheus")
TIERS = ("host", "postgres", "pgbouncer", "redis", "gateway", "nginx", "monitoring")


class SampleFormatError(ValueError):
    """A serialised Sample (a history line) that is not one."""


@dataclass(frozen=True)
class Reading:
    """One measured quantity of one part.

    ``key`` is a stable dotted id ("host.cpu", "postgres.connections", "redis.memory",
    "gateway.connections", "gateway.active_trips", ...); ``limit`` is the configured capacity
    the value is judged against (``None`` when the value is not a ratio of anything).
    """

    key: str
    tier: str
    instance: str
    value: float | None
    limit: float | None
    unit: str
    error: str | None = None

    @property
    def reachable(self) -> bool:
        return self.value is not None

    @property
    def percent(self) -> float | None:
        """The value as a percentage of its limit; a "percent" reading is one already."""
        if self.value is None:
            return None
        if self.unit == "percent":
            return self.value
        if self.limit is None or self.limit <= 0:
            return None
        return 100.0 * self.value / self.limit


@dataclass(frozen=True)
class Sample:
    """Every Reading taken at one moment from one source."""

    at: float
    source: str
    readings: tuple[Reading, ...]


@dataclass(frozen=True)
class ReadinessCheck:
    """One check of the live system that a phase's progress counts (replicas streaming,
    pooler up, Sentinel quorum reachable, ...). ``critical`` marks a check whose failure
    blocks the phase rather than merely leaving work pending."""

    name: str
    ok: bool
    detail: str = ""
    critical: bool = False


def reading_to_dict(reading: Reading) -> dict[str, Any]:
    return {
        "key": reading.key,
        "tier": reading.tier,
        "instance": reading.instance,
        "value": reading.value,
        "limit": reading.limit,
        "unit": reading.unit,
        "error": reading.error,
    }


def sample_to_dict(sample: Sample) -> dict[str, Any]:
    return {
        "at": sample.at,
        "source": sample.source,
        "readings": [reading_to_dict(r) for r in sample.readings],
    }


def sample_to_json(sample: Sample) -> str:
    """One history line (no newline): compact JSON, keys in a fixed order."""
    return json.dumps(sample_to_dict(sample), separators=(",", ":"), allow_nan=False)


def _field(data: Any, name: str, where: str) -> Any:
    if not isinstance(data, dict):
        raise SampleFormatError(f"{where}: expected an object, got {type(data).__name__}")
    if name not in data:
        raise SampleFormatError(f"{where}.{name}: missing")
    return data[name]


def _str(data: Any, name: str, where: str) -> str:
    value = _field(data, name, where)
    if not isinstance(value, str) or not value:
        raise SampleFormatError(f"{where}.{name}: expected a non-empty string, got {value!r}")
    return value


def _number(data: Any, name: str, where: str, *, optional: bool) -> float | None:
    value = data.get(name) if optional and isinstance(data, dict) else _field(data, name, where)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SampleFormatError(f"{where}.{name}: expected a finite number, got {value!r}")
    return float(value)


def reading_from_dict(data: Any, where: str = "reading") -> Reading:
    error = data.get("error") if isinstance(data, dict) else None
    if error is not None and not isinstance(error, str):
        raise SampleFormatError(f"{where}.error: expected a string or null, got {error!r}")
    return Reading(
        key=_str(data, "key", where),
        tier=_str(data, "tier", where),
        instance=_str(data, "instance", where),
        value=_number(data, "value", where, optional=True),
        limit=_number(data, "limit", where, optional=True),
        unit=_str(data, "unit", where),
        error=error,
    )


def sample_from_dict(data: Any, where: str = "sample") -> Sample:
    at = _number(data, "at", where, optional=False)
    assert at is not None
    source = _str(data, "source", where)
    if source not in SOURCES:
        raise SampleFormatError(f"{where}.source: expected one of {SOURCES}, got {source!r}")
    readings = _field(data, "readings", where)
    if not isinstance(readings, list):
        raise SampleFormatError(f"{where}.readings: expected a list, got {readings!r}")
    return Sample(
        at=at,
        source=source,
        readings=tuple(
            reading_from_dict(r, f"{where}.readings[{i}]") for i, r in enumerate(readings)
        ),
    )


def sample_from_json(line: str) -> Sample:
    """Parse one history line; :class:`SampleFormatError` names what is wrong."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SampleFormatError(f"sample: not JSON ({exc.msg} at column {exc.colno})") from exc
    return sample_from_dict(data)
