"""Levels of a measurement, from the phase's own thresholds: the one table the alert rules
(:mod:`scaling.render.alerts`) read too, so the checker and Prometheus cannot disagree.

Which threshold judges a reading is decided by the last word of its key:

==================  ==================================  =====================================
key ends in         threshold (``sikka:thresholds.*``)  examples
==================  ==================================  =====================================
``cpu``             ``cpuPercent``                      host.cpu
``memory``          ``memoryPercent``                   host.memory, redis.memory
``connections``     ``connectionsPercent``              postgres.connections, gateway.connections,
                                                        nginx.connections,
                                                        pgbouncer.server_connections
``clients``         ``connectionsPercent``              pgbouncer.clients, redis.clients
==================  ==================================  =====================================

Any other key (replica lag, active trips, hit ratio, ...) is reported without a level.

The bands scale the seed's "60-80 % warning, 80 %+ critical" to each phase: the phase's
threshold ``T`` takes the place of 80 %, and the warning band starts at the same fraction
of it, ``60 / 80 = 0.75 T``. For a reading at ``p`` percent of its limit::

    optimal   p < 0.75 T
    warning   0.75 T <= p < T
    critical  T <= p

so launch CPU (T = 60) is a warning from 45 %, launch connections (T = 80) from 60 %
exactly as the seed says, growth connections (T = 85) from 63.75 %. The alert rules fire at
``>= T`` held for :data:`SUSTAINED_SECONDS`, the default window of a sustained breach.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from scaling.metrics.model import Reading
from scaling.model import PhaseSpec

# The seed's warning band starts at 60 % of a scale whose critical level is 80 %.
WARNING_FRACTION = 60 / 80
# How long a breach must last before it is a reason to act: the alert rules' `for:`.
SUSTAINED_SECONDS = 600


class Level(StrEnum):
    OPTIMAL = "optimal"
    WARNING = "warning"
    CRITICAL = "critical"
    UNREACHABLE = "unreachable"


# The last segment of a reading key → the Thresholds field that judges it.
DIMENSIONS: dict[str, str] = {
    "cpu": "cpu_percent",
    "memory": "memory_percent",
    "connections": "connections_percent",
    "clients": "connections_percent",
}
# Thresholds field → its stack-file key, for reasons and errors.
THRESHOLD_KEYS: dict[str, str] = {
    "cpu_percent": "thresholds.cpuPercent",
    "memory_percent": "thresholds.memoryPercent",
    "connections_percent": "thresholds.connectionsPercent",
}


@dataclass(frozen=True)
class Band:
    """The levels of one kind of reading in one phase, in percent of the reading's limit."""

    field: str  # Thresholds field, e.g. "cpu_percent"
    warning_from: float
    critical_from: float  # the phase's threshold itself

    @property
    def config_key(self) -> str:
        return THRESHOLD_KEYS[self.field]

    def level(self, percent: float) -> Level:
        if percent >= self.critical_from:
            return Level.CRITICAL
        if percent >= self.warning_from:
            return Level.WARNING
        return Level.OPTIMAL


def threshold_field(key: str) -> str | None:
    """The Thresholds field that judges readings with this key, if any: by the last word of
    its last segment ("pgbouncer.server_connections" is judged as connections)."""
    return DIMENSIONS.get(key.rsplit(".", 1)[-1].rsplit("_", 1)[-1])


def band_for(key: str, spec: PhaseSpec) -> Band | None:
    field = threshold_field(key)
    if field is None:
        return None
    threshold = float(getattr(spec.thresholds, field))
    return Band(field=field, warning_from=threshold * WARNING_FRACTION, critical_from=threshold)


@dataclass(frozen=True)
class Judgement:
    """A reading with its level: ``level`` None means no threshold applies to it, or it
    has no limit to be a percentage of (it is reported, not judged)."""

    reading: Reading
    percent: float | None
    band: Band | None
    level: Level | None


def judge(reading: Reading, spec: PhaseSpec) -> Judgement:
    band = band_for(reading.key, spec)
    if not reading.reachable:
        return Judgement(reading, None, band, Level.UNREACHABLE)
    percent = reading.percent
    if band is None or percent is None:
        return Judgement(reading, percent, band, None)
    return Judgement(reading, percent, band, band.level(percent))


def judge_all(readings: tuple[Reading, ...] | list[Reading], spec: PhaseSpec) -> list[Judgement]:
    return [judge(r, spec) for r in readings]


SEVERITY = {Level.OPTIMAL: 0, Level.WARNING: 1, Level.CRITICAL: 2}


def worst(levels: list[Level | None]) -> Level:
    """The most severe of the judged levels (unreachable and unjudged aside); optimal when
    nothing was judged."""
    judged = [lv for lv in levels if lv in SEVERITY]
    return max(judged, key=SEVERITY.__getitem__, default=Level.OPTIMAL)
