"""PostgreSQL tier: the topology's primary, its streaming replicas (pg_basebackup + slots)
and PgBouncer.

Roles as on Docker: the cluster is initialised with the superuser ``postgres`` (its own
generated password; pg_hba admits it over the socket and loopback only), which then applies
the same start-up SQL as the Docker primary: the application role with least privilege,
owning its database, and the replication role. PgBouncer's console belongs to
``pgbouncer_admin`` (its own password), loopback only; the application role is no admin.

Names, roles, who replicates from whom (replica_of), each replica's slot (from its ordinal)
and what PgBouncer pools (its "pools" edges) come from the topology. Replica i listens on
its own loopback address 127.0.0.(i+1), all on one shared port, so the rendered PgBouncer
read-only pool (a comma-separated host list with one port, PgBouncer >= 1.17) spreads over
them exactly as the Docker network alias does.
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
from scaling.local.topology import nodes, replicas_of
from scaling.model import POOLER_ADMIN_USER, SUPERUSER
from scaling.render.endpoints import Endpoint
from scaling.render.pgbouncer import (
    PoolerLayout,
    read_only_database,
    render_pgbouncer_hba,
    render_pgbouncer_ini,
    render_userlist_line,
)
from scaling.render.postgres import (
    REPLICATION_USER,
    PostgresLayout,
    render_pg_hba_conf,
    render_postgresql_conf,
    replication_slot,
)
from scaling.render.postgres_start import database_sql, startup_sql
from scaling.topology import Node

LOOPBACK_NETWORK = "127.0.0.0/8"
START_TIMEOUT = 60.0
STREAMING_TIMEOUT = 60.0


@dataclass
class PostgresEndpoints:
    primary: Endpoint
    replicas: list[Endpoint] = field(default_factory=list)
    pooler: Endpoint | None = None


def replica_host(ordinal: int) -> str:
    return f"127.0.0.{ordinal + 1}"


def connect(
    ctx: Context,
    endpoint: Endpoint,
    dbname: str | None = None,
    *,
    superuser: bool = False,
    **kwargs: object,
) -> psycopg.Connection[Any]:
    """As the application role, or as the superuser (which pg_hba admits from loopback)."""
    pg = ctx.spec.postgres
    return psycopg.connect(
        host=endpoint.host,
        port=endpoint.port,
        user=SUPERUSER if superuser else pg.user,
        password=ctx.secrets["postgres-superuser-password" if superuser else "postgres-password"],
        dbname=dbname or pg.database,
        connect_timeout=3,
        **kwargs,  # type: ignore[arg-type]
    )


def _answers(ctx: Context, endpoint: Endpoint, dbname: str, *, superuser: bool = False) -> bool:
    with connect(ctx, endpoint, dbname, superuser=superuser) as conn:
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
    ctx: Context, node: Node, data: Path, conf: Path, endpoint: Endpoint
) -> ProcessEntry:
    return ProcessEntry(
        name=node.name,
        role=node.role,
        tier=node.tier,
        argv=[procs.pg_bin("postgres"), "-D", str(data), "-c", f"config_file={conf}"],
        log=ctx.log_path(node.name),
        host=endpoint.host,
        port=endpoint.port,
        user=ctx.pg_user,
        cwd=str(data.parent),
        stop="pg_ctl",
        data_dir=str(data),
        stop_timeout=20.0,
    )


def start_primary(ctx: Context, node: Node) -> Endpoint:
    endpoint = Endpoint("127.0.0.1", ctx.ports.take())
    ctx.begin(node.name, ctx.log_path(node.name))
    instance = ctx.pg_dir(ctx.pg_root / node.name, 0o755)
    data = instance / "data"
    pwfile = instance / "initdb.pw"
    uid, gid = ctx.pg_ids()
    write_private(pwfile, ctx.secrets["postgres-superuser-password"] + "\n", uid=uid, gid=gid)
    try:
        ctx.run_tool(
            [
                procs.pg_bin("initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
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
    entry = ctx.start(_server_entry(ctx, node, data, conf, endpoint))
    ctx.endpoints[node.name] = endpoint
    health.wait_until(
        f"{node.name} accepts connections",
        lambda: _answers(ctx, endpoint, "postgres", superuser=True),
        START_TIMEOUT,
        process=entry,
    )
    _apply_roles(ctx, node, endpoint)
    return endpoint


def _apply_roles(ctx: Context, node: Node, endpoint: Endpoint) -> None:
    """The Docker primary's start-up SQL, as the superuser over loopback: the roles, then the
    application's database owned by its role. Passwords go to psql on stdin and in its
    environment, never on a command line."""
    pg = ctx.spec.postgres
    replicas = replicas_of(ctx.topology, node.name)
    roles = startup_sql(
        pg.user,
        superuser_password=ctx.secrets["postgres-superuser-password"],
        password=ctx.secrets["postgres-password"],
        replication_password=ctx.secrets["replication-password"] if replicas else None,
        keep_slots=[replication_slot(n.ordinal) for n in replicas],
    )
    create = f'CREATE DATABASE "{pg.database}" OWNER "{pg.user}";\n'
    for dbname, sql in (
        ("postgres", roles + create),
        (pg.database, database_sql(pg.user, pg.database)),
    ):
        ctx.run_tool(
            [
                procs.pg_bin("psql"),
                "-v",
                "ON_ERROR_STOP=1",
                "--no-psqlrc",
                "-h",
                endpoint.host,
                "-p",
                str(endpoint.port),
                "-U",
                SUPERUSER,
                "-d",
                dbname,
                "-q",
            ],
            user=ctx.pg_user,
            env={"PGPASSWORD": ctx.secrets["postgres-superuser-password"]},
            input_text=sql,
        )


def start_replica(ctx: Context, node: Node, port: int) -> Endpoint:
    """A streaming replica of the node's replica_of, on the slot of its ordinal."""
    if node.replica_of is None:
        raise ValueError(f"{node.name} replicates nothing in the topology")
    source = ctx.endpoint(node.replica_of)
    endpoint = Endpoint(replica_host(node.ordinal), port)
    ctx.begin(node.name, ctx.log_path(node.name))
    instance = ctx.pg_dir(ctx.pg_root / node.name, 0o755)
    data = instance / "data"
    ctx.run_tool(
        [
            procs.pg_bin("pg_basebackup"),
            "-h",
            source.host,
            "-p",
            str(source.port),
            "-U",
            REPLICATION_USER,
            "-D",
            str(data),
            "--write-recovery-conf",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--create-slot",
            f"--slot={replication_slot(node.ordinal)}",
            "--no-sync",
        ],
        user=ctx.pg_user,
        env={"PGPASSWORD": ctx.secrets["replication-password"]},
        timeout=180,
    )
    (data).chmod(0o700)
    conf = _write_configs(ctx, instance, _layout(instance, endpoint.host, endpoint.port))
    entry = ctx.start(_server_entry(ctx, node, data, conf, endpoint))
    ctx.endpoints[node.name] = endpoint
    health.wait_until(
        f"{node.name} accepts read-only connections",
        lambda: _answers(ctx, endpoint, ctx.spec.postgres.database),
        START_TIMEOUT,
        process=entry,
    )
    return endpoint


