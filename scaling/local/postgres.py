"""PostgreSQL tier: the topology's single primary (launch) or its Patroni cluster (etcd,
Patroni members, HAProxy routers), and the PgBouncers in front of either.

Roles as on Docker: the cluster is initialised with the superuser ``postgres`` (its own
generated password; pg_hba admits it over the socket and loopback only), which then applies
the same start-up SQL as the Docker primary: the application role with least privilege,
owning its database, and the replication role. PgBouncer's console belongs to
``pgbouncer_admin`` (its own password), loopback only; the application role is no admin.

Names, roles and what PgBouncer pools (its "pools" edges) come from the topology. Under
Patroni the routers share one port per service on their own loopback addresses, and so do
the PgBouncers (127.0.3.(i+1)): a comma-separated host list with one port (PgBouncer >= 1.17,
libpq's multi-host URLs) reaches every one of them, as a Docker network alias does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from scaling.local import health, procs
from scaling.local.context import Context
from scaling.local.credentials import write_private
from scaling.local.etcd import start_etcd
from scaling.local.patroni import PatroniMember, start_patroni
from scaling.local.routers import start_routers
from scaling.local.state import ProcessEntry
from scaling.local.topology import nodes
from scaling.model import POOLER_ADMIN_USER, REPLICATION_USER, SUPERUSER, PhaseSpec
from scaling.render.endpoints import Endpoint
from scaling.render.pgbouncer import (
    PoolerLayout,
    config_name,
    read_only_database,
    render_pgbouncer_hba,
    render_pgbouncer_ini,
    render_userlist_line,
)
from scaling.render.postgres import (
    PostgresLayout,
    postgres_parameters,
    render_pg_hba_conf,
    render_postgresql_conf,
)
from scaling.render.postgres_start import database_sql, startup_sql
from scaling.topology import Node

LOOPBACK_NETWORK = "127.0.0.0/8"
START_TIMEOUT = 60.0
BASEBACKUP_TIMEOUT = 600.0
# The password file a following server's pg_basebackup and WAL receiver read (0600, owned by
# the postgres account; its path, never the password, is in primary_conninfo).
REPLICATION_PASSFILE = "replication.pgpass"
# What a hot standby needs at least as high as its primary (else it will not replay), as
# pg_controldata names the primary's values, and PostgreSQL's defaults for those the stack
# leaves alone.
STANDBY_MINIMUMS = {
    "max_connections": "max_connections setting",
    "max_worker_processes": "max_worker_processes setting",
    "max_wal_senders": "max_wal_senders setting",
    "max_prepared_transactions": "max_prepared_xacts setting",
    "max_locks_per_transaction": "max_locks_per_xact setting",
}
PG_DEFAULTS = {
    "max_worker_processes": "8",
    "max_prepared_transactions": "0",
    "max_locks_per_transaction": "64",
}


@dataclass
class PostgresEndpoints:
    """Where clients reach the tier; a list names every host behind one address."""

    # The read-write door: the primary, or the routers that follow the Patroni leader.
    primary: list[Endpoint]
    # The read-only door under Patroni: the routers' replica port.
    read_only: list[Endpoint] = field(default_factory=list)
    # Each Patroni member, directly.
    members: list[PatroniMember] = field(default_factory=list)
    poolers: list[Endpoint] = field(default_factory=list)


def pooler_host(ordinal: int) -> str:
    return f"127.0.3.{ordinal + 1}"


def host_list(endpoints: list[Endpoint]) -> Endpoint:
    """One address for several hosts serving on one port: ``h1,h2`` and that port (what
    PgBouncer's host= takes)."""
    ports = {e.port for e in endpoints}
    if len(ports) != 1:
        raise ValueError(f"hosts behind one address must share a port: {endpoints}")
    return Endpoint(",".join(e.host for e in endpoints), ports.pop())


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


def _layout(
    instance_dir: Path, host: str, port: int, monitoring_user: str | None = None
) -> PostgresLayout:
    return PostgresLayout(
        listen_addresses=host,
        port=port,
        socket_dir=str(instance_dir / "run"),
        hba_file=str(instance_dir / "conf" / "pg_hba.conf"),
        private_networks=(LOOPBACK_NETWORK,),
        monitoring_user=monitoring_user,
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
    if ctx.follow is not None:
        return start_standby(ctx, node)
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
    layout = _layout(instance, endpoint.host, endpoint.port, ctx.monitoring_user)
    conf = _write_configs(ctx, instance, layout)
    entry = ctx.start(_server_entry(ctx, node, data, conf, endpoint))
    ctx.endpoints[node.name] = endpoint
    health.wait_until(
        f"{node.name} accepts connections",
        lambda: _answers(ctx, endpoint, "postgres", superuser=True),
        START_TIMEOUT,
        process=entry,
    )
    _apply_roles(ctx, endpoint)
    return endpoint


def passfile_line(endpoint: Endpoint, user: str, password: str) -> str:
    """A libpq password file line for replication connections to ``endpoint`` (``:`` and
    ``\\`` escaped, as libpq reads them)."""

    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    return ":".join(
        escape(v) for v in (endpoint.host, str(endpoint.port), "replication", user, password)
    )


def primary_conninfo(endpoint: Endpoint, user: str, passfile: Path, name: str) -> str:
    """The conninfo a following server streams with: its password is read from
    ``passfile``, never written here."""
    return (
        f"host={endpoint.host} port={endpoint.port} user={user} passfile={passfile} "
        f"application_name={name} connect_timeout=3"
    )


def standby_parameters(own: dict[str, str], control: dict[str, str]) -> dict[str, str]:
    """The settings a hot standby must raise to its primary's values (``control``:
    pg_controldata of the base backup, which records the primary's), given its own
    (``own``, the phase's postgres_parameters): only those the primary has higher."""
    raised = {}
    for name, field_name in STANDBY_MINIMUMS.items():
        theirs = control.get(field_name, "")
        mine = own.get(name, PG_DEFAULTS.get(name, "0"))
        if theirs.isdigit() and mine.isdigit() and int(theirs) > int(mine):
            raised[name] = theirs
    return raised


def render_standby_auto_conf(conninfo: str, raised: dict[str, str]) -> str:
    """postgresql.auto.conf of a following server (replaces the copy of the source's)."""
    quoted = conninfo.replace("'", "''")
    lines = [
        "# Written by sikka-scaling: this server follows a transition's source.",
        f"primary_conninfo = '{quoted}'",
        *(f"{name} = {value}" for name, value in sorted(raised.items())),
    ]
    return "\n".join(lines) + "\n"


def make_standby_data(
    *,
    instance: Path,
    name: str,
    door: Endpoint,
    password: str,
    spec: PhaseSpec,
    pg_user: str | None,
    run_tool: Callable[..., Any],
    log: str | None = None,
) -> dict[str, str]:
    """``instance``/data as a hot standby of ``door``: pg_basebackup as the replication
    role (``password`` in ``instance``/replication.pgpass, 0600, owned by ``pg_user``; only
    its path in primary_conninfo), ``standby.signal``, and a postgresql.auto.conf with
    primary_conninfo and the settings raised to the primary's (returned). The data folder
    must not exist yet."""
    data = instance / "data"
    passfile = instance / REPLICATION_PASSFILE
    account = procs.account(pg_user)
    uid, gid = (account.pw_uid, account.pw_gid) if account else (None, None)
    line = passfile_line(door, REPLICATION_USER, password)
    write_private(passfile, line + "\n", uid=uid, gid=gid)
    run_tool(
        [
            procs.pg_bin("pg_basebackup"),
            "-D",
            str(data),
            "-h",
            door.host,
            "-p",
            str(door.port),
            "-U",
            REPLICATION_USER,
            "--no-password",
            "--wal-method=stream",
            "--checkpoint=fast",
        ],
        user=pg_user,
        env={"PGPASSFILE": str(passfile)},
        timeout=BASEBACKUP_TIMEOUT,
        log=log,
    )
    control = run_tool(
        [procs.pg_bin("pg_controldata"), "-D", str(data)], user=pg_user, timeout=30
    ).stdout
    raised = standby_parameters(postgres_parameters(spec), parse_controldata(control))
    conninfo = primary_conninfo(door, REPLICATION_USER, passfile, name)
    for path, text in (
        (data / "postgresql.auto.conf", render_standby_auto_conf(conninfo, raised)),
        (data / "standby.signal", ""),
    ):
        path.write_text(text)
        if uid is not None:
            os.chown(path, uid, -1 if gid is None else gid)
    return raised


def start_standby(ctx: Context, node: Node) -> Endpoint:
    """A transition's target without Patroni: its data directory is a base backup of the
    source's read-write door (pg_basebackup as the replication role), and it starts as a
    hot standby streaming from there (standby.signal, primary_conninfo with a password
    file). Roles and databases come with the copy; promote-target ends the recovery."""
    assert ctx.follow is not None
    door = ctx.follow.postgres
    endpoint = Endpoint("127.0.0.1", ctx.ports.take())
    ctx.begin(node.name, ctx.log_path(node.name))
    instance = ctx.pg_dir(ctx.pg_root / node.name, 0o755)
    data = instance / "data"
    raised = make_standby_data(
        instance=instance,
        name=node.name,
        door=door,
        password=ctx.secrets["replication-password"],
        spec=ctx.spec,
        pg_user=ctx.pg_user,
        run_tool=ctx.run_tool,
        log=ctx.log_path(node.name),
    )
    layout = _layout(instance, endpoint.host, endpoint.port, ctx.monitoring_user)
    conf = _write_configs(ctx, instance, layout)
    entry = ctx.start(_server_entry(ctx, node, data, conf, endpoint))
    ctx.endpoints[node.name] = endpoint
    health.wait_until(
        f"{node.name} accepts connections as a standby of {door}",
        lambda: standby_streams(endpoint, ctx.secrets["postgres-superuser-password"]),
        START_TIMEOUT,
        process=entry,
    )
    if raised:
        ctx.notes.append(standby_note(node.name, ctx.follow.stack, raised))
    return endpoint


def standby_note(name: str, source: str, raised: dict[str, str]) -> str:
    settings = ", ".join(f"{k} = {v}" for k, v in sorted(raised.items()))
    return (
        f"postgres: {name} follows {source}, so it runs with {settings} (a standby needs "
        "its primary's values; kept after the promotion)"
    )


def parse_controldata(text: str) -> dict[str, str]:
    """pg_controldata's ``Name:   value`` lines."""
    fields = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip()] = value.strip()
    return fields


def standby_streams(endpoint: Endpoint, superuser_password: str) -> bool:
    """Whether the server at ``endpoint`` is in recovery and its WAL receiver streams."""
    with psycopg.connect(
        host=endpoint.host,
        port=endpoint.port,
        user=SUPERUSER,
        password=superuser_password,
        dbname="postgres",
        connect_timeout=3,
    ) as conn:
        row = conn.execute(
            "SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver)"
        ).fetchone()
    return bool(row and row[0] and row[1] == "streaming")


def _apply_roles(ctx: Context, endpoint: Endpoint) -> None:
    """The single Docker primary's start-up SQL, as the superuser over loopback: the roles,
    then the application's database owned by its role (a phase with replicas runs Patroni).
    Passwords go to psql on stdin and in its environment, never on a command line."""
    pg = ctx.spec.postgres
    roles = startup_sql(
        pg.user,
        superuser_password=ctx.secrets["postgres-superuser-password"],
        password=ctx.secrets["postgres-password-scram"],
        replication_password=None,
        keep_slots=[],
        monitoring_password=(
            ctx.secrets["monitoring-password-scram"] if ctx.monitoring_user else None
        ),
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


def pooled(ctx: Context, pooler: Node) -> tuple[Endpoint, list[Endpoint]]:
    """What the pooler's "pools" edges reach: the read-write address (every host behind the
    service, one port), the read-only hosts."""
    primary: Endpoint | None = None
    replicas: list[Endpoint] = []
    for edge in ctx.topology.edges_from(pooler.name, "pools"):
        service = ctx.topology.service(edge.target)
        if service.purpose == "read-write":
            primary = host_list(ctx.endpoints_of(service.name))
        elif service.purpose == "read-only":
            replicas = ctx.endpoints_of(service.name)
    if primary is None:
        raise KeyError(f"{pooler.name} pools no read-write service in the topology")
    return primary, replicas


def start_pgbouncer(ctx: Context, node: Node, endpoint: Endpoint) -> Endpoint:
    spec = ctx.spec
    primary, replicas = pooled(ctx, node)
    ctx.begin(node.name, ctx.log_path(node.name))
    folder = ctx.pg_dir(ctx.pg_root / node.name, 0o700)
    userlist = folder / "userlist.txt"
    uid, gid = ctx.pg_ids()
    write_private(
        userlist,
        render_userlist_line(spec.postgres.user, ctx.secrets["postgres-password-scram"])
        + render_userlist_line(POOLER_ADMIN_USER, ctx.secrets["pgbouncer-admin-password-scram"])
        + (
            render_userlist_line(ctx.monitoring_user, ctx.secrets["monitoring-password-scram"])
            if ctx.monitoring_user
            else ""
        ),
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
        monitoring_user=ctx.monitoring_user,
    )
    hba = Path(layout.hba_file)
    hba.write_text(render_pgbouncer_hba(spec, layout))
    ctx.chown_pg(hba)
    # The pooler's processes share its address (so_reuseport), each recorded on its own
    # (pid, log) for `local status` and `down`; the first one carries the node's name.
    entries = []
    for process in range(spec.pooler.processes):
        ini = folder / config_name(spec, process)
        ini.write_text(render_pgbouncer_ini(spec, layout, process))
        ctx.chown_pg(ini)
        name = pooler_process_name(node.name, process)
        entries.append(
            ctx.start(
                ProcessEntry(
                    name=name,
                    role=node.role,
                    tier=node.tier,
                    argv=["pgbouncer", str(ini)],
                    log=ctx.log_path(name),
                    host=endpoint.host,
                    port=endpoint.port,
                    user=ctx.pg_user,
                    cwd=str(folder),
                )
            )
        )
    ctx.endpoints[node.name] = endpoint
    databases = [spec.postgres.database]
    if replicas:
        databases.append(read_only_database(spec))
    if ctx.follow is not None:
        # A standby cluster has no read-write server until its promotion: wait for what
        # answers now (its replicas, or the pooler's own console).
        databases = databases[1:]
    for entry in entries:
        for dbname in databases:
            health.wait_until(
                f"pgbouncer serves {dbname}",
                lambda db=dbname: _answers(ctx, endpoint, db),  # type: ignore[misc]
                START_TIMEOUT,
                process=entry,
            )
        if not databases:
            health.wait_until(
                "pgbouncer's console answers",
                lambda: _console_answers(ctx, endpoint),
                START_TIMEOUT,
                process=entry,
            )
    return endpoint


def _console_answers(ctx: Context, endpoint: Endpoint) -> bool:
    """PgBouncer's admin console answers SHOW VERSION (no server needed)."""
    with psycopg.connect(
        host=endpoint.host,
        port=endpoint.port,
        user=POOLER_ADMIN_USER,
        password=ctx.secrets["pgbouncer-admin-password"],
        dbname="pgbouncer",
        autocommit=True,
        connect_timeout=3,
        cursor_factory=psycopg.ClientCursor,
    ) as conn:
        return conn.execute("SHOW VERSION").fetchone() is not None


def pooler_process_name(node: str, process: int) -> str:
    """``pgbouncer-0`` for a pooler's first process, ``pgbouncer-0.1`` for its second."""
    return node if process == 0 else f"{node}.{process}"


def start_postgres(ctx: Context) -> PostgresEndpoints:
    if nodes(ctx.topology, "postgres", "dcs"):
        found = _start_patroni_cluster(ctx)
    else:
        (primary,) = nodes(ctx.topology, "postgres", "primary")
        found = PostgresEndpoints(primary=[start_primary(ctx, primary)])
    poolers = nodes(ctx.topology, "postgres", "pooler")
    if len(poolers) == 1:
        single = Endpoint("127.0.0.1", ctx.ports.take())
        found.poolers.append(start_pgbouncer(ctx, poolers[0], single))
    elif poolers:
        port = ctx.ports.take(tuple(pooler_host(n.ordinal) for n in poolers))
        for pooler in poolers:
            found.poolers.append(
                start_pgbouncer(ctx, pooler, Endpoint(pooler_host(pooler.ordinal), port))
            )
    return found


def _start_patroni_cluster(ctx: Context) -> PostgresEndpoints:
    if ctx.spec.postgres.mode == "citus":
        count = len(nodes(ctx.topology, "postgres", "primary", "replica"))
        ctx.notes.append(
            "postgres: Citus is not packaged for Debian here, so the scale phase runs locally "
            f"as {count} Patroni members behind HAProxy and PgBouncer (the Kubernetes "
            "stack runs Citus through StackGres)."
        )
    etcd = start_etcd(ctx)
    members = start_patroni(ctx, etcd)
    routers = start_routers(ctx, members)
    return PostgresEndpoints(
        primary=routers.read_write, read_only=routers.read_only, members=members
    )
