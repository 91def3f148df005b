"""The Prometheus check: the readings of :mod:`scaling.metrics.queries` as instant queries
(one Sample now) and range queries (one Sample per step over the window, the evidence of a
sustained breach), through Prometheus's HTTP API.

A scrape target that is down (``up == 0``) becomes its tier's unreachable Reading; a
Prometheus that does not answer becomes the one unreachable Reading
``monitoring.prometheus`` — never a row of zeros.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import httpx

from scaling.metrics.model import Reading, Sample
from scaling.metrics.probes import unreachable
from scaling.metrics.queries import JOB_TIERS, MAIN_KEY, PART_UP, Measure, measures
from scaling.model import PhaseSpec

TIMEOUT = 5.0


class PrometheusError(RuntimeError):
    """Prometheus did not answer a query, or answered an error."""


class Client:
    def __init__(self, url: str, timeout: float = TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str, params: Mapping[str, Any]) -> Any:
        try:
            response = self._http.get(f"{self.url}{path}", params=dict(params))
            body = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise PrometheusError(f"{self.url}: {type(error).__name__}: {error}") from None
        if body.get("status") != "success":
            raise PrometheusError(
                f"{self.url}: {body.get('errorType', 'error')}: {body.get('error', body)}"
            )
        return body["data"]

    def instant(self, query: str, at: float) -> dict[str, float]:
        """instance → value."""
        data = self._get("/api/v1/query", {"query": query, "time": at})
        return {_instance(s["metric"]): float(s["value"][1]) for s in data["result"]}

    def range(
        self, query: str, start: float, end: float, step: float
    ) -> dict[str, dict[float, float]]:
        """instance → {timestamp: value}."""
        data = self._get(
            "/api/v1/query_range", {"query": query, "start": start, "end": end, "step": step}
        )
        return {
            _instance(s["metric"]): {float(t): float(v) for t, v in s["values"]}
            for s in data["result"]
        }

    def down_range(self, start: float, end: float, step: float) -> list[tuple[str, str, float]]:
        """(job, instance, timestamp) of every failed scrape over the range."""
        data = self._get(
            "/api/v1/query_range", {"query": "up == 0", "start": start, "end": end, "step": step}
        )
        return [
            (str(s["metric"].get("job", "")), _instance(s["metric"]), float(t))
            for s in data["result"]
            for t, _ in s["values"]
        ]

    def down_targets(self, at: float) -> list[tuple[str, str, str]]:
        """(job or tier, instance, why) of every target whose last scrape failed and every
        part its exporter reports down."""
        data = self._get("/api/v1/query", {"query": "up == 0", "time": at})
        found = [
            (job, _instance(s["metric"]), f"scrape job {job}: target down")
            for s in data["result"]
            for job in [str(s["metric"].get("job", ""))]
        ]
        for tier, metric in PART_UP.items():
            down = self._get(
                "/api/v1/query", {"query": f"max by (instance) ({metric}) == 0", "time": at}
            )
            why = f"its exporter reports {metric} 0"
            found += [(tier, _instance(s["metric"]), why) for s in down["result"]]
        return found


def _instance(labels: Mapping[str, str]) -> str:
    return str(labels.get("instance") or labels.get("job") or "prometheus")


def _limit_query(m: Measure) -> tuple[str | None, float | None]:
    if m.limit is None:
        return None, None
    try:
        return None, float(m.limit)
    except ValueError:
        return m.limit, None


def _tier_of(job: str) -> str:
    for prefix, tier in JOB_TIERS.items():
        if job == prefix or job.startswith(prefix + "-") or job.startswith(prefix + "_"):
            return tier
    return "monitoring"


def _down_readings(down: list[tuple[str, str, str]]) -> list[Reading]:
    found = []
    for job, instance, why in down:
        tier = _tier_of(job)
        key, unit = MAIN_KEY[tier]
        found.append(unreachable(key, tier, instance, why, unit))
    return found


def _failed(url: str, error: Exception) -> Reading:
    return unreachable("monitoring.prometheus", "monitoring", url, str(error), "targets")


def instant_sample(client: Client, spec: PhaseSpec, at: float | None = None) -> Sample:
    """Every measure now (or at ``at``), plus the targets that are down."""
    at = time.time() if at is None else at
    readings: list[Reading] = []
    try:
        down = client.down_targets(at)
        for m in measures(spec):
            values = client.instant(m.value, at)
            limit_query, constant = _limit_query(m)
            limits = client.instant(limit_query, at) if limit_query else {}
            for instance, value in sorted(values.items()):
                limit = limits.get(instance, constant)
                readings.append(Reading(m.key, m.tier, instance, value, limit, m.unit))
    except PrometheusError as error:
        return Sample(at=at, source="prometheus", readings=(_failed(client.url, error),))
    readings += _down_readings(down)
    return Sample(at=at, source="prometheus", readings=tuple(readings))


def range_samples(
    client: Client, spec: PhaseSpec, window: float, step: float, end: float | None = None
) -> list[Sample]:
    """One Sample per ``step`` over the last ``window`` seconds, oldest first."""
    end = time.time() if end is None else end
    start = end - window
    by_time: dict[float, list[Reading]] = defaultdict(list)
    try:
        for m in measures(spec):
            series = client.range(m.value, start, end, step)
            limit_query, constant = _limit_query(m)
            limits = client.range(limit_query, start, end, step) if limit_query else {}
            for instance, points in series.items():
                for at, value in points.items():
                    limit = limits.get(instance, {}).get(at, constant)
                    by_time[at].append(Reading(m.key, m.tier, instance, value, limit, m.unit))
        down = client.down_range(start, end, step)
    except PrometheusError as error:
        return [Sample(at=end, source="prometheus", readings=(_failed(client.url, error),))]
    for job, instance, at in down:
        by_time[at] += _down_readings([(job, instance, f"scrape job {job}: target down")])
    return [
        Sample(at=at, source="prometheus", readings=tuple(by_time[at])) for at in sorted(by_time)
    ]
