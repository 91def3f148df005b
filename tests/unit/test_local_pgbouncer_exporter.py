"""The local PgBouncer exporter: its arguments, and the console's rows as Prometheus series
(names of the prometheus-community exporter, microseconds as seconds, absent columns skipped,
an unreachable console as pgbouncer_up 0 and nothing else)."""

from __future__ import annotations

import argparse
from typing import Any, ClassVar

import psycopg
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from scaling.local import pgbouncer_exporter
from scaling.local.pgbouncer_exporter import PgBouncerCollector, Target, parse_serve


def test_serve_pairs_a_listener_with_a_pooler() -> None:
    assert parse_serve("127.0.0.1:9127=127.0.3.1:6432") == (
        ("127.0.0.1", 9127),
        ("127.0.3.1", 6432),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1:9127", "expected LISTEN=POOLER"),
        ("127.0.0.1=127.0.3.1:6432", "listen address '127.0.0.1'"),
        ("127.0.0.1:9127=127.0.3.1:x", "pooler address '127.0.3.1:x'"),
    ],
)
def test_bad_serve_pairs_are_refused(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse_serve(text)


class _Column:
    def __init__(self, name: str) -> None:
        self.name = name


class _Cursor:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.description = [_Column(k) for k in rows[0]] if rows else []
        self._rows = [tuple(r.values()) for r in rows]

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows


class _Console:
    """What SHOW answers on PgBouncer 1.18's console (columns trimmed)."""

    ANSWERS: ClassVar[dict[str, list[dict[str, Any]]]] = {
        "SHOW POOLS": [
            {
                "database": "app",
                "user": "app",
                "cl_active": 7,
                "cl_waiting": 2,
                "sv_active": 5,
                "sv_idle": 0,
                "sv_used": 0,
                "sv_login": 0,
                "maxwait": 1,
            },
        ],
        "SHOW DATABASES": [
            {
                "name": "app_ro",
                "host": "127.0.0.1",
                "port": 5433,
                "database": "app",
                "force_user": None,
                "pool_size": 40,
                "reserve_pool": 5,
                "pool_mode": "transaction",
                "max_connections": 0,
                "current_connections": 5,
            },
        ],
        "SHOW STATS": [
            # total_requests is gone since PgBouncer 1.8 (what breaks Debian's exporter)
            {
                "database": "app",
                "total_xact_count": 120,
                "total_query_count": 130,
                "total_received": 1000,
                "total_sent": 2000,
                "total_xact_time": 5,
                "total_query_time": 2_500_000,
                "total_wait_time": 500_000,
            },
        ],
        "SHOW CONFIG": [
            {"key": "max_client_conn", "value": "1000", "default": "100", "changeable": "yes"},
            {"key": "max_user_connections", "value": "0", "default": "0", "changeable": "yes"},
        ],
    }

    def __enter__(self) -> _Console:
        return self

    def __exit__(self, *args: object) -> None:
        return None

    def execute(self, command: str) -> _Cursor:
        return _Cursor(self.ANSWERS[command])


def _scrape(collector: PgBouncerCollector) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def test_console_rows_become_series(monkeypatch: pytest.MonkeyPatch) -> None:
    collector = PgBouncerCollector(Target("127.0.3.1", 6432, "monitoring"))
    monkeypatch.setattr(collector, "_connect", lambda: _Console())
    series = _scrape(collector)
    app = {"database": "app", "user": "app"}
    assert series["pgbouncer_up"] == [({}, 1.0)]
    assert series["pgbouncer_pools_client_active_connections"] == [(app, 7.0)]
    assert series["pgbouncer_pools_client_waiting_connections"] == [(app, 2.0)]
    assert series["pgbouncer_pools_server_active_connections"] == [(app, 5.0)]
    alias = {
        "name": "app_ro",
        "database": "app",
        "host": "127.0.0.1",
        "port": "5433",
        "pool_mode": "transaction",
        "force_user": "",
    }
    assert series["pgbouncer_databases_pool_size"] == [(alias, 40.0)]
    assert series["pgbouncer_databases_reserve_pool"] == [(alias, 5.0)]
    assert series["pgbouncer_databases_current_connections"] == [(alias, 5.0)]
    assert series["pgbouncer_config_max_client_connections"] == [({}, 1000.0)]
    assert series["pgbouncer_stats_queries_pooled_total"] == [({"database": "app"}, 130.0)]
    # microseconds on the console, seconds in Prometheus
    assert series["pgbouncer_stats_queries_duration_seconds_total"] == [({"database": "app"}, 2.5)]
    assert series["pgbouncer_stats_client_wait_seconds_total"] == [({"database": "app"}, 0.5)]


def test_an_unreachable_console_is_down_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collector = PgBouncerCollector(Target("127.0.3.1", 6432, "monitoring"))

    def refuse() -> None:
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(collector, "_connect", refuse)
    assert _scrape(collector) == {"pgbouncer_up": [({}, 0.0)]}


def test_the_module_runs_as_a_program() -> None:
    with pytest.raises(SystemExit):
        pgbouncer_exporter.main(["--user", "monitoring"])  # --serve is required
