"""The direct PostgreSQL probe against a real server with pg_stat_statements preloaded
(the local phases do not preload it): slow statements are counted, the slowest is
measured, and a server without the extension says so instead of reporting zero."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from support import scratch_postgres

from scaling.metrics.endpoints import HostPort
from scaling.metrics.probes.postgres import SLOW_STATEMENT_MS, probe_member

pytestmark = pytest.mark.integration
PASSWORD = "statements-pw"


@pytest.fixture(scope="module")
def server() -> Iterator[HostPort]:
    postgres = scratch_postgres.start(
        "sikka-check-pgss-", PASSWORD, "-c shared_preload_libraries=pg_stat_statements"
    )
    try:
        yield HostPort("127.0.0.1", postgres.port)
    finally:
        postgres.stop()


def _connect(target: HostPort) -> psycopg.Connection:
    return psycopg.connect(
        host=target.host, port=target.port, user="postgres", password=PASSWORD,
        dbname="postgres", autocommit=True,
    )  # fmt: skip


def test_without_the_extension_it_says_so(server: HostPort) -> None:
    readings, notes = probe_member(server, "postgres", PASSWORD, "postgres")
    keys = {r.key for r in readings}
    assert "postgres.connections" in keys and "postgres.slow_statements" not in keys
    assert notes == [
        f"postgres {server}: pg_stat_statements is not installed (no slow-statement figures)"
    ]


def test_slow_statements_counted_and_measured(server: HostPort) -> None:
    with _connect(server) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")
        for _ in range(2):
            conn.execute("SELECT pg_sleep(%s)", ((SLOW_STATEMENT_MS + 50) / 1000,))
        conn.execute("SELECT 1")
    readings, notes = probe_member(server, "postgres", PASSWORD, "postgres")
    by_key = {r.key: r for r in readings}
    assert by_key["postgres.slow_statements"].value == 1  # one statement, run twice
    slowest = by_key["postgres.slowest_statement_ms"].value
    assert slowest is not None and SLOW_STATEMENT_MS + 50 <= slowest < SLOW_STATEMENT_MS + 1000
    assert by_key["postgres.connections"].limit == 100  # initdb's default max_connections
    assert notes == []


def test_wrong_password_is_unreachable_with_the_reason(server: HostPort) -> None:
    readings, _ = probe_member(server, "postgres", "not-the-password", "postgres")
    (reading,) = readings
    assert reading.value is None and reading.error is not None
    assert "password authentication failed" in reading.error
