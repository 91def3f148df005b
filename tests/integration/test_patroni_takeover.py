"""A stack deployed before Patroni keeps its data: Patroni, started with the phase's rendered
patroni.yml on the plain primary's data directory (what `pulumi up` does to a growth stack
whose PostgreSQL ran without Patroni: same volume, same path), takes it over as the leader.

Real PostgreSQL, etcd and Patroni on 127.0.0.1: every row the old primary held is there, the
roles are the phase's (the rewind role included, which Patroni creates only when it
bootstraps a cluster itself), so is the cluster configuration (which Patroni, taking a
cluster over, does not read from bootstrap.dcs), and the slot of the old replica, which nothing would ever
consume again, is dropped instead of holding WAL until the disk fills.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from local_helpers import wait_for

from scaling.local.patroni import patroni_tool
from scaling.local.ports import PortAllocator
from scaling.local.procs import pg_bin
from scaling.render.endpoints import Endpoint
from scaling.render.etcd import EtcdMember, etcd_arguments
from scaling.render.patroni import PatroniLayout, render_patroni_yml, roles_script
from scaling.render.scram import scram_verifier
from scaling.stackconfig import parse

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0
        or shutil.which("etcd") is None
        or shutil.which(pg_bin("postgres")) is None,
        reason="needs root (PostgreSQL runs as postgres), etcd and PostgreSQL",
    ),
]

SPEC = parse({"sikka:phase": "growth"}, stack="growth")
HOST = "127.0.1.9"  # Patroni refuses 127.0.0.1 as a connect address
ROWS = 1000
PASSWORDS = {
    "POSTGRES_PASSWORD": "super-secret",
    "DATABASE_PASSWORD": "app-secret",
    "REPLICATION_PASSWORD": "replication-secret",
    "REWIND_PASSWORD": "rewind-secret",
}


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv]


@pytest.fixture
def root() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="sikka-takeover-"))
    folder.chmod(0o755)
    shutil.chown(folder, "postgres", "postgres")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def plain_primary(root: Path, port: int) -> Path:
    """A primary as the phase ran it before Patroni, with data and its replica's slot."""
    data = root / "data"
    (root / "pw").write_text(PASSWORDS["POSTGRES_PASSWORD"] + "\n")
    shutil.chown(root / "pw", "postgres", "postgres")
    run = {"check": True, "capture_output": True, "timeout": 120}
    subprocess.run(
        as_postgres(
            [
                *(pg_bin("initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={root / 'pw'}"),
                *("--auth=scram-sha-256", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"),
            ]
        ),
        **run,  # type: ignore[arg-type]
    )
    options = f"-c port={port} -c listen_addresses={HOST} -c unix_socket_directories={root}"
    ctl = [pg_bin("pg_ctl"), "-D", str(data), "-l", str(root / "plain.log"), "-w"]
    subprocess.run(as_postgres([*ctl, "-o", options, "start"]), **run)  # type: ignore[arg-type]
    user, db = SPEC.postgres.user, SPEC.postgres.database
    su = {"host": HOST, "port": port, "user": "postgres"}
    with psycopg.connect(**su, password=PASSWORDS["POSTGRES_PASSWORD"], autocommit=True) as c:
        c.execute(f"CREATE ROLE {user} LOGIN PASSWORD 'old'")
        c.execute(f"CREATE DATABASE {db} OWNER {user}")
        c.execute("SELECT pg_create_physical_replication_slot('replica_1')")
    with psycopg.connect(**su, password=PASSWORDS["POSTGRES_PASSWORD"], dbname=db) as c:
        c.execute(f"CREATE TABLE trips (n int PRIMARY KEY); ALTER TABLE trips OWNER TO {user}")
        c.execute("INSERT INTO trips SELECT generate_series(1, %s)", (ROWS,))
    subprocess.run(as_postgres([*ctl, "-m", "fast", "stop"]), **run)  # type: ignore[arg-type]
    return data


@pytest.fixture
def etcd(root: Path) -> Iterator[Endpoint]:
    ports = PortAllocator()
    member = EtcdMember(
        "etcd-0", Endpoint("127.0.0.1", ports.take()), Endpoint("127.0.0.1", ports.take())
    )
    argv = [
        "etcd",
        *etcd_arguments(SPEC, member, (member,), str(root / "etcd"), listen_host="127.0.0.1"),
    ]
    with open(root / "etcd.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(
            "etcd",
            lambda: httpx.get(f"http://{member.client}/health", timeout=2).status_code == 200,
            60,
        )
        yield member.client
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_patroni_takes_over_a_plain_primary_with_its_data(root: Path, etcd: Endpoint) -> None:
    ports = PortAllocator()
    pg_port, api_port = ports.take((HOST,)), ports.take((HOST,))
    data = plain_primary(root, pg_port)
    layout = PatroniLayout(
        scope="sikka-takeover",
        name="postgres-0",
        rest_listen=Endpoint(HOST, api_port),
        rest_connect=Endpoint(HOST, api_port),
        pg_listen=Endpoint(HOST, pg_port),
        pg_connect=Endpoint(HOST, pg_port),
        data_dir=str(data),
        socket_dir=str(root),
        pgpass=str(root / "pgpass"),
        etcd_hosts=(etcd,),
        private_networks=("127.0.0.0/8",),
        roles_script=f"sh {root / 'roles.sh'}",
        bin_dir=str(Path(pg_bin("postgres")).parent),
    )
    (root / "patroni.yml").write_text(render_patroni_yml(SPEC, layout))
    pg = SPEC.postgres
    script = roles_script(SPEC, str(root), pg_port, f"http://{HOST}:{api_port}")
    (root / "roles.sh").write_text(script)
    for name in ("patroni.yml", "roles.sh"):
        shutil.chown(root / name, "postgres", "postgres")
    env = {
        "PATH": os.environ["PATH"],
        "PATRONI_SUPERUSER_PASSWORD": PASSWORDS["POSTGRES_PASSWORD"],
        "PATRONI_REPLICATION_PASSWORD": PASSWORDS["REPLICATION_PASSWORD"],
        "PATRONI_REWIND_PASSWORD": PASSWORDS["REWIND_PASSWORD"],
        "PATRONI_RESTAPI_USERNAME": "patroni",
        "PATRONI_RESTAPI_PASSWORD": "api-secret",
        "RESTAPI_PASSWORD": "api-secret",
        **PASSWORDS,
        # The role script sets the application role's SCRAM verifier, not its password.
        "DATABASE_PASSWORD_SCRAM": scram_verifier(PASSWORDS["DATABASE_PASSWORD"], os.urandom(16)),
    }
    with open(root / "patroni.log", "wb") as log:
        patroni = subprocess.Popen(
            as_postgres([patroni_tool("patroni"), str(root / "patroni.yml")]),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    api = f"http://{HOST}:{api_port}"
    superuser = {"host": HOST, "port": pg_port, "user": "postgres", "dbname": "postgres"}

    def roles_applied() -> bool:
        with psycopg.connect(**superuser, password=PASSWORDS["POSTGRES_PASSWORD"]) as c:
            row = c.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'rewinder'")
            return row.fetchone() == (True,)

    try:
        wait_for(
            "Patroni to lead", lambda: httpx.get(f"{api}/leader", timeout=2).status_code == 200, 60
        )
        wait_for("the role script on the leader", roles_applied, 60)
        app = {"host": HOST, "port": pg_port, "user": pg.user, "dbname": pg.database}
        with psycopg.connect(**app, password=PASSWORDS["DATABASE_PASSWORD"]) as c:
            assert c.execute("SELECT count(*) FROM trips").fetchone() == (ROWS,)
        with psycopg.connect(**superuser, password=PASSWORDS["POSTGRES_PASSWORD"]) as c:
            slots = [r[0] for r in c.execute("SELECT slot_name FROM pg_replication_slots")]
            assert "replica_1" not in slots
            assert c.execute(
                "SELECT rolsuper FROM pg_roles WHERE rolname = %s", (pg.user,)
            ).fetchone() == (False,)

        # Patroni does not read bootstrap.dcs when it takes a cluster over: the role script
        # set the stack's cluster configuration (Patroni's defaults are ttl 30, asynchronous).
        def configured() -> bool:  # 502 until a configuration is in the DCS
            response = httpx.get(f"{api}/config", timeout=2)
            return response.status_code == 200 and response.json().get("ttl") == 20

        wait_for("the stack's cluster configuration", configured, 60)
        config = httpx.get(f"{api}/config", timeout=2).json()
        assert config["synchronous_mode"] is True and config["loop_wait"] == 2
        assert config["postgresql"]["parameters"]["max_connections"] == "100"
        # The rewind role logs in with its password, as pg_rewind would.
        rewind = {"host": HOST, "port": pg_port, "user": "rewinder", "dbname": "postgres"}
        with psycopg.connect(**rewind, password=PASSWORDS["REWIND_PASSWORD"]) as c:
            assert c.execute("SELECT count(*) FROM pg_ls_dir('.', true, false)").fetchone()[0] > 0  # type: ignore[index]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(patroni.pid, signal.SIGTERM)
        try:
            patroni.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(patroni.pid, signal.SIGKILL)
        subprocess.run(
            as_postgres([pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
            check=False,
        )
