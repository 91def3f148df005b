"""pgbouncer.ini: transaction pooling in front of the primary and the read replicas.

Two users, each in the auth file with the SCRAM-SHA-256 verifier of its own password
(scaling.render.scram), never the password: the application role, which may use its
databases (``<database>`` and ``<database>_ro``) and nothing else, and ``pgbouncer_admin``,
the only user of the console (the virtual ``pgbouncer`` database: SHOW, PAUSE, SHUTDOWN,
...), admitted from loopback only, i.e. from inside the pooler's container (or, locally, its
host). The console user has no PostgreSQL role.

With a verifier PgBouncer checks a client's SCRAM proof with HMACs alone (a plaintext
password would cost it 4,096 PBKDF2 rounds per login, on its single thread), and logs in to
PostgreSQL with the client key that proof reveals (SCRAM pass-through). That needs the very
verifier PostgreSQL holds, same salt and iteration count: the start-up SQL sets the
application role's password to it (scaling.render.postgres_start), and the databases here
name no user.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling.model import POOLER_ADMIN_USER, PhaseSpec
from scaling.render.endpoints import Endpoint
from scaling.render.scram import is_scram_verifier

READ_ONLY_SUFFIX = "_ro"
POOLER_PORT = 6432


@dataclass(frozen=True)
class PoolerLayout:
    listen: Endpoint
    primary: Endpoint
    # All replicas share one port; PgBouncer (>= 1.17) spreads new server connections over a
    # comma-separated host list, and on Docker a network alias that resolves to every replica
    # does the same through DNS round-robin.
    replica_hosts: tuple[str, ...]
    replica_port: int
    auth_file: str = "/run/pgbouncer/userlist.txt"
    hba_file: str = "/etc/pgbouncer/pgbouncer_hba.conf"
    # Where the application's clients connect from (the private network, or loopback).
    client_networks: tuple[str, ...] = ("0.0.0.0/0", "::/0")
    unix_socket_dir: str = ""
    logfile: str = ""
    pidfile: str = ""
    # The exporters' login (a stats_users entry, SHOW commands only), or None where none runs.
    monitoring_user: str | None = None


def read_only_database(spec: PhaseSpec) -> str:
    return spec.postgres.database + READ_ONLY_SUFFIX


@dataclass(frozen=True)
class ProcessShare:
    """What one PgBouncer process of a pooler gets.

    PgBouncer is single-threaded; ``pooler.processes`` processes share the pooler's listen
    address with ``so_reuseport`` and the kernel spreads new clients over them. Each process
    has pools of its own, so the pooler's pools and reserve are divided between them (the
    first processes take the remainder: the shares add up to the pooler's figures exactly) and
    so is its part of PostgreSQL's connections (``max_db_connections``). Every process admits
    ``maxClientConn`` clients: the kernel's spread is uneven, and when one process dies the
    others take its new clients; server connections, not clients, are what PostgreSQL's
    budget bounds.
    """

    default_pool_size: int
    read_pool_size: int
    reserve_pool_size: int
    max_db_connections: int
    max_client_conn: int


def _part(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


def process_share(spec: PhaseSpec, process: int = 0) -> ProcessShare:
    pool = spec.pooler
    count = pool.processes
    if not 0 <= process < count:
        raise ValueError(f"process {process} of a pooler with {count} process(es)")
    return ProcessShare(
        default_pool_size=_part(pool.default_pool_size, count, process),
        read_pool_size=_part(pool.read_pool_size, count, process),
        reserve_pool_size=_part(pool.reserve_pool_size, count, process),
        max_db_connections=spec.postgres.usable_connections // (pool.replicas * count),
        max_client_conn=pool.max_client_conn,
    )


def config_name(spec: PhaseSpec, process: int = 0) -> str:
    """pgbouncer.ini, or pgbouncer-<process>.ini when a pooler runs several processes."""
    return "pgbouncer.ini" if spec.pooler.processes == 1 else f"pgbouncer-{process}.ini"


def render_pgbouncer_ini(spec: PhaseSpec, layout: PoolerLayout, process: int = 0) -> str:
    """Process ``process``'s configuration (all processes of a pooler listen on
    ``layout.listen``; ``layout``'s log and pid files must be that process's own)."""
    pg, pool = spec.postgres, spec.pooler
    share = process_share(spec, process)
    databases = [
        f"{pg.database} = host={layout.primary.host} port={layout.primary.port} "
        f"dbname={pg.database} pool_size={share.default_pool_size}"
    ]
    if layout.replica_hosts:
        databases.append(
            f"{read_only_database(spec)} = host={','.join(layout.replica_hosts)} "
            f"port={layout.replica_port} dbname={pg.database} pool_size={share.read_pool_size}"
        )
    reuse = (
        f";; Process {process + 1} of {pool.processes}: they share this address "
        "(so_reuseport), each with its share of the pools.\nso_reuseport = 1\n"
        if pool.processes > 1
        else ""
    )
    optional = "".join(
        f"{key} = {value}\n"
        for key, value in (
            ("logfile", layout.logfile),
            ("pidfile", layout.pidfile),
        )
        if value
    )
    return f"""\
