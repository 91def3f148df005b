"""The Postgres containers' start logic, run with the real PostgreSQL on 127.0.0.1.

The image's init script (10-roles.sh, run here by /bin/sh exactly as rendered, with real psql)
creates the roles with least privilege; the primary's start-up SQL (what primary-start.sh
feeds `postgres --single` before the image entrypoint) re-applies rotated passwords, drops
the slot of a replica the phase no longer has, and demotes an application role that an older
deployment made the superuser; the replication role's password follows a rotation too, and
the role opens replication connections only (Patroni's members clone and stream with them).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from scaling.local.ports import PortAllocator
from scaling.local.procs import pg_bin
from scaling.render.postgres import PostgresLayout, render_pg_hba_conf, render_postgresql_conf
from scaling.render.postgres_start import (
    database_sql,
    init_roles_script,
    startup_sql,
)
from scaling.render.scram import scram_verifier
from scaling.stackconfig import parse

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which(pg_bin("postgres")) is None, reason="needs PostgreSQL"),
]

SPEC = parse({"sikka:phase": "growth"}, stack="growth")
USER = SPEC.postgres.user
DB = SPEC.postgres.database
SUPERUSER = "postgres"
SLOTS = ["replica_1", "replica_2"]


def as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*as_postgres(), *argv], text=True, check=True, timeout=120, **kw)  # type: ignore[call-overload]


class Instance:
    def __init__(self, root: Path, name: str, port: int) -> None:
        self.dir = root / name
        self.data = self.dir / "data"
        self.port = port
        (self.dir / "run").mkdir(parents=True)
        layout = PostgresLayout(
            listen_addresses="127.0.0.1",
            port=port,
            socket_dir=str(self.dir / "run"),
            hba_file=str(self.dir / "pg_hba.conf"),
            private_networks=("127.0.0.0/8",),
        )
        self.conf = self.dir / "postgresql.conf"
        self.conf.write_text(render_postgresql_conf(SPEC, layout))
        (self.dir / "pg_hba.conf").write_text(render_pg_hba_conf(SPEC, layout))

    def start(self) -> None:
        run(
            [
                pg_bin("pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                f"-c config_file={self.conf}",
                "-l",
                str(self.dir / "log"),
                "-w",
                "start",
            ]
        )

    def stop(self) -> None:
        run([pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def connect(
        self, password: str, user: str = USER, dbname: str = DB, **kw: object
    ) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=user,
            password=password,
            dbname=dbname,
            connect_timeout=3,
            autocommit=True,
            **kw,  # type: ignore[arg-type]
        )

    def superuser(self, password: str) -> psycopg.Connection:
        return self.connect(password, SUPERUSER, "postgres")

    def initdb(self, root: Path, user: str, password: str) -> None:
        (root / "pw").write_text(password + "\n")
        chown_to_postgres(root)
        run(
            [
                pg_bin("initdb"),
                "-D",
                str(self.data),
                "-U",
                user,
                f"--pwfile={root / 'pw'}",
                "--auth=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            capture_output=True,
        )


def wait_until(what: str, check, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except psycopg.Error:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def root() -> Iterator[Path]:
    # Under /tmp (1777) so the postgres account can reach it; pytest's tmp dir is root-only.
    folder = Path(tempfile.mkdtemp(prefix="sikka-pgstart-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        for item in [path, *path.rglob("*")]:
            os.chown(item, account.pw_uid, account.pw_gid)


def single_user(instance: Instance, sql: str, dbname: str = "postgres") -> None:
    """As primary-start.sh does; single-user mode carries on past a failed statement, so any
    ERROR it reports fails the test."""
    result = run(
        [
            pg_bin("postgres"),
            "--single",
            "-j",
            "-D",
            str(instance.data),
            "-c",
            f"config_file={instance.conf}",
            dbname,
        ],
        input=sql,
        capture_output=True,
    )
    assert "ERROR" not in result.stderr, result.stderr


def primary_start(
    instance: Instance, su: str, app: str, repl: str, slots: list[str] = SLOTS
) -> None:
    """primary-start.sh's two single-user passes; the application role gets its password's
    SCRAM verifier, as the stacks give it (logging in with ``app`` proves it is PostgreSQL's)."""
    sql = startup_sql(
        USER,
        superuser_password=su,
        password=scram_verifier(app, os.urandom(16)),
        replication_password=repl,
        keep_slots=slots,
    )
    single_user(instance, sql)
    single_user(instance, database_sql(USER, DB), DB)


def first_start(root: Path, instance: Instance, su: str, app: str, repl: str) -> None:
    """What the official image does on an empty volume, with the rendered init script: initdb
    with POSTGRES_USER=postgres, a socket-only server, CREATE DATABASE $POSTGRES_DB, then
    docker-entrypoint-initdb.d/10-roles.sh through psql."""
    instance.initdb(root, SUPERUSER, su)
    instance.start()
    try:
        script = instance.dir / "10-roles.sh"
        script.write_text(init_roles_script(USER, DB, replication=True, keep_slots=SLOTS))
        env = {
            "PATH": f"{Path(pg_bin('psql')).parent}:/usr/bin:/bin",
            "PGHOST": str(instance.dir / "run"),
            "PGPORT": str(instance.port),
            "PGPASSWORD": su,  # the image exports it for its init scripts
            "POSTGRES_USER": SUPERUSER,
            "POSTGRES_DB": DB,
            "POSTGRES_PASSWORD": su,
            "DATABASE_PASSWORD_SCRAM": scram_verifier(app, os.urandom(16)),
            "REPLICATION_PASSWORD": repl,
        }
        with instance.superuser(su) as conn:
            conn.execute(f"CREATE DATABASE {DB}")
        subprocess.run(["sh", str(script)], env=env, check=True, timeout=60, text=True)
    finally:
        instance.stop()


def role(conn: psycopg.Connection, name: str) -> dict[str, object]:
    row = conn.execute(
        "SELECT oid, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, "
        "rolcanlogin, (SELECT count(*) FROM pg_auth_members WHERE member = r.oid) "
        "FROM pg_roles r WHERE rolname = %s",
        (name,),
    ).fetchone()
    assert row is not None, name
    keys = ("oid", "super", "createrole", "createdb", "replication", "bypassrls", "login")
    return {**dict(zip(keys, row[:7], strict=True)), "memberships": row[7]}


LEAST = {
    "super": False,
    "createrole": False,
    "createdb": False,
    "replication": False,
    "bypassrls": False,
    "login": True,
    "memberships": 0,
}


def assert_least_privilege(instance: Instance, su: str, app: str) -> None:
    """The application role: LOGIN and nothing more, owner of its database and its public
    schema, refused what a superuser could do, and admitted to its database only."""
    with instance.superuser(su) as conn:
        assert {k: v for k, v in role(conn, USER).items() if k != "oid"} == LEAST
        assert role(conn, SUPERUSER)["oid"] == 10 and role(conn, SUPERUSER)["super"] is True
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (DB,)
        ).fetchone()
        assert owner == (USER,)
    with instance.connect(app) as conn:
        public = conn.execute(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'"
        ).fetchone()
        assert public == (USER,)
        conn.execute("CREATE TABLE IF NOT EXISTS t (line text)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("COPY t FROM PROGRAM 'id'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE ROLE x")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT pg_read_file('/etc/passwd')")
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
        instance.connect(app, dbname="postgres")


