"""A transition into Citus by logical replication, on real PostgreSQL servers over loopback.

Two servers stand in for the Kubernetes ones: a "source" (wal_level=logical, as StackGres
runs it) with the application's schema (primary keys, a bigserial sequence) and a
"coordinator" (plain PostgreSQL: Citus is not packaged for Debian, so the distribution
itself is skipped, visibly, with REQUIRE_CITUS=0). The scripts are the very text the
Kubernetes Jobs run (scaling.render.logical_transition), given hosts, ports and passwords
through their environment as the Jobs are. A writer inserts rows into the source, each
acknowledged, while the follow script copies the schema and subscribes; the cut-over is
refused while the source is writable, then runs once writes are stopped. Rows acknowledged
and rows on the coordinator are counted.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from support import scratch_postgres
from support.scratch_postgres import ScratchPostgres

from scaling.render.logical_transition import (
    LOGIN_ROLE,
    PUBLICATION,
    SUBSCRIPTION,
    cutover_script,
    distribution_checks,
    distribution_statements,
    follow_script,
)
from scaling.stackconfig import parse

pytestmark = pytest.mark.integration
PASSWORD = "logical-pw:with\\odd'chars"
APP = "sikka"
DATABASE = "sikka"
SCHEMA = f"""
CREATE TABLE cities (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (
  city_id int NOT NULL REFERENCES cities (id),
  id bigserial,
  seq int NOT NULL,
  note text,
  PRIMARY KEY (city_id, id)
);
CREATE TABLE notes (id bigserial PRIMARY KEY, body text);
INSERT INTO cities VALUES (1, 'Cairo'), (2, 'Giza');
INSERT INTO notes (body) SELECT 'note ' || g FROM generate_series(1, 50) g;
ALTER TABLE cities OWNER TO {APP};
ALTER TABLE orders OWNER TO {APP};
ALTER TABLE notes OWNER TO {APP};
"""


@dataclass
class Server:
    postgres: ScratchPostgres

    @property
    def port(self) -> int:
        return self.postgres.port

    def connect(self, dbname: str = DATABASE) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            password=PASSWORD,
            dbname=dbname,
            autocommit=True,
            connect_timeout=5,
        )


def _start(name: str, *options: str) -> Server:
    server = Server(
        scratch_postgres.start(f"sikka-logical-{name}-", PASSWORD, "-c fsync=off", *options)
    )
    with server.connect("postgres") as conn:
        conn.execute(f"CREATE ROLE {APP} LOGIN")
        conn.execute(f"CREATE DATABASE {DATABASE} OWNER {APP}")
    return server


def _stop(server: Server) -> None:
    server.postgres.stop()


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Server, Server]]:
    source = _start("source", "-c wal_level=logical")
    try:
        coordinator = _start("coordinator")
    except BaseException:
        _stop(source)
        raise
    try:
        yield source, coordinator
    finally:
        _stop(coordinator)
        _stop(source)


SPEC = parse(
    {
        "sikka:phase": "scale",
        "sikka:platform": "kubernetes",
        "sikka:postgres": {
            "distributionColumns": {"orders": "city_id"},
            "referenceTables": ["cities"],
        },
    },
    stack="scale",
)


def run_script(
    script: str, source: Server, target: Server, work: Path, **extra: str
) -> tuple[int, str]:
    env = {
        "PATH": os.environ["PATH"],
        "SOURCE_HOST": "127.0.0.1",
        "SOURCE_PORT": str(source.port),
        "SOURCE_DATABASE": DATABASE,
        "SOURCE_USER": "postgres",
        "SOURCE_PASSWORD": PASSWORD,
        "TARGET_HOST": "127.0.0.1",
        "TARGET_PORT": str(target.port),
        "TARGET_DATABASE": DATABASE,
        "TARGET_USER": "postgres",
        "TARGET_PASSWORD": PASSWORD,
        "WORK_DIR": str(work),
        "READY_SECONDS": "20",
        **extra,
    }
    done = subprocess.run(
        ["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    output = done.stdout + done.stderr
    print(output)
    assert PASSWORD not in output
    return done.returncode, output


@dataclass
class Writer:
    """Rows with a sequence number into the source, each acknowledged (autocommit)."""

    server: Server
    acked: list[int] = field(default_factory=list)
    refused: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            try:
                with self.server.connect() as conn:
                    while not self._stop.is_set():
                        conn.execute(
                            "INSERT INTO orders (city_id, seq, note) VALUES (%s, %s, 'new')",
                            (1 + seq % 2, seq),
                        )
                        self.acked.append(seq)
                        if seq % 10 == 0:  # updates and deletes travel too
                            conn.execute(
                                "UPDATE orders SET note = 'updated' WHERE seq = %s", (seq,)
                            )
                            conn.execute("DELETE FROM notes WHERE id = %s", (seq // 10 % 40 + 1,))
                        seq += 1
                        time.sleep(0.005)
            except psycopg.Error:
                self.refused += 1
                seq += 1  # that one may or may not have committed: never reuse it
                time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def _rows(server: Server) -> list[tuple[int, str]]:
    with server.connect() as conn:
        return conn.execute("SELECT seq, note FROM orders ORDER BY seq").fetchall()


def test_rows_move_into_the_coordinator_and_the_cutover_waits_for_the_freeze(
    servers: tuple[Server, Server], tmp_path: Path
) -> None:
    source, coordinator = servers
    started = time.monotonic()
    with source.connect() as conn:
        conn.execute(SCHEMA)
    writer = Writer(source)
    writer.start()
    try:
        time.sleep(0.5)
        code, out = run_script(follow_script(), source, coordinator, tmp_path)
        assert code == 0, out
        assert "schema restored (3 table(s)" in out and "subscription sikka_transition made" in out
        # The subscription logs in as its own role, not as the source's superuser.
        with coordinator.connect() as conn:
            (conninfo,) = conn.execute(
                "SELECT subconninfo FROM pg_subscription WHERE subname = %s", (SUBSCRIPTION,)
            ).fetchone()
        assert f"user={LOGIN_ROLE} " in conninfo and PASSWORD not in conninfo
        with source.connect() as conn:
            assert conn.execute(
                "SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = %s", (LOGIN_ROLE,)
            ).fetchone() == (False, True)
        # Run again (a Job retried): nothing is made twice.
        code, out = run_script(follow_script(), source, coordinator, tmp_path)
        assert code == 0 and "already made" in out, out
        time.sleep(1.0)
        # The coordinator falls behind (its subscription held back) while rows still come:
        # the cut-over stops the writes, waits in vain, gives the source its writes back.
        with coordinator.connect() as conn:
            conn.execute(f"ALTER SUBSCRIPTION {SUBSCRIPTION} DISABLE")
        time.sleep(0.5)
        code, out = run_script(
            cutover_script(SPEC), source, coordinator, tmp_path, CATCH_UP_SECONDS="3"
        )
        assert code == 1 and "has not applied the source's LSN" in out, out
        assert "writes are stopped" in out and "the source takes writes again" in out, out
        with coordinator.connect() as conn:
            assert conn.execute("SHOW sikka.transition").fetchone() == ("following",)
            assert conn.execute(
                "SELECT count(*) FROM pg_subscription WHERE subname = %s", (SUBSCRIPTION,)
            ).fetchone() == (1,)
            conn.execute(f"ALTER SUBSCRIPTION {SUBSCRIPTION} ENABLE")
        with source.connect() as conn:
            assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("off",)
        refused_before = writer.refused
        acked_before = len(writer.acked)
        deadline = time.monotonic() + 10
        while len(writer.acked) < acked_before + 20:
            assert time.monotonic() < deadline, "the source took no write after the refusal"
            time.sleep(0.1)
        # The writer still runs: this cut-over stops its writes itself, then goes on.
        code, out = run_script(
            cutover_script(SPEC), source, coordinator, tmp_path,
            CATCH_UP_SECONDS="30", REQUIRE_CITUS="0",
        )  # fmt: skip
        assert code == 0, out
        assert "writes are stopped" in out and "takes writes again" not in out, out
        time.sleep(0.5)
    finally:
        writer.stop()
    assert writer.acked, "the writer wrote nothing"
    assert writer.refused > refused_before, "no write was refused after the cut-over"
    with source.connect() as conn:
        source_last = conn.execute("SELECT last_value FROM orders_id_seq").fetchone()
        source_rows = conn.execute("SELECT count(*) FROM orders").fetchone()
    assert "SKIPPED: the coordinator has no citus extension" in out
    print(
        f"rows acknowledged {len(writer.acked)}, on the source {source_rows[0]}, "
        f"writes refused after the freeze {writer.refused}, "
        f"total {time.monotonic() - started:.1f}s"
    )
    # Every acknowledged row is on the coordinator, updates included; the coordinator holds
    # what the source holds (a commit whose session was ended may have gone unacknowledged).
    moved = _rows(coordinator)
    assert set(writer.acked) <= {seq for seq, _ in moved}
    assert moved == _rows(source)
    assert any(note == "updated" for _, note in moved)
    with coordinator.connect() as conn:
        notes = conn.execute("SELECT id, body FROM notes ORDER BY id").fetchall()
        assert conn.execute("SELECT count(*) FROM pg_subscription").fetchone() == (0,)
        assert conn.execute("SHOW sikka.transition").fetchone() == ("cut-over",)
        # The sequence goes on past the source's value: the target takes new rows at once.
        (next_id,) = conn.execute("SELECT nextval('orders_id_seq')").fetchone()
        assert source_last is not None and next_id > source_last[0]
        (notes_next,) = conn.execute("SELECT nextval('notes_id_seq')").fetchone()
        assert notes_next > 50
        conn.execute("INSERT INTO orders (city_id, seq) VALUES (1, -1)")
    with source.connect() as conn:
        assert notes == conn.execute("SELECT id, body FROM notes ORDER BY id").fetchall()
        assert 10 <= len(notes) < 50  # some deleted while following, the rest kept
        assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname = %s", (LOGIN_ROLE,)
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM pg_publication WHERE pubname = %s", (PUBLICATION,)
        ).fetchone() == (0,)
    # Run again (a Job retried after the cut-over): no step is done twice, no sequence
    # goes back, and the follow script does not follow again.
    code, out = run_script(cutover_script(SPEC), source, coordinator, tmp_path, REQUIRE_CITUS="0")
    assert code == 0, out
    code, out = run_script(follow_script(), source, coordinator, tmp_path)
    assert code == 0 and "already cut over" in out, out
    with coordinator.connect() as conn:
        assert conn.execute("SELECT nextval('orders_id_seq')").fetchone()[0] > next_id
    # Without the explicit REQUIRE_CITUS=0 (the Job's setting), a coordinator without Citus
    # fails the cut-over, saying why.
    code, out = run_script(cutover_script(SPEC), source, coordinator, tmp_path)
    assert code == 1 and "no citus extension" in out, out


def test_the_distribution_is_checked_against_the_tables(servers: tuple[Server, Server]) -> None:
    """The cut-over's check, on the coordinator's real catalog: a column outside the primary
    key, a missing column and a missing table are each named."""
    _, coordinator = servers
    with coordinator.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS checked (id int PRIMARY KEY, city_id int)")
        query = distribution_checks(
            {"checked": "city_id", "public.checked_too": "id", "cities": "nope"}, ["lookup"]
        )
        problems = sorted(row[0] for row in conn.execute(query).fetchall())
    assert problems == [
        '"public"."checked": unique index checked_pkey does not include city_id',
        '"public"."checked_too": no such table on the coordinator',
        '"public"."cities": no column nope',
        '"public"."lookup": no such table on the coordinator',
    ]


def test_the_follow_script_refuses_a_table_without_replica_identity(
    tmp_path: Path,
) -> None:
    """Publishing such a table would make its UPDATEs fail on the source: refused first."""
    source = _start("bare", "-c wal_level=logical")
    try:
        with source.connect() as conn:
            conn.execute("CREATE TABLE keyless (a int, b text)")
        code, out = run_script(follow_script(), source, source, tmp_path)
        assert code == 1 and "tables without a primary key or replica identity" in out, out
        assert "public.keyless" in out
        with source.connect() as conn:
            assert conn.execute("SELECT count(*) FROM pg_publication").fetchone() == (0,)
            conn.execute("UPDATE keyless SET b = 'still works'")
    finally:
        _stop(source)


STUB = """
SET allow_system_table_mods = on;
CREATE TABLE pg_catalog.pg_dist_partition (logicalrelid regclass);
RESET allow_system_table_mods;
CREATE TABLE citus_calls (n serial, call text);
CREATE FUNCTION create_reference_table(t regclass) RETURNS void LANGUAGE sql AS $$
  INSERT INTO citus_calls (call) VALUES ('reference ' || t);
  INSERT INTO pg_catalog.pg_dist_partition VALUES (t) $$;
CREATE FUNCTION create_distributed_table_concurrently(t regclass, c text) RETURNS void
  LANGUAGE sql AS $$
  INSERT INTO citus_calls (call) VALUES ('distributed ' || t || ' by ' || c);
  INSERT INTO pg_catalog.pg_dist_partition VALUES (t) $$;
CREATE TABLE cities (id int PRIMARY KEY);
CREATE TABLE trips (city_id int, id bigint, PRIMARY KEY (city_id, id));
"""


def test_the_citus_calls_as_rendered_against_a_stand_in(servers: tuple[Server, Server]) -> None:
    """Citus is not installed here: its two functions and its pg_dist_partition catalog are
    stood in for (recording each call), to run the cut-over's very statements: reference
    tables first, each table once, nothing again on a second run. What Citus itself does
    with them is not tested here."""
    _, coordinator = servers
    with coordinator.connect("postgres") as conn:
        conn.execute("CREATE DATABASE stand_in")
    with coordinator.connect("stand_in") as conn:
        conn.execute(STUB)
        statements = distribution_statements({"trips": "city_id"}, ["cities"])
        for _ in range(2):
            for statement in statements:
                conn.execute(statement)
        calls = [row[0] for row in conn.execute("SELECT call FROM citus_calls ORDER BY n")]
    assert calls == ["reference cities", "distributed trips by city_id"]
    script = cutover_script(SPEC)
    assert all(statement in script for statement in distribution_statements(
        dict(SPEC.postgres.distribution_columns), list(SPEC.postgres.reference_tables)
    ))  # fmt: skip
