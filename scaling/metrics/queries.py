"""What each reading key is in PromQL: the one definition the Prometheus check queries and
the alert rules (:mod:`scaling.render.alerts`) compare against the phase's thresholds.

A :class:`Measure` gives a reading key's value and, where it is a ratio, its limit as two
expressions aggregated ``by (instance)``; its percentage (:meth:`Measure.percent`) is what an
alert rule watches. A limit that no exporter publishes (Nginx's worker_connections x
worker_processes) is the stack's number, written into the expression.

Metric names are those of node_exporter, postgres_exporter, prometheus-pgbouncer-exporter,
redis_exporter, nginx-prometheus-exporter and the reference gateway's /metrics. The
definitions follow the direct probes' (scaling/metrics/probes), so both sources agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling.model import PhaseSpec

# Scrape jobs' names → the tier whose targets they scrape (a target down is that tier's
# part unreachable).
JOB_TIERS = {
    "node": "host",
    "postgres": "postgres",
    "pgbouncer": "pgbouncer",
    "redis": "redis",
    "gateway": "gateway",
    "nginx": "nginx",
    "prometheus": "monitoring",
}
# The reading key that carries "unreachable" for a tier's target that is down.
MAIN_KEY = {
    "host": ("host.cpu", "percent"),
    "postgres": ("postgres.connections", "connections"),
    "pgbouncer": ("pgbouncer.clients", "connections"),
    "redis": ("redis.memory", "bytes"),
    "gateway": ("gateway.connections", "connections"),
    "nginx": ("nginx.connections", "connections"),
    "monitoring": ("monitoring.prometheus", "targets"),
}

# An exporter answers its scrape (``up`` 1) while the part it watches is down: it says so in
# its own gauge, 0 for that instance.
PART_UP = {
    "postgres": "pg_up",
    "pgbouncer": "pgbouncer_up",
    "redis": "redis_up",
    "nginx": "nginx_up",
}


@dataclass(frozen=True)
class Measure:
    key: str
    tier: str
    unit: str
    value: str  # PromQL, one series per instance
    limit: str | None = None  # PromQL or a number; None: the value is no ratio

    def percent(self) -> str:
        """The value as a percentage of its limit (or the value, for a percent unit)."""
        if self.unit == "percent":
            return self.value
        if self.limit is None:
            raise ValueError(f"{self.key} has no limit: it is not a percentage")
        limit = self.limit if _is_number(self.limit) else f"on (instance) ({self.limit})"
        return f"100 * ({self.value}) / {limit}"


# The redis job scrapes the Sentinels too (one exporter, every Redis server): the readings of
# Redis are those of its data nodes, as the direct check's are.
_DATA_NODES = ' unless on (instance) redis_instance_info{redis_mode="sentinel"}'


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def measures(spec: PhaseSpec) -> list[Measure]:
    """Every reading key the Prometheus check produces, for this phase."""
    return [
        Measure(
            "host.cpu",
            "host",
            "percent",
            '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])))',
            "100",
        ),
        Measure(
            "host.memory",
            "host",
            "percent",
            "100 * (1 - max by (instance) (node_memory_MemAvailable_bytes)"
            " / max by (instance) (node_memory_MemTotal_bytes))",
            "100",
        ),
        Measure(
            "postgres.connections",
            "postgres",
            "connections",
            "sum by (instance) (pg_stat_activity_count)",
            "max by (instance) (pg_settings_max_connections)",
        ),
        Measure(
            "postgres.replica_lag_seconds",
            "postgres",
            "seconds",
            "max by (instance) (pg_replication_lag_seconds)"
            " and on (instance) max by (instance) (pg_replication_is_replica) == 1",
        ),
        Measure(
            "pgbouncer.clients",
            "pgbouncer",
            "connections",
            "sum by (instance) (pgbouncer_pools_client_active_connections)"
            " + sum by (instance) (pgbouncer_pools_client_waiting_connections)",
            "max by (instance) (pgbouncer_config_max_client_connections)",
        ),
        Measure(
            "pgbouncer.waiting_clients",
            "pgbouncer",
            "connections",
            "sum by (instance) (pgbouncer_pools_client_waiting_connections)",
        ),
        Measure(
            "redis.memory",
            "redis",
            "bytes",
            "max by (instance) (redis_memory_used_bytes)",
            "max by (instance) (redis_memory_max_bytes) > 0",
        ),
        Measure(
            "redis.clients",
            "redis",
            "connections",
            f"max by (instance) (redis_connected_clients){_DATA_NODES}",
            "max by (instance) (redis_config_maxclients)",
        ),
        Measure(
            "redis.evicted_keys",
            "redis",
            "keys",
            f"max by (instance) (redis_evicted_keys_total){_DATA_NODES}",
        ),
        Measure(
            "gateway.connections",
            "gateway",
            "connections",
            # A gateway of several processes is one instance (label "worker" apart): its
            # connections and trips are the sum of its workers', its cap is shared (max).
            "sum by (instance) (gateway_open_connections)",
            # The gateway's own cap; a gateway that does not export it is judged against
            # the stack's gateway.connectionsPerReplica.
            "max by (instance) (gateway_connection_limit)"
            " or max by (instance) (gateway_open_connections) * 0"
            f" + {spec.gateway.connections_per_replica}",
        ),
        Measure(
            "gateway.active_trips",
            "gateway",
            "trips",
            "sum by (instance) (gateway_active_trips)",
        ),
        Measure(
            "gateway.messages_in",
            "gateway",
            "messages/s",
            "sum by (instance) (rate(gateway_messages_in_total[1m]))",
        ),
        Measure(
            "gateway.messages_out",
            "gateway",
            "messages/s",
            "sum by (instance) (rate(gateway_messages_out_total[1m]))",
        ),
        Measure(
            "nginx.connections",
            "nginx",
            "connections",
            "max by (instance) (nginx_connections_active)",
            str(spec.nginx.instance_capacity),
        ),
    ]


def measure(spec: PhaseSpec, key: str) -> Measure:
    for found in measures(spec):
        if found.key == key:
            return found
    raise KeyError(f"no PromQL measure for {key!r}")