def replicates(primary: Instance, password: str) -> bool:
    """Whether the replication role opens a replication connection (what a replica's
    pg_basebackup and walreceiver use) with ``password``."""
    conninfo = (
        f"host=127.0.0.1 port={primary.port} user=replicator dbname=postgres replication=true"
    )
    result = subprocess.run(
        [pg_bin("psql"), conninfo, "-tAc", "IDENTIFY_SYSTEM"],
        env={"PGPASSWORD": password, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode == 0


def test_rotation_and_slot_cleanup_with_real_postgres(root: Path) -> None:
    ports = PortAllocator()
    primary = Instance(root, "primary", ports.take())
    first_start(root, primary, "su-1", "first", "repl-1")
    primary_start(primary, "su-1", "first", "repl-1")
    primary.start()
    try:
        assert_least_privilege(primary, "su-1", "first")
        with primary.superuser("su-1") as conn:
            for slot in SLOTS:
                conn.execute("SELECT pg_create_physical_replication_slot(%s)", (slot,))
    finally:
        primary.stop()

    # The phase now has one replica, and every password was rotated.
    primary_start(primary, "it's su", "it's rotated", "repl-2", ["replica_1"])
    primary.start()
    try:
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            primary.connect("first")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            primary.superuser("su-1")
        with primary.superuser("it's su") as conn:
            slots = [r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots")]
            assert slots == ["replica_1"]
        with primary.connect("it's rotated") as conn:
            conn.execute("CREATE TABLE trips (id int)")
            conn.execute("INSERT INTO trips VALUES (1), (2)")
        assert replicates(primary, "repl-2") and not replicates(primary, "repl-1")

        # Rotate the replication password again: it takes effect at the next start.
        primary.stop()
        primary_start(primary, "it's su", "it's rotated", "repl-3", ["replica_1"])
        primary.start()
        assert replicates(primary, "repl-3") and not replicates(primary, "repl-2")
        with primary.connect("it's rotated") as conn:
            assert conn.execute("SELECT count(*) FROM trips").fetchone() == (2,)
        # The replication role replicates and does nothing else: no database session.
        with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
            primary.connect("repl-3", "replicator", "postgres")
    finally:
        primary.stop()


def test_an_older_deployments_superuser_app_role_is_demoted(root: Path) -> None:
    """Before this change the image ran with POSTGRES_USER=sikka: the application role was
    the bootstrap superuser and owned everything in its database. The next start renames
    that superuser postgres, creates sikka anew with least privilege and hands it its
    database's objects (data untouched), so the application keeps working and can no
    longer run programs on the server."""
    ports = PortAllocator()
    old = Instance(root, "old", ports.take())
    old.initdb(root, USER, "old-app-pw")  # what POSTGRES_USER=sikka made
    single_user(old, f"CREATE DATABASE {DB};\n\n")  # and POSTGRES_DB=sikka
    old.start()
    try:
        with old.connect("old-app-pw") as conn:
            conn.execute("CREATE TABLE trips (id serial PRIMARY KEY, rider text)")
            conn.execute("INSERT INTO trips (rider) VALUES ('a'), ('b')")
            conn.execute("CREATE VIEW riders AS SELECT DISTINCT rider FROM trips")
            conn.execute(
                "CREATE FUNCTION trip_count() RETURNS bigint LANGUAGE sql "
                "AS 'SELECT count(*) FROM trips'"
            )
            conn.execute("CREATE TYPE state AS ENUM ('open', 'closed')")
            assert role(conn, USER)["super"] is True and role(conn, USER)["oid"] == 10
    finally:
        old.stop()

    primary_start(old, "new-su", "new-app", "repl")
    old.start()
    try:
        assert_least_privilege(old, "new-su", "new-app")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            old.connect("old-app-pw")
        with old.superuser("new-su") as conn:
            assert role(conn, "replicator")["replication"] is True
            owners = conn.execute(
                "SELECT count(*) FROM pg_class WHERE relowner = 10 AND relnamespace = "
                "'public'::regnamespace"
            ).fetchone()
        with old.connect("new-app") as conn:
            # Its objects are its own again: data intact, DDL allowed.
            assert conn.execute("SELECT trip_count()").fetchone() == (2,)
            conn.execute("INSERT INTO trips (rider) VALUES ('c')")
            assert conn.execute("SELECT count(*) FROM riders").fetchone() == (3,)
            conn.execute("ALTER TABLE trips ADD COLUMN fare int")
            conn.execute("ALTER TYPE state ADD VALUE 'cancelled'")
            owned = conn.execute(
                "SELECT count(*) FROM pg_class WHERE relowner <> current_user::regrole "
                "AND relnamespace = 'public'::regnamespace"
            ).fetchone()
            assert owned == (0,)
        assert owners == (0,)
    finally:
        old.stop()

    # A later start finds nothing left to change (and reports no error).
    primary_start(old, "new-su", "new-app", "repl")


def test_a_superuser_app_role_is_demoted_and_loses_its_memberships(root: Path) -> None:
    """An application role that was given more (SUPERUSER, CREATEROLE, a program-running
    role, the superuser's own role) is back to least privilege at the next start."""
    ports = PortAllocator()
    primary = Instance(root, "primary", ports.take())
    first_start(root, primary, "su", "app", "repl")
    primary.start()
    try:
        with primary.superuser("su") as conn:
            conn.execute(f"ALTER ROLE {USER} SUPERUSER CREATEROLE CREATEDB BYPASSRLS")
            conn.execute(f"GRANT pg_execute_server_program, pg_read_server_files TO {USER}")
            conn.execute(f"GRANT postgres TO {USER}")
            assert role(conn, USER)["memberships"] == 3
    finally:
        primary.stop()
    primary_start(primary, "su", "app", "repl")
    primary.start()
    try:
        assert_least_privilege(primary, "su", "app")
    finally:
        primary.stop()
