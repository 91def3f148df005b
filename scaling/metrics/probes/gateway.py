"""Every gateway's /metrics, from each of its processes (Prometheus text, parsed with
prometheus_client's own parser): open WebSockets against ``gateway_connection_limit``, active
trip channels, and the messages in and out per second — the counters scraped twice,
:data:`RATE_INTERVAL` apart."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

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
    first: Sequence[Mapping[str, float]],
    second: Sequence[Mapping[str, float]],
    seconds: float,
    fallback_limit: float | None = None,
) -> tuple[list[Reading], list[str]]:
    """Readings of one gateway from two scrapes of each of its processes, ``seconds``
    apart. Its processes' figures add up, except ``gateway_connection_limit``: the cap they
    share, which every process reports (taken once)."""
    notes: list[str] = []
    limits = [s["gateway_connection_limit"] for s in second if "gateway_connection_limit" in s]
    limit = max(limits) if limits else fallback_limit
    if not limits:
        notes.append(
            f"gateway {instance}: exports no gateway_connection_limit; judged against the "
            f"stack's gateway.connectionsPerReplica ({fallback_limit})"
        )
    if not second or any("gateway_open_connections" not in s for s in second):
        missing = "no gateway_open_connections in its /metrics"
        return [
            unreachable("gateway.connections", "gateway", instance, missing, "connections")
        ], notes

    def total(scrapes: Sequence[Mapping[str, float]], name: str) -> float:
        return sum(s[name] for s in scrapes)

    readings = [
        Reading(
            "gateway.connections",
            "gateway",
            instance,
            total(second, "gateway_open_connections"),
            limit or None,
            "connections",
        ),
    ]
    if all("gateway_active_trips" in s for s in second):
        trips = total(second, "gateway_active_trips")
        readings.append(Reading("gateway.active_trips", "gateway", instance, trips, None, "trips"))
    else:
        notes.append(f"gateway {instance}: exports no gateway_active_trips")
    for key, name in (
        ("gateway.messages_in", "gateway_messages_in_total"),
        ("gateway.messages_out", "gateway_messages_out_total"),
    ):
        if seconds > 0 and all(name in s for s in (*first, *second)):
            rate = max(total(second, name) - total(first, name), 0.0) / seconds
            readings.append(Reading(key, "gateway", instance, rate, None, "messages/s"))
    return readings, notes


def _instance(url: str) -> str:
    return httpx.URL(url).netloc.decode()


def probe_gateway(
    urls: Sequence[str], fallback_limit: float | None = None, interval: float = RATE_INTERVAL
) -> tuple[list[Reading], list[str]]:
    """One gateway: the /metrics of each of its processes (worker i on metrics_port + i)."""
    instance = _instance(urls[0])
    try:
        with httpx.Client(timeout=TIMEOUT) as client:

            def scrape() -> list[dict[str, float]]:
                found = []
                for url in urls:
                    response = client.get(url)
                    response.raise_for_status()
                    found.append(parse(response.text))
                return found

            start = time.monotonic()
            first = scrape()
            time.sleep(interval)
            second = scrape()
            seconds = time.monotonic() - start
        return readings_from(instance, first, second, seconds, fallback_limit)
    except (httpx.HTTPError, ValueError) as error:
        return [unreachable("gateway.connections", "gateway", instance, error, "connections")], []
