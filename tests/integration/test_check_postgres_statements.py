"""The direct PostgreSQL probe against a real server with pg_stat_statements preloaded
(the local phases do not preload it): slow statements are counted, the slowest is
measured, and a server without the extension says so instead of reporting zero."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from scaling.local.procs import pg_bin
from scaling.metrics.endpoints import HostPort
from scaling.metrics.probes.postgres import SLOW_STATEMENT_MS, probe_member

pytestmark = pytest.mark.integration
PASSWORD = "statements-pw"


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[HostPort]:
    # Under /tmp (1777) so the postgres account can reach it; pytest's tmp dir is root-only.
    root = Path(tempfile.mkdtemp(prefix="sikka-check-pgss-"))
    root.chmod(0o755)
    data, port = root / "data", _free_port()
    (root / "pw").write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
        os.chown(root / "pw", account.pw_uid, account.pw_gid)

    def run(*argv: str) -> None:
        subprocess.run([*_as_postgres(), *argv], check=True, capture_output=True, timeout=120)

    run(pg_bin("initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={root / 'pw'}",
        "--auth=scram-sha-256", "--no-sync")  # fmt: skip
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} "
        "-c shared_preload_libraries=pg_stat_statements"
    )
    run(pg_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
    try:
        yield HostPort("127.0.0.1", port)
    finally:
        run(pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


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
