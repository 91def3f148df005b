"""PgBouncer, through its admin console (the virtual ``pgbouncer`` database): clients
against ``max_client_conn`` (``SHOW POOLS``' cl_* columns, ``SHOW CONFIG``), clients waiting
for a server connection and the longest wait, and the average wait of a transaction
(``SHOW STATS``).

The console answers simple queries only, hence ``ClientCursor``. A pooler with several
processes shares one address (so_reuseport): the console reached is one process, whose
share of clients is judged against its own ``max_client_conn``.
"""

from __future__ import annotations

from typing import Any

import psycopg

from scaling.metrics.endpoints import HostPort
from scaling.metrics.model import Reading
from scaling.metrics.probes import TIMEOUT, unreachable


def _rows(conn: psycopg.Connection[Any], command: str) -> list[dict[str, Any]]:
    cur = conn.cursor()
    cur.execute(command)
    names = [c.name for c in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def pool_figures(pools: list[dict[str, Any]]) -> tuple[int, int, float]:
    """(clients, waiting clients, longest wait in seconds) over every pool but the
    console's own."""
    clients = waiting = 0
    longest = 0.0
    for pool in pools:
        if pool.get("database") == "pgbouncer":
            continue
        for name, value in pool.items():
            if name.startswith("cl_") and isinstance(value, int):
                clients += value
        waiting += int(pool.get("cl_waiting") or 0)
        wait = float(pool.get("maxwait") or 0) + float(pool.get("maxwait_us") or 0) / 1e6
        longest = max(longest, wait)
    return clients, waiting, longest


def config_value(config: list[dict[str, Any]], key: str) -> str | None:
    for row in config:
        if row.get("key") == key:
            return str(row.get("value"))
    return None


def average_wait_ms(stats: list[dict[str, Any]]) -> float:
    """The slowest database's average client wait for a server (µs in SHOW STATS)."""
    waits = [float(r.get("avg_wait_time") or 0) for r in stats if r.get("database") != "pgbouncer"]
    return max(waits, default=0.0) / 1000.0


def probe_pooler(
    target: HostPort, user: str, password: str | None
) -> tuple[list[Reading], list[str]]:
    instance = str(target)
    try:
        with psycopg.connect(
            host=target.host,
            port=target.port,
            user=user,
            password=password,
            dbname="pgbouncer",
            autocommit=True,
            connect_timeout=int(TIMEOUT),
            cursor_factory=psycopg.ClientCursor,
        ) as conn:
            pools = _rows(conn, "SHOW POOLS")
            stats = _rows(conn, "SHOW STATS")
            config = _rows(conn, "SHOW CONFIG")
    except (psycopg.Error, OSError) as error:
        return [unreachable("pgbouncer.clients", "pgbouncer", instance, error, "connections")], []
    clients, waiting, longest = pool_figures(pools)
    max_clients = config_value(config, "max_client_conn")
    limit = float(max_clients) if max_clients and max_clients.isdigit() else None
    return [
        Reading("pgbouncer.clients", "pgbouncer", instance, float(clients), limit, "connections"),
        Reading(
            "pgbouncer.waiting_clients", "pgbouncer", instance, float(waiting), None, "connections"
        ),
        Reading("pgbouncer.max_wait_seconds", "pgbouncer", instance, longest, None, "seconds"),
        Reading(
            "pgbouncer.avg_wait_ms",
            "pgbouncer",
            instance,
            average_wait_ms(stats),
            None,
            "milliseconds",
        ),
    ], []
