"""The monitoring role against a real PostgreSQL on 127.0.0.1, read by the real
postgres_exporter the way the phase's exporter containers run it (its environment as the
Topology renders it, the password from the environment alone).

The role logs in to the ``postgres`` database only, holds ``pg_monitor`` and nothing else,
and the exporter then serves the figures the alert rules read.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from test_postgres_start import SUPERUSER, Instance, chown_to_postgres, root, single_user

from scaling.local.ports import PortAllocator
from scaling.model import MONITORING_USER
from scaling.render.postgres import PostgresLayout, render_pg_hba_conf
from scaling.render.postgres_start import database_sql, startup_sql
from scaling.render.scram import SALT_BYTES, scram_verifier
from scaling.stackconfig import parse
from scaling.topology import build_topology

EXPORTER = shutil.which("prometheus-postgres-exporter")
pytestmark = [pytest.mark.integration]

SPEC = parse({"sikka:phase": "launch"}, stack="launch")
USER, DB = SPEC.postgres.user, SPEC.postgres.database
__all__ = ["root"]  # the fixture, used by name below


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server(root: Path) -> Iterator[tuple[Instance, str]]:
    instance = Instance(root, "pg", PortAllocator().take())
    layout = PostgresLayout(
        listen_addresses="127.0.0.1",
        port=instance.port,
        socket_dir=str(instance.dir / "run"),
        hba_file=str(instance.dir / "pg_hba.conf"),
        private_networks=("127.0.0.0/8",),
        monitoring_user=MONITORING_USER,
    )
    (instance.dir / "pg_hba.conf").write_text(render_pg_hba_conf(SPEC, layout))
    instance.initdb(root, SUPERUSER, "su")
    chown_to_postgres(root)
    password = "mo'n$itor"
    # The roles get their passwords' SCRAM verifiers, as the stacks give them: the exporter
    # logging in with the password proves the verifier is PostgreSQL's.
    sql = startup_sql(
        USER,
        superuser_password="su",
        password=scram_verifier("app", os.urandom(SALT_BYTES)),
        replication_password=None,
        keep_slots=[],
        monitoring_password=scram_verifier(password, os.urandom(SALT_BYTES)),
    )
    single_user(instance, sql)
    single_user(instance, f'CREATE DATABASE "{DB}" OWNER "{USER}";\n\n')
    single_user(instance, database_sql(USER, DB), DB)
    instance.start()
    try:
        yield instance, password
    finally:
        instance.stop()


def test_the_monitoring_role_reads_statistics_and_nothing_else(
    server: tuple[Instance, str],
) -> None:
    instance, password = server
    with instance.superuser("su") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.secrets (v text)")
    with instance.connect(password, MONITORING_USER, "postgres") as conn:
        row = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, "
            "rolconnlimit, ARRAY(SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b "
            "ON b.oid = m.roleid WHERE m.member = r.oid) FROM pg_roles r "
            "WHERE rolname = current_user"
        ).fetchone()
        assert row == (False, False, False, False, False, 3, ["pg_monitor"])
        # pg_read_all_stats (in pg_monitor): other sessions' activity is visible.
        assert conn.execute("SELECT count(*) FROM pg_stat_activity").fetchone()[0] >= 1  # type: ignore[index]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM public.secrets")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE ROLE x")
    # The application's database is not the monitoring role's to log in to.
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
        instance.connect(password, MONITORING_USER, DB).close()


@pytest.mark.skipif(EXPORTER is None, reason="needs prometheus-postgres-exporter")
def test_postgres_exporter_reads_the_server_as_the_topology_configures_it(
    server: tuple[Instance, str],
) -> None:
    assert EXPORTER is not None
    instance, password = server
    rendered = build_topology(SPEC).node("postgres-exporter-0")
    env = dict(rendered.env)
    # The container reaches its member by name; here the member is on loopback.
    env["DATA_SOURCE_URI"] = env["DATA_SOURCE_URI"].replace(
        "postgres-0:5432", f"127.0.0.1:{instance.port}"
    )
    (variable,) = rendered.secret_env  # the password, from the environment only
    env[variable] = password
    listen = free_port()
    process = subprocess.Popen(
        [EXPORTER, f"--web.listen-address=127.0.0.1:{listen}"],
        env={"PATH": "/usr/bin:/bin", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{listen}/metrics", timeout=5) as r:
                    text = r.read().decode()
                if "\npg_up 1" in "\n" + text:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert "\npg_up 1" in "\n" + text, text[-2000:]
        # What the PostgresConnectionsHigh rule divides.
        assert "pg_stat_activity_count{" in text
        assert "pg_settings_max_connections " in text
    finally:
        process.terminate()
        process.wait(timeout=10)
