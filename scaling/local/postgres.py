"""PostgreSQL tier: a primary, streaming replicas (pg_basebackup + slots), and PgBouncer.

Replica i listens on its own loopback address 127.0.0.(i+1), all on one shared port, so the
rendered PgBouncer read-only pool (a comma-separated host list with one port, PgBouncer >=
1.17) spreads over them exactly as the Docker network alias does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from scaling.local import health, procs
from scaling.local.context import Context
from scaling.local.credentials import write_private
from scaling.local.state import ProcessEntry
from scaling.render.endpoints import Endpoint
from scaling.render.pgbouncer import (
    PoolerLayout,
    read_only_database,
    render_pgbouncer_ini,
    render_userlist_line,
)
from scaling.render.postgres import (
    REPLICATION_USER,
    PostgresLayout,
    render_pg_hba_conf,
    render_postgresql_conf,
    render_replication_role_sql,
    replication_slot,
)

LOOPBACK_NETWORK = "127.0.0.0/8"
START_TIMEOUT = 60.0
STREAMING_TIMEOUT = 60.0


@dataclass
class PostgresEndpoints:
    primary: Endpoint
    replicas: list[Endpoint] = field(default_factory=list)
    pooler: Endpoint | None = None


def replica_host(index: int) -> str:
    return f"127.0.0.{index + 1}"


def connect(
    ctx: Context, endpoint: Endpoint, dbname: str | None = None, **kwargs: object
) -> psycopg.Connection[Any]:
    pg = ctx.spec.postgres
    return psycopg.connect(
        host=endpoint.host,
        port=endpoint.port,
        user=pg.user,
        password=ctx.secrets["postgres-password"],
        dbname=dbname or pg.database,
        connect_timeout=3,
        **kwargs,  # type: ignore[arg-type]
    )


def _answers(ctx: Context, endpoint: Endpoint, dbname: str) -> bool:
    with connect(ctx, endpoint, dbname) as conn:
        return conn.execute("SELECT 1").fetchone() == (1,)


def _layout(instance_dir: Path, host: str, port: int) -> PostgresLayout:
    return PostgresLayout(
        listen_addresses=host,
        port=port,
        socket_dir=str(instance_dir / "run"),
        hba_file=str(instance_dir / "conf" / "pg_hba.conf"),
        private_networks=(LOOPBACK_NETWORK,),
    )


def _write_configs(ctx: Context, instance_dir: Path, layout: PostgresLayout) -> Path:
    conf_dir = ctx.pg_dir(instance_dir / "conf", 0o755)
    ctx.pg_dir(instance_dir / "run", 0o755)
    for name, text in (
        ("postgresql.conf", render_postgresql_conf(ctx.spec, layout)),
        ("pg_hba.conf", render_pg_hba_conf(ctx.spec, layout)),
    ):
        path = conf_dir / name
        path.write_text(text)
        ctx.chown_pg(path)
    return conf_dir / "postgresql.conf"


def _server_entry(
    ctx: Context, name: str, role: str, data: Path, conf: Path, endpoint: Endpoint
) -> ProcessEntry:
    return ProcessEntry(
        name=name,
        role=role,
        tier="postgres",
        argv=[procs.pg_bin("postgres"), "-D", str(data), "-c", f"config_file={conf}"],
        log=ctx.log_path(name),
        host=endpoint.host,
        port=endpoint.port,
        user=ctx.pg_user,
        cwd=str(data.parent),
        stop="pg_ctl",
        data_dir=str(data),
        stop_timeout=20.0,
    )


def start_primary(ctx: Context) -> Endpoint:
    spec = ctx.spec
    endpoint = Endpoint("127.0.0.1", ctx.ports.take())
    ctx.begin("postgres-primary", ctx.log_path("postgres-primary"))
    instance = ctx.pg_dir(ctx.pg_root / "primary", 0o755)
    data = instance / "data"
    pwfile = instance / "initdb.pw"
    uid, gid = ctx.pg_ids()
    write_private(pwfile, ctx.secrets["postgres-password"] + "\n", uid=uid, gid=gid)
    try:
        procs.run_tool(
            [
                procs.pg_bin("initdb"),
                "-D",
                str(data),
                "-U",
                spec.postgres.user,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            user=ctx.pg_user,
            timeout=120,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    conf = _write_configs(ctx, instance, _layout(instance, endpoint.host, endpoint.port))
    entry = ctx.start(_server_entry(ctx, "postgres-primary", "primary", data, conf, endpoint))
    health.wait_until(
        "postgres-primary accepts connections",
        lambda: _answers(ctx, endpoint, "postgres"),
        START_TIMEOUT,
        process=entry,
    )
    with connect(ctx, endpoint, "postgres", autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("CREATE DATABASE {} OWNER {}").format(
                psycopg.sql.Identifier(spec.postgres.database),
                psycopg.sql.Identifier(spec.postgres.user),
            )
        )
    if spec.postgres.read_replicas:
        # The rendered role SQL takes the password as a psql variable; feeding it on stdin
        # keeps it off every command line.
        password = ctx.secrets["replication-password"]
        procs.run_tool(
            [
                procs.pg_bin("psql"),
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                endpoint.host,
                "-p",
                str(endpoint.port),
                "-U",
                spec.postgres.user,
                "-d",
                spec.postgres.database,
                "-q",
            ],
            user=ctx.pg_user,
            env={"PGPASSWORD": ctx.secrets["postgres-password"]},
            input_text=f"\\set replication_password '{password}'\n" + render_replication_role_sql(),
        )
    return endpoint


def start_replica(ctx: Context, index: int, primary: Endpoint, port: int) -> Endpoint:
    name = f"postgres-replica-{index}"
    endpoint = Endpoint(replica_host(index), port)
    ctx.begin(name, ctx.log_path(name))
    instance = ctx.pg_dir(ctx.pg_root / f"replica-{index}", 0o755)
    data = instance / "data"
    procs.run_tool(
        [
            procs.pg_bin("pg_basebackup"),
            "-h",
            primary.host,
            "-p",
            str(primary.port),
            "-U",
            REPLICATION_USER,
            "-D",
            str(data),
            "--write-recovery-conf",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--create-slot",
            f"--slot={replication_slot(index)}",
            "--no-sync",
        ],
        user=ctx.pg_user,
        env={"PGPASSWORD": ctx.secrets["replication-password"]},
        timeout=180,
    )
    (data).chmod(0o700)
    conf = _write_configs(ctx, instance, _layout(instance, endpoint.host, endpoint.port))
    entry = ctx.start(_server_entry(ctx, name, "replica", data, conf, endpoint))
    health.wait_until(
        f"{name} accepts read-only connections",
        lambda: _answers(ctx, endpoint, ctx.spec.postgres.database),
        START_TIMEOUT,
        process=entry,
    )
    return endpoint


def streaming_replicas(ctx: Context, primary: Endpoint) -> int:
    with connect(ctx, primary) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
        ).fetchone()
    return int(row[0]) if row else 0


def start_pgbouncer(ctx: Context, primary: Endpoint, replicas: list[Endpoint]) -> Endpoint:
    spec = ctx.spec
    endpoint = Endpoint("127.0.0.1", ctx.ports.take())
    ctx.begin("pgbouncer", ctx.log_path("pgbouncer"))
    folder = ctx.pg_dir(ctx.pg_root / "pgbouncer", 0o700)
    userlist = folder / "userlist.txt"
    uid, gid = ctx.pg_ids()
    write_private(
        userlist,
        render_userlist_line(spec.postgres.user, ctx.secrets["postgres-password"]),
        uid=uid,
        gid=gid,
    )
    layout = PoolerLayout(
        listen=endpoint,
        primary=primary,
        replica_hosts=tuple(r.host for r in replicas),
        replica_port=replicas[0].port if replicas else primary.port,
        auth_file=str(userlist),
        unix_socket_dir="",
    )
    ini = folder / "pgbouncer.ini"
    ini.write_text(render_pgbouncer_ini(spec, layout))
    ctx.chown_pg(ini)
    entry = ctx.start(
        ProcessEntry(
            name="pgbouncer",
            role="pooler",
            tier="postgres",
            argv=["pgbouncer", str(ini)],
            log=ctx.log_path("pgbouncer"),
            host=endpoint.host,
            port=endpoint.port,
            user=ctx.pg_user,
            cwd=str(folder),
        )
    )
    databases = [spec.postgres.database]
    if replicas:
        databases.append(read_only_database(spec))
    for dbname in databases:
        health.wait_until(
            f"pgbouncer serves {dbname}",
            lambda db=dbname: _answers(ctx, endpoint, db),  # type: ignore[misc]
            START_TIMEOUT,
            process=entry,
        )
    return endpoint


def start_postgres(ctx: Context) -> PostgresEndpoints:
    spec = ctx.spec
    if spec.postgres.mode == "citus":
        ctx.notes.append(
            "postgres: Citus is not packaged for Debian here, so the scale phase runs locally "
            f"as a primary + {spec.postgres.read_replicas} streaming replicas behind PgBouncer "
            "(the Kubernetes stack runs Citus through StackGres)."
        )
    primary = start_primary(ctx)
    replicas: list[Endpoint] = []
    if spec.postgres.read_replicas:
        hosts = tuple(replica_host(i) for i in range(1, spec.postgres.read_replicas + 1))
        port = ctx.ports.take(hosts)
        for index in range(1, spec.postgres.read_replicas + 1):
            replicas.append(start_replica(ctx, index, primary, port))
        ctx.begin("postgres streaming replication", ctx.log_path("postgres-primary"), "waiting for")
        health.wait_until(
            f"{len(replicas)} replicas streaming from the primary",
            lambda: streaming_replicas(ctx, primary) == len(replicas),
            STREAMING_TIMEOUT,
        )
    pooler = start_pgbouncer(ctx, primary, replicas) if spec.pooler.enabled else None
    return PostgresEndpoints(primary, replicas, pooler)
