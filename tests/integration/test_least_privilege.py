"""The attacks the application's credentials used to allow, reproduced against the local
runner's growth phase (its rendered pg_hba.conf, pgbouncer.ini and PgBouncer hba, real
PostgreSQL and PgBouncer on 127.0.0.1): every one is refused now.

Before, the application role was PostgreSQL's superuser and PgBouncer's admin: through
PgBouncer, ``COPY t FROM PROGRAM 'id'`` ran a shell as the postgres OS user, and any
application connection could ``SHUTDOWN`` the pooler.
"""

from __future__ import annotations

import psycopg
import pytest
from local_helpers import Phase, pg_connect, pooler_console, url_hosts

from scaling.model import POOLER_ADMIN_USER, SUPERUSER

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def phase(growth_phase: Phase) -> Phase:
    """The session's growth phase (small pools: the pool sizes are not under test here),
    shared with test_local_growth.py, which runs after this module and is left the phase as
    this module found it."""
    return growth_phase


def pooled(phase: Phase) -> psycopg.Connection:
    """The application's own connection: its role and password, through PgBouncer."""
    return pg_connect(phase, phase.summary["postgres"]["pooler"], autocommit=True)


def test_the_application_cannot_run_programs_on_the_server(phase: Phase) -> None:
    with pooled(phase) as conn:
        # Its own table, dropped again: the phase is shared with test_local_growth.py.
        conn.execute("CREATE TABLE IF NOT EXISTS least_privilege_probe (line text)")
        try:
            # (PostgreSQL 15 names the role it takes, 16+ says "permission denied".)
            with pytest.raises(
                psycopg.errors.InsufficientPrivilege,
                match=r"pg_execute_server_program|permission denied",
            ):
                conn.execute("COPY least_privilege_probe FROM PROGRAM 'id'")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("COPY least_privilege_probe FROM '/etc/passwd'")
            count = conn.execute("SELECT count(*) FROM least_privilege_probe").fetchone()
            assert count == (0,)
        finally:
            conn.execute("DROP TABLE IF EXISTS least_privilege_probe")


def test_the_application_cannot_create_roles_or_databases(phase: Phase) -> None:
    with pooled(phase) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            conn.execute("CREATE ROLE x")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE DATABASE x")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"ALTER ROLE {phase.spec.postgres.user} SUPERUSER")


def test_the_application_owns_its_database_and_nothing_more(phase: Phase) -> None:
    pg = phase.spec.postgres
    with pooled(phase) as conn:
        row = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, "
            "(SELECT count(*) FROM pg_auth_members WHERE member = r.oid), "
            "(SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()),"
            " (SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public') "
            "FROM pg_roles r WHERE rolname = current_user"
        ).fetchone()
    assert row == (False, False, False, False, False, 0, pg.user, pg.user)


def test_the_application_cannot_shut_the_pooler_down(phase: Phase) -> None:
    """Its credentials no longer open PgBouncer's console, so SHUTDOWN never gets sent."""
    # PgBouncer refuses the login itself ("not allowed"); had it let the application in, as
    # it did, SHUTDOWN would end with a different error, which this does not match.
    with pytest.raises(psycopg.OperationalError, match="not allowed"):
        conn = pooler_console(phase, phase.spec.postgres.user, phase.password)
        try:
            conn.execute("SHUTDOWN")
        finally:
            conn.close()
    assert phase.run.alive("pgbouncer-0")
    with pooled(phase) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_pooler_admin_runs_the_console(phase: Phase) -> None:
    # PgBouncer lists a pool once a client has used it: an application session on the
    # console's own PgBouncer (the URL's first host; the test before may have reached
    # another one, as libpq tries the next host when the first is slow to answer).
    host, port = url_hosts(phase.summary["postgres"]["pooler"])[0]
    app = psycopg.connect(
        host=host,
        port=port,
        user=phase.spec.postgres.user,
        password=phase.password,
        dbname=phase.spec.postgres.database,
        autocommit=True,
        connect_timeout=10,
    )
    with app, pooler_console(phase) as conn:
        assert app.execute("SELECT 1").fetchone() == (1,)
        cur = conn.cursor()
        cur.execute("SHOW POOLS")
        names = [c.name for c in cur.description or []]
        databases = {dict(zip(names, row, strict=True))["database"] for row in cur.fetchall()}
    assert {phase.spec.postgres.database, "pgbouncer"} <= databases
    # ... with its own password only, and it is no PostgreSQL role: no way into a database.
    with pytest.raises(psycopg.OperationalError):
        pooler_console(phase, POOLER_ADMIN_USER, phase.password)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host=host,
            port=port,
            user=POOLER_ADMIN_USER,
            password=phase.pooler_admin_password,
            dbname=phase.spec.postgres.database,
            connect_timeout=5,
        ).close()


def test_each_role_is_admitted_where_pg_hba_says(phase: Phase) -> None:
    """The superuser answers over loopback with its own password (locally the private
    network is loopback too: on Docker pg_hba admits it from inside its container only); the
    application role reaches its own database and no other; the replication role has no
    database session; PgBouncer's console user is unknown to PostgreSQL."""
    host, port = url_hosts(phase.summary["postgres"]["primary"])[0]

    def connect(user: str, password: str, dbname: str) -> psycopg.Connection:
        return psycopg.connect(
            host=host,
            port=port,
            user=user,
            password=password,
            dbname=dbname,
            connect_timeout=5,
        )

    with connect(SUPERUSER, phase.superuser_password, "postgres") as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(SUPERUSER, phase.password, "postgres")
    for user, password, dbname in (
        (phase.spec.postgres.user, phase.password, "postgres"),
        ("replicator", phase.run.secrets["replication-password"], "postgres"),
        (POOLER_ADMIN_USER, phase.pooler_admin_password, phase.spec.postgres.database),
    ):
        with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
            connect(user, password, dbname)