;; Generated by sikka-scaling for the {spec.phase.value} phase; do not edit by hand.
[databases]
{chr(10).join(databases)}

[pgbouncer]
listen_addr = {layout.listen.host}
listen_port = {layout.listen.port}
{reuse}unix_socket_dir = {layout.unix_socket_dir}
{optional};; Who may connect to what, and from where: {layout.hba_file} (scram-sha-256).
auth_type = hba
auth_hba_file = {layout.hba_file}
auth_file = {layout.auth_file}
;; The console is {POOLER_ADMIN_USER}'s alone: the application role is no admin.
admin_users = {POOLER_ADMIN_USER}
stats_users = {", ".join(_stats_users(layout))}

pool_mode = {pool.pool_mode}
max_client_conn = {share.max_client_conn}
default_pool_size = {share.default_pool_size}
reserve_pool_size = {share.reserve_pool_size}
reserve_pool_timeout = 3
;; Never open more server connections per database than PostgreSQL lets clients have,
;; shared between the phase's {pool.replicas} PgBouncer(s) x {pool.processes} process(es).
max_db_connections = {share.max_db_connections}

;; When a backend is down, clients get an error within seconds instead of hanging; one that
;; comes back (a promoted leader) is tried again within a second.
server_connect_timeout = 5
server_login_retry = 1
query_wait_timeout = 10
client_login_timeout = 15
server_lifetime = 3600
server_idle_timeout = 300
ignore_startup_parameters = extra_float_digits,options
"""


# Console and loopback addresses: the console answers only from inside the pooler.
LOOPBACK = ("127.0.0.1/32", "::1/128")


def _stats_users(layout: PoolerLayout) -> list[str]:
    monitoring = [layout.monitoring_user] if layout.monitoring_user else []
    return [POOLER_ADMIN_USER, *monitoring]


def render_pgbouncer_hba(spec: PhaseSpec, layout: PoolerLayout) -> str:
    """PgBouncer's own pg_hba: the application role to its databases from the client
    networks, the console user to the console from loopback, the monitoring user (where
    exporters run) to the console from the client networks; nothing else."""
    pg = spec.postgres
    databases = f"{pg.database},{read_only_database(spec)}"

    def rule(database: str, user: str, address: str) -> str:
        return f"host    {database:<24} {user:<16} {address:<16} scram-sha-256"

    lines = [
        f"# Generated by sikka-scaling for the {spec.phase.value} phase; do not edit by hand.",
        "# TYPE  DATABASE                 USER             ADDRESS          METHOD",
        *(rule("pgbouncer", POOLER_ADMIN_USER, address) for address in LOOPBACK),
        *(rule(databases, pg.user, network) for network in layout.client_networks),
    ]
    if layout.monitoring_user:
        lines += [
            rule("pgbouncer", layout.monitoring_user, network) for network in layout.client_networks
        ]
    return "\n".join(lines) + "\n"


def render_userlist_line(user: str, verifier: str) -> str:
    """One auth_file line, the user's SCRAM verifier; callers write it at start-up from a
    secret, never to git. A plaintext password is refused: PgBouncer would accept it, and
    pay PBKDF2 for every login, and could not pass SCRAM through to PostgreSQL."""
    if not is_scram_verifier(verifier):
        raise ValueError(f"the auth file line of {user!r} needs a SCRAM-SHA-256 verifier")
    escaped = verifier.replace('"', '""')
    return f'"{user}" "{escaped}"\n'


def userlist_sh(user: str, variable: str) -> str:
    """Shell printing render_userlist_line(user, ${variable}) (a SCRAM verifier), for
    entrypoints."""
    return (
        f'escaped=$(printf \'%s\' "${variable}" | sed \'s/"/""/g\')\n'
        + 'printf \'"%s" "%s"\\n\' '
        + f'"{user}" "$escaped"'
    )


def supervise_sh(configs: list[str]) -> str:
    """Shell running one PgBouncer per configuration in one container: a stop signal goes to
    every process (SIGINT: each finishes its transactions), and when one process ends the
    others are stopped too, so that the container exits and its restart policy starts the
    pooler again whole, instead of leaving it serving with fewer processes unnoticed."""
    if len(configs) == 1:
        return f"exec pgbouncer {configs[0]}\n"
    starts = "".join(f'pgbouncer {config} & pids="$pids $!"\n' for config in configs)
    return (
        'pids=""\nstopping=0\n'
        + starts
        + "trap 'stopping=1; kill -INT $pids 2>/dev/null || true' INT\n"
        + "trap 'stopping=1; kill -TERM $pids 2>/dev/null || true' TERM\n"
        + "while kill -0 $pids 2>/dev/null; do sleep 1; done\n"
        + "[ $stopping = 1 ] || kill -INT $pids 2>/dev/null || true\n"
        + "wait\n"
        + '[ $stopping = 1 ] || { echo "a pgbouncer process ended: stopping the pooler" >&2; '
        + "exit 1; }\n"
    )
