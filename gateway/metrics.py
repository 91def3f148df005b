"""Prometheus metrics for one gateway instance.

Each :class:`Metrics` owns its own registry (instead of the process-global
default) so several gateways can run in one process, as the tests do, without
"duplicated timeseries" errors.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Fan-out on loopback is sub-millisecond; across zones it is a few ms; anything
# past a second means a backlog or a Redis failover.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.open_connections = Gauge(
            "gateway_open_connections",
            "WebSocket connections currently open on this instance.",
            registry=self.registry,
        )
        self.messages_in = Counter(
            "gateway_messages_in",
            "Frames received from clients, by frame type ('invalid' for rejected frames).",
            ["type"],
            registry=self.registry,
        )
        self.messages_out = Counter(
            "gateway_messages_out",
            "Frames sent to clients, by frame type.",
            ["type"],
            registry=self.registry,
        )
        self.rejected_connections = Counter(
            "gateway_rejected_connections",
            "WebSocket connections refused, by reason (limit, draining, unauthenticated, "
            "forbidden, auth_unavailable).",
            ["reason"],
            registry=self.registry,
        )
        self.dropped_slow_clients = Counter(
            "gateway_slow_clients_dropped",
            "Connections closed because their outbound queue overflowed.",
            registry=self.registry,
        )
        self.denied_frames = Counter(
            "gateway_denied_frames",
            "Client frames refused with an error frame, by reason (forbidden, rate_limited).",
            ["reason"],
            registry=self.registry,
        )
        self.policy_closes = Counter(
            "gateway_policy_closes",
            "Open connections closed by the gateway, by reason (rate_limit: 4429, "
            "token_expired: 4401).",
            ["reason"],
            registry=self.registry,
        )
        self.redis_errors = Counter(
            "gateway_redis_errors",
            "Redis operations that failed after the client's own retries.",
            ["operation"],
            registry=self.registry,
        )
        self.fanout_latency = Histogram(
            "gateway_fanout_latency_seconds",
            "Time from the origin gateway's publish timestamp to delivery on this gateway.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
