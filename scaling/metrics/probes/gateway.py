"""Every gateway process's /metrics (Prometheus text, parsed with prometheus_client's own
parser): open WebSockets against ``gateway_connection_limit``, active trip channels, and the
messages in and out per second — the counters scraped twice, :data:`RATE_INTERVAL` apart."""

from __future__ import annotations

import time
from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families

from scaling.metrics.model import Reading
from scaling.metrics.probes import TIMEOUT, unreachable

RATE_INTERVAL = 1.0


def parse(text: str) -> dict[str, float]:
    """Every sample of an exposition, summed over its labels, by sample name
    (``gateway_messages_in_total``, ``gateway_open_connections``, ...)."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + float(sample.value)
    return totals


def readings_from(
    instance: str,
    first: Mapping[str, float],
    second: Mapping[str, float],
    seconds: float,
    fallback_limit: float | None = None,
) -> tuple[list[Reading], list[str]]:
    """Readings of two scrapes ``seconds`` apart (gauges from the second)."""
    notes: list[str] = []
    limit = second.get("gateway_connection_limit")
    if limit is None:
        limit = fallback_limit
        notes.append(
            f"gateway {instance}: exports no gateway_connection_limit; judged against the "
            f"stack's connectionsPerReplica ({fallback_limit})"
        )
    if "gateway_open_connections" not in second:
        return [
            unreachable(
                "gateway.connections",
                "gateway",
                instance,
                "no gateway_open_connections in its /metrics",
                "connections",
            )
        ], notes
    readings = [
        Reading(
            "gateway.connections",
            "gateway",
            instance,
            second["gateway_open_connections"],
            limit or None,
            "connections",
        ),
    ]
    if "gateway_active_trips" in second:
        readings.append(
            Reading(
                "gateway.active_trips",
                "gateway",
                instance,
                second["gateway_active_trips"],
                None,
                "trips",
            )
        )
    else:
        notes.append(f"gateway {instance}: exports no gateway_active_trips")
    for key, name in (
        ("gateway.messages_in", "gateway_messages_in_total"),
        ("gateway.messages_out", "gateway_messages_out_total"),
    ):
        if name in first and name in second and seconds > 0:
            rate = max(second[name] - first[name], 0.0) / seconds
            readings.append(Reading(key, "gateway", instance, rate, None, "messages/s"))
    return readings, notes


def _instance(url: str) -> str:
    return httpx.URL(url).netloc.decode()


def probe_gateway(
    url: str, fallback_limit: float | None = None, interval: float = RATE_INTERVAL
) -> tuple[list[Reading], list[str]]:
    instance = _instance(url)
    try:
        with httpx.Client(timeout=TIMEOUT) as client:
            start = time.monotonic()
            first = client.get(url)
            first.raise_for_status()
            time.sleep(interval)
            second = client.get(url)
            second.raise_for_status()
            seconds = time.monotonic() - start
        return readings_from(
            instance, parse(first.text), parse(second.text), seconds, fallback_limit
        )
    except (httpx.HTTPError, ValueError) as error:
        return [unreachable("gateway.connections", "gateway", instance, error, "connections")], []
