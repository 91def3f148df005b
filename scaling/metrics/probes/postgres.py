"""PostgreSQL, by SQL on every member: client connections against ``max_connections``,
replication lag (seconds on each replica, bytes behind on the primary) and, where the
``pg_stat_statements`` extension is installed, the statements slower than
:data:`SLOW_STATEMENT_MS` on average.

The definitions follow postgres_exporter's, so the direct and the Prometheus check agree:
lag is 0 while a replica has replayed all it received, else the age of its last replayed
transaction (``pg_replication_lag_seconds``).
"""

from __future__ import annotations

from typing import Any

import psycopg

from scaling.metrics.endpoints import HostPort
from scaling.metrics.model import Reading
from scaling.metrics.probes import TIMEOUT, unreachable

SLOW_STATEMENT_MS = 100.0

_STATE = """
SELECT pg_is_in_recovery(),
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
       current_setting('max_connections')::int,
       EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')
"""
_REPLICA_LAG = """
SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)
       END::float8
"""
_STREAMING = """
SELECT COALESCE(NULLIF(application_name, ''), host(client_addr), 'replica'), state,
       COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::float8
FROM pg_stat_replication
"""
_SLOW = """
SELECT count(*) FILTER (WHERE mean_exec_time > %s), COALESCE(max(mean_exec_time), 0)::float8
FROM pg_stat_statements
"""


def probe_member(
    target: HostPort, user: str, password: str | None, database: str
) -> tuple[list[Reading], list[str]]:
    """Readings of one member, and notes (what could not be measured and why)."""
    instance = str(target)
    notes: list[str] = []
    try:
        with psycopg.connect(
            host=target.host,
            port=target.port,
            user=user,
            password=password,
            dbname=database,
            connect_timeout=int(TIMEOUT),
            autocommit=True,
            prepare_threshold=None,
            options=f"-c statement_timeout={int(TIMEOUT * 1000)}",
            application_name="sikka-scaling-check",
        ) as conn:
            row: Any = conn.execute(_STATE).fetchone()
            in_recovery, connections, max_connections, statements = row
            readings = [
                Reading(
                    "postgres.connections",
                    "postgres",
                    instance,
                    float(connections),
                    float(max_connections),
                    "connections",
                ),
            ]
            if in_recovery:
                lag: Any = conn.execute(_REPLICA_LAG).fetchone()
                readings.append(
                    Reading(
                        "postgres.replica_lag_seconds",
                        "postgres",
                        instance,
                        float(lag[0]),
                        None,
                        "seconds",
                    )
                )
            else:
                for name, state, behind in conn.execute(_STREAMING).fetchall():
                    readings.append(
                        Reading(
                            "postgres.replica_lag_bytes",
                            "postgres",
                            f"{instance}/{name}",
                            float(behind),
                            None,
                            "bytes",
                        )
                    )
                    if state != "streaming":
                        notes.append(f"postgres {instance}: replica {name} is {state}")
            if statements:
                try:
                    slow: Any = conn.execute(_SLOW, (SLOW_STATEMENT_MS,)).fetchone()
                    readings.append(
                        Reading(
                            "postgres.slow_statements",
                            "postgres",
                            instance,
                            float(slow[0]),
                            None,
                            "statements",
                        )
                    )
                    readings.append(
                        Reading(
                            "postgres.slowest_statement_ms",
                            "postgres",
                            instance,
                            float(slow[1]),
                            None,
                            "milliseconds",
                        )
                    )
                except psycopg.Error as error:
                    notes.append(
                        f"postgres {instance}: pg_stat_statements unreadable: "
                        f"{' '.join(str(error).split())}"
                    )
            else:
                notes.append(
                    f"postgres {instance}: pg_stat_statements is not installed "
                    "(no slow-statement figures)"
                )
            return readings, notes
    except (psycopg.Error, OSError) as error:
        return [
            unreachable("postgres.connections", "postgres", instance, error, "connections")
        ], notes
