"""The fan-out latency histogram records a message's n deliveries in one observation and
is exposed exactly as prometheus_client's Histogram would expose n observations."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from gateway.metrics import LATENCY_BUCKETS, Metrics

NAME = "gateway_fanout_latency_seconds"


def _samples(text: bytes) -> list[str]:
    return [
        line
        for line in text.decode().splitlines()
        if line.startswith(NAME) and not line.startswith(f"{NAME}_created")
    ]


def test_weighted_observations_match_the_library_histogram() -> None:
    metrics = Metrics()
    registry = CollectorRegistry()
    reference = Histogram(NAME, "reference", buckets=LATENCY_BUCKETS, registry=registry)
    # On a bound, between bounds, below the first, past the last, zero.
    for value, deliveries in [(0.0003, 2), (0.001, 3), (0.7, 1), (9.0, 4), (0.0, 5), (2.5, 1)]:
        metrics.fanout_latency.observe(value, deliveries)
        for _ in range(deliveries):
            reference.observe(value)
    ours = _samples(metrics.render())
    assert ours == _samples(generate_latest(registry))
    assert f'{NAME}_bucket{{le="+Inf"}} 16.0' in ours
    assert f"{NAME}_count 16.0" in ours
