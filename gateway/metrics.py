"""Prometheus metrics for one gateway instance.

Each :class:`Metrics` owns its own registry (instead of the process-global
default) so several gateways can run in one process, as the tests do, without
"duplicated timeseries" errors.

Where they are served: ``/metrics`` on ``GATEWAY_METRICS_PORT`` (not on the clients'
port). With ``GATEWAY_PROCESSES`` = n > 1, every worker process is a gateway of its own
(its own connections, subscriptions and counters) and worker i serves its /metrics on
``GATEWAY_METRICS_PORT + i`` (i = 0 .. n-1): a scraper lists all n ports, and the
container's figures are the sum over them - except ``gateway_connection_limit``, which is
the one cap the workers share (they count their connections together), so every worker
reports the same value and it is taken once.

What readers rely on, by name:

* ``gateway_open_connections`` (gauge) - WebSockets open on this process.
* ``gateway_connection_limit`` (gauge) - the connections accepted (by the container's
  processes together) before new ones are refused with 1013: WEBSOCKET_MAX_CONNECTIONS,
  or the lower cap the open-file limit allows (gateway.limits.connection_cap).
* ``gateway_active_trips`` (gauge) - trip channels with at least one subscriber on this
  process (the channels it is subscribed to in Redis).
* ``gateway_messages_in_total{type}`` / ``gateway_messages_out_total{type}`` (counters) -
  frames received from / sent to clients.
* ``gateway_fanout_latency_seconds`` (histogram) - origin gateway's publish to delivery
  here.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# Fan-out on loopback is sub-millisecond; across zones it is a few ms; anything
# past a second means a backlog or a Redis failover.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class DeliveryHistogram(Collector):
    """A Prometheus histogram whose one observation may count several times: a fan-out
    message written to n subscribers is n deliveries with the same latency, recorded with
    one bucket lookup instead of n ``Histogram.observe`` calls (each takes a lock and
    walks the buckets). Exposed exactly as a ``Histogram`` of the same name and buckets
    (``_bucket{le}``, ``_count``, ``_sum``). Not thread-safe: the gateway's event loop is
    its only writer and reader."""

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = sorted(float(b) for b in buckets)
        # One count per bucket (value <= its bound), the last for the values above all.
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        registry.register(self)

    def observe(self, value: float, times: int = 1) -> None:
        self._counts[bisect_left(self._bounds, value)] += times
        self._sum += value * times

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative, total = [], 0
        for bound, count in zip([*self._bounds, float("inf")], self._counts, strict=True):
            total += count
            cumulative.append((floatToGoString(bound), total))
        family = HistogramMetricFamily(self._name, self._documentation)
        family.add_metric([], cumulative, self._sum)
        yield family


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.open_connections = Gauge(
            "gateway_open_connections",
            "WebSocket connections currently open on this instance.",
            registry=self.registry,
        )
        self.connection_limit = Gauge(
            "gateway_connection_limit",
            "WebSocket connections accepted before new ones are refused with 1013: "
            "WEBSOCKET_MAX_CONNECTIONS, or the lower cap the open-file limit allows "
            "(shared by the processes of a container).",
            registry=self.registry,
        )
        self.active_trips = Gauge(
            "gateway_active_trips",
            "Trip channels with at least one subscriber on this instance.",
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
        self.fanout_latency = DeliveryHistogram(
            "gateway_fanout_latency_seconds",
            "Time from the origin gateway's publish timestamp to delivery on this gateway.",
            LATENCY_BUCKETS,
            self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
