"""The Postgres containers' start logic, run with the real PostgreSQL on 127.0.0.1.

The primary's start-up SQL (what primary-start.sh feeds `postgres --single` before the image
entrypoint) re-applies rotated passwords and drops the slot of a replica the phase no longer
has; the replica's start script (replica-start.sh, run here by /bin/sh exactly as rendered)
bootstraps from the primary through its slot and streams with the password from its
environment, also after a rotation.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
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
from scaling.render.postgres_start import replica_start_script, startup_sql
from scaling.stackconfig import parse

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which(pg_bin("postgres")) is None, reason="needs PostgreSQL"),
]

SPEC = parse({"sikka:phase": "growth"}, stack="growth")
USER = SPEC.postgres.user


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

    def connect(self, password: str, user: str = USER, **kw: object) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=user,
            password=password,
            dbname="postgres",
            connect_timeout=3,
            autocommit=True,
            **kw,  # type: ignore[arg-type]
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


def single_user(instance: Instance, sql: str) -> None:
    run(
        [
            pg_bin("postgres"),
            "--single",
            "-j",
            "-D",
            str(instance.data),
            "-c",
            f"config_file={instance.conf}",
            "postgres",
        ],
        input=sql,
        capture_output=True,
    )


def start_replica(replica: Instance, primary: Instance, password: str) -> subprocess.Popen[str]:
    script = replica.dir / "replica-start.sh"
    script.write_text(replica_start_script(str(replica.conf), str(replica.dir / "run" / "pgpass")))
    chown_to_postgres(replica.dir)
    env = {
        "PATH": f"{Path(pg_bin('postgres')).parent}:/usr/bin:/bin",
        "PGDATA": str(replica.data),
        "PRIMARY_HOST": "127.0.0.1",
        "PRIMARY_PORT": str(primary.port),
        "REPLICATION_SLOT": "replica_1",
        "NODE_NAME": "postgres-1",
        "REPLICATION_PASSWORD": password,
    }
    # Switch accounts in the child itself (not through runuser), so that signals reach the
    # server: the script execs postgres, as it does as a container's PID 1.
    account = {"user": "postgres", "group": "postgres", "extra_groups": []}
    with open(replica.dir / "log", "w") as log:
        return subprocess.Popen(
            ["sh", str(script)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            **(account if os.geteuid() == 0 else {}),  # type: ignore[arg-type]
        )


def streaming(primary: Instance, password: str) -> bool:
    with primary.connect(password) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_replication r JOIN pg_replication_slots s "
            "ON s.active_pid = r.pid WHERE r.application_name = 'postgres-1' "
            "AND r.state = 'streaming' AND s.slot_name = 'replica_1'"
        ).fetchone()
    return bool(row and row[0] == 1)


def test_rotation_and_slot_cleanup_with_real_postgres(root: Path) -> None:
    ports = PortAllocator()
    primary = Instance(root, "primary", ports.take())
    replica = Instance(root, "replica", ports.take())
    (root / "pw").write_text("first\n")
    chown_to_postgres(root)
    run(
        [
            pg_bin("initdb"),
            "-D",
            str(primary.data),
            "-U",
            USER,
            f"--pwfile={root / 'pw'}",
            "--auth=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ],
        capture_output=True,
    )
    # First start: what the image's init script does, plus two replicas' slots.
    single_user(primary, startup_sql(USER, "first", "repl-1", ["replica_1", "replica_2"]))
    primary.start()
    with primary.connect("first") as conn:
        for slot in ("replica_1", "replica_2"):
            conn.execute("SELECT pg_create_physical_replication_slot(%s)", (slot,))
    primary.stop()

    # The phase now has one replica, and both passwords were rotated.
    single_user(primary, startup_sql(USER, "it's rotated", "repl-2", ["replica_1"]))
    primary.start()
    replica_process = None
    try:
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            primary.connect("first")
        with primary.connect("it's rotated") as conn:
            slots = [r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots")]
            assert slots == ["replica_1"]
            conn.execute("CREATE TABLE trips (id int)")
            conn.execute("INSERT INTO trips VALUES (1), (2)")
        replica_process = start_replica(replica, primary, "repl-2")
        wait_until(
            "the replica streams through replica_1", lambda: streaming(primary, "it's rotated")
        )

        # Rotate the replication password again: the replica picks it up at its next start.
        replica_process.send_signal(signal.SIGINT)
        replica_process.wait(timeout=60)
        primary.stop()
        single_user(primary, startup_sql(USER, "it's rotated", "repl-3", ["replica_1"]))
        primary.start()
        with primary.connect("it's rotated") as conn:
            conn.execute("INSERT INTO trips VALUES (3)")
        replica_process = start_replica(replica, primary, "repl-3")
        wait_until("the replica streams again", lambda: streaming(primary, "it's rotated"))

        def replica_rows() -> int:
            with replica.connect("it's rotated") as conn:
                row = conn.execute("SELECT count(*) FROM trips").fetchone()
            return int(row[0]) if row else 0

        wait_until("the replica has every row", lambda: replica_rows() == 3)
    finally:
        if replica_process is not None and replica_process.poll() is None:
            replica_process.send_signal(signal.SIGINT)
            replica_process.wait(timeout=60)
        primary.stop()