def streaming_replicas(ctx: Context, primary: Endpoint) -> int:
    # pg_stat_replication shows its state columns to privileged roles only.
    with connect(ctx, primary, "postgres", superuser=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
        ).fetchone()
    return int(row[0]) if row else 0


def pooled(ctx: Context, pooler: Node) -> tuple[Endpoint, list[Endpoint]]:
    """What the pooler's "pools" edges reach: the read-write node, the read-only ones."""
    primary: Endpoint | None = None
    replicas: list[Endpoint] = []
    for edge in ctx.topology.edges_from(pooler.name, "pools"):
        service = ctx.topology.service(edge.target)
        if service.purpose == "read-write":
            primary = ctx.endpoint(service.name)
        elif service.purpose == "read-only":
            replicas = ctx.endpoints_of(service.name)
    if primary is None:
        raise KeyError(f"{pooler.name} pools no read-write service in the topology")
    return primary, replicas


def start_pgbouncer(ctx: Context, node: Node) -> Endpoint:
    spec = ctx.spec
    primary, replicas = pooled(ctx, node)
    endpoint = Endpoint("127.0.0.1", ctx.ports.take())
    ctx.begin(node.name, ctx.log_path(node.name))
    folder = ctx.pg_dir(ctx.pg_root / node.name, 0o700)
    userlist = folder / "userlist.txt"
    uid, gid = ctx.pg_ids()
    write_private(
        userlist,
        render_userlist_line(spec.postgres.user, ctx.secrets["postgres-password"])
        + render_userlist_line(POOLER_ADMIN_USER, ctx.secrets["pgbouncer-admin-password"]),
        uid=uid,
        gid=gid,
    )
    layout = PoolerLayout(
        listen=endpoint,
        primary=primary,
        replica_hosts=tuple(r.host for r in replicas),
        replica_port=replicas[0].port if replicas else primary.port,
        auth_file=str(userlist),
        hba_file=str(folder / "pgbouncer_hba.conf"),
        client_networks=(LOOPBACK_NETWORK,),
        unix_socket_dir="",
    )
    ini = folder / "pgbouncer.ini"
    for path, text in (
        (ini, render_pgbouncer_ini(spec, layout)),
        (Path(layout.hba_file), render_pgbouncer_hba(spec, layout)),
    ):
        path.write_text(text)
        ctx.chown_pg(path)
    entry = ctx.start(
        ProcessEntry(
            name=node.name,
            role=node.role,
            tier=node.tier,
            argv=["pgbouncer", str(ini)],
            log=ctx.log_path(node.name),
            host=endpoint.host,
            port=endpoint.port,
            user=ctx.pg_user,
            cwd=str(folder),
        )
    )
    ctx.endpoints[node.name] = endpoint
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
    (primary,) = nodes(ctx.topology, "postgres", "primary")
    replicas = nodes(ctx.topology, "postgres", "replica")
    if ctx.spec.postgres.mode == "citus":
        ctx.notes.append(
            "postgres: Citus is not packaged for Debian here, so the scale phase runs locally "
            f"as {primary.name} + {len(replicas)} streaming replicas behind PgBouncer (the "
            "Kubernetes stack runs Citus through StackGres)."
        )
    start_primary(ctx, primary)
    if replicas:
        port = ctx.ports.take(tuple(replica_host(n.ordinal) for n in replicas))
        for node in replicas:
            start_replica(ctx, node, port)
        _wait_streaming(ctx, primary)
    poolers = nodes(ctx.topology, "postgres", "pooler")
    for pooler in poolers:
        start_pgbouncer(ctx, pooler)
    return PostgresEndpoints(
        primary=ctx.endpoints[primary.name],
        replicas=[ctx.endpoints[n.name] for n in replicas],
        pooler=ctx.endpoints[poolers[0].name] if poolers else None,
    )


def _wait_streaming(ctx: Context, source: Node) -> None:
    """Every replica the topology gives ``source`` streams from it."""
    wanted = len(replicas_of(ctx.topology, source.name))
    endpoint = ctx.endpoints[source.name]
    ctx.begin("postgres streaming replication", ctx.log_path(source.name), "waiting for")
    health.wait_until(
        f"{wanted} replicas streaming from {source.name}",
        lambda: streaming_replicas(ctx, endpoint) == wanted,
        STREAMING_TIMEOUT,
    )
