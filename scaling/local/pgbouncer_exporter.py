"""PgBouncer metrics for Prometheus, read from PgBouncer's console on every scrape.

Run as ``python -m scaling.local.pgbouncer_exporter --serve LISTEN=POOLER ...``: each
``--serve`` pair is one listener (``127.0.0.1:9127``) whose ``/metrics`` describes one
pooler (``127.0.3.1:6432``), so one process serves every pooler of a run and Prometheus
scrapes each as a target of its own. The console user is ``--user`` (one of PgBouncer's
``stats_users``); its password comes from libpq's ``PGPASSWORD`` in the environment, as
for the containers' exporter, never from the command line.

Why not Debian's prometheus-pgbouncer-exporter: its 1.7 reads ``SHOW STATS`` columns that
PgBouncer removed in 1.8 (``total_requests``) and dies at start against the PgBouncer the
runner uses. Metric names follow the prometheus-community pgbouncer_exporter (the one the
container images run), so queries and alerts read the same names everywhere.

Each scrape opens a console connection of its own (a pooler restart is only a failed scrape),
and an unreachable pooler is ``pgbouncer_up 0`` with nothing else, never zeros.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

CONNECT_TIMEOUT = 3

# SHOW POOLS column -> (metric suffix, help); prometheus-community names.
POOL_GAUGES = {
    "cl_active": ("pools_client_active_connections", "Client connections linked to a server"),
    "cl_waiting": ("pools_client_waiting_connections", "Client connections waiting for a server"),
    "sv_active": ("pools_server_active_connections", "Server connections linked to a client"),
    "sv_idle": ("pools_server_idle_connections", "Server connections idle and ready"),
    "sv_used": ("pools_server_used_connections", "Server connections idle past server_check"),
    "sv_login": ("pools_server_login_connections", "Server connections logging in"),
}
# SHOW DATABASES columns -> (metric suffix, help); reserve_pool is reserve_pool_size after
# PgBouncer 1.23.
DATABASE_GAUGES = {
    ("pool_size",): ("databases_pool_size", "Maximum server connections of the pool"),
    ("reserve_pool", "reserve_pool_size"): (
        "databases_reserve_pool",
        "Extra server connections allowed",
    ),
    ("max_connections",): ("databases_max_connections", "Server connections allowed (0: any)"),
    ("current_connections",): ("databases_current_connections", "Server connections open"),
}
# The upstream exporter's labels of the databases family: the PgBouncer alias (name), the
# server database it stands for, and where and how it pools.
DATABASE_LABELS = ("name", "database", "host", "port", "pool_mode", "force_user")
# SHOW STATS column -> (metric suffix, help, scale to base units).
STAT_COUNTERS = {
    "total_xact_count": ("stats_sql_transactions_pooled", "Transactions pooled", 1.0),
    "total_query_count": ("stats_queries_pooled", "Queries pooled", 1.0),
    "total_received": ("stats_received_bytes", "Bytes received from clients", 1.0),
    "total_sent": ("stats_sent_bytes", "Bytes sent to clients", 1.0),
    "total_query_time": ("stats_queries_duration_seconds", "Time spent in queries", 1e-6),
    "total_wait_time": ("stats_client_wait_seconds", "Time clients waited for a server", 1e-6),
}
# SHOW CONFIG key -> (metric suffix, help).
CONFIG_GAUGES = {
    "max_client_conn": ("config_max_client_connections", "Configured max_client_conn"),
    "max_user_connections": ("config_max_user_connections", "Configured max_user_connections"),
}


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    user: str


def _rows(conn: psycopg.Connection[Any], command: str) -> list[dict[str, Any]]:
    cursor = conn.execute(command)
    names = [column.name for column in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class PgBouncerCollector(Collector):
    """One pooler's console, read at every collect."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=self.target.host,
            port=self.target.port,
            user=self.target.user,  # the password: libpq reads PGPASSWORD
            dbname="pgbouncer",
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            # The console takes simple queries only.
            cursor_factory=psycopg.ClientCursor,
        )

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        up = GaugeMetricFamily("pgbouncer_up", "Whether the console answered this scrape")
        try:
            with self._connect() as conn:
                families = list(_families(conn))
        except psycopg.Error as error:
            print(f"pgbouncer {self.target.host}:{self.target.port}: {error}", file=sys.stderr)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families


def _families(conn: psycopg.Connection[Any]) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    pools = _rows(conn, "SHOW POOLS")
    for column, (suffix, text) in POOL_GAUGES.items():
        family = GaugeMetricFamily(f"pgbouncer_{suffix}", text, labels=["database", "user"])
        for row in pools:
            value = _number(row.get(column))
            if value is not None:
                family.add_metric([str(row["database"]), str(row["user"])], value)
        yield family
    databases = _rows(conn, "SHOW DATABASES")
    for columns, (suffix, text) in DATABASE_GAUGES.items():
        family = GaugeMetricFamily(f"pgbouncer_{suffix}", text, labels=list(DATABASE_LABELS))
        for row in databases:
            value = next((_number(row[c]) for c in columns if c in row), None)
            if value is not None:
                labels = ["" if row.get(k) is None else str(row[k]) for k in DATABASE_LABELS]
                family.add_metric(labels, value)
        yield family
    stats = _rows(conn, "SHOW STATS")
    for column, (suffix, text, scale) in STAT_COUNTERS.items():
        counter = CounterMetricFamily(f"pgbouncer_{suffix}", text, labels=["database"])
        for row in stats:
            value = _number(row.get(column))
            if value is not None:
                counter.add_metric([str(row["database"])], value * scale)
        yield counter
    config = {str(row["key"]): row["value"] for row in _rows(conn, "SHOW CONFIG")}
    for key, (suffix, text) in CONFIG_GAUGES.items():
        value = _number(config.get(key))
        if value is not None:
            family = GaugeMetricFamily(f"pgbouncer_{suffix}", text)
            family.add_metric([], value)
            yield family


def handler_for(registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404, "only /metrics is served")
                return
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # one line per scrape would only fill the log

    return Handler


def _address(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{what} {text!r}: expected host:port")
    return host, int(port)


def parse_serve(text: str) -> tuple[tuple[str, int], tuple[str, int]]:
    listen, sep, pooler = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--serve {text!r}: expected LISTEN=POOLER")
    return _address(listen, "listen address"), _address(pooler, "pooler address")


def servers(
    pairs: Sequence[tuple[tuple[str, int], tuple[str, int]]], user: str
) -> list[ThreadingHTTPServer]:
    result = []
    for listen, (host, port) in pairs:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(PgBouncerCollector(Target(host, port, user)))
        result.append(ThreadingHTTPServer(listen, handler_for(registry)))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scaling.local.pgbouncer_exporter")
    parser.add_argument("--serve", type=parse_serve, action="append", required=True)
    parser.add_argument("--user", required=True, help="a stats_users (or admin_users) role")
    args = parser.parse_args(argv)
    running = servers(args.serve, args.user)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopped.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stopped.set())
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in running]
    for thread in threads:
        thread.start()
    for listen, pooler in args.serve:
        print(f"serving {pooler[0]}:{pooler[1]} on {listen[0]}:{listen[1]}/metrics", flush=True)
    stopped.wait()
    for server in running:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
