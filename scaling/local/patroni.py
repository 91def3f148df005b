"""The topology's Patroni members as local processes, each in a PID namespace of its own.

Each member gets its own loopback address, 127.0.1.(ordinal + 1): Patroni refuses 127.0.0.1
as a connect address (every member would be "itself"), and distinct addresses let all of
them share one PostgreSQL port and one REST port, as containers do. Its patroni.yml is the
containers' (scaling.render.patroni) with local folders and addresses; ``patroni
--validate-config`` must accept it before the member starts.

The member the topology bootstraps (ordinal 0) starts first and initialises the cluster; the
others start once it leads and clone from it. A transition's target (``ctx.follow``) starts
as a standby cluster of the source instead: its first member clones the source and leads as
the standby leader (scaling.local.follow). Passwords reach Patroni through its
environment only (the node's secret_env), never a file.

As root each member runs as the postgres account as PID 1 of its own PID namespace
(scaling.local.pidns): a kill -9 of its recorded pid takes PostgreSQL with it, as a
container's death does. Elsewhere Patroni runs directly as the current account.
"""

from __future__ import annotations

import getpass
import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path

from scaling.local import health, patroni_api, pidns, procs
from scaling.local.context import Context
from scaling.local.state import ProcessEntry
from scaling.local.topology import nodes
from scaling.render.endpoints import Endpoint
from scaling.render.patroni import (
    PatroniLayout,
    StandbySource,
    render_patroni_yml,
    roles_script,
)
from scaling.topology import Node
from scaling.topology.postgres import patroni_scope

# Folder holding the patroni and patronictl the postgres account can run (`make setup`
# builds .venv-patroni in the project); overrides the project's venv and PATH.
PATRONI_BIN_ENV = "SIKKA_PATRONI_BIN"
PROJECT_DIR = Path(__file__).resolve().parents[2]
VENV_BIN = PROJECT_DIR / ".venv-patroni" / "bin"
LOOPBACK_NETWORK = "127.0.0.0/8"
BOOTSTRAP_TIMEOUT = 90.0
JOIN_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0


@dataclass(frozen=True)
class PatroniMember:
    name: str
    postgres: Endpoint
    api: Endpoint
    config: str

    @property
    def api_url(self) -> str:
        return f"http://{self.api}"


def member_host(ordinal: int) -> str:
    return f"127.0.1.{ordinal + 1}"


def patroni_tool(name: str) -> str:
    """patroni or patronictl: from $SIKKA_PATRONI_BIN, the project's .venv-patroni, or PATH."""
    override = os.environ.get(PATRONI_BIN_ENV)
    for folder in (Path(override),) if override else (VENV_BIN,):
        if (folder / name).exists():
            return str(folder / name)
    return shutil.which(name) or name


def pg_bin_dir() -> str | None:
    """The folder of the PostgreSQL server binaries Patroni runs (not on PATH on Debian)."""
    postgres = Path(procs.pg_bin("postgres"))
    return str(postgres.parent) if postgres.is_absolute() else None


def member_layout(
    scope: str,
    name: str,
    postgres: Endpoint,
    api: Endpoint,
    folder: Path,
    etcd: tuple[Endpoint, ...],
    bin_dir: str | None,
    system_user: str = "postgres",
    monitoring_user: str | None = None,
) -> PatroniLayout:
    """One member's layout: it listens and is reached on its own loopback address."""
    return PatroniLayout(
        scope=scope,
        name=name,
        rest_listen=api,
        rest_connect=api,
        pg_listen=postgres,
        pg_connect=postgres,
        data_dir=str(folder / "data"),
        socket_dir=str(folder / "run"),
        pgpass=str(folder / "pgpass"),
        etcd_hosts=etcd,
        private_networks=(LOOPBACK_NETWORK,),
        roles_script=f"sh {folder / 'roles.sh'}",
        bin_dir=bin_dir,
        system_user=system_user,
        monitoring_user=monitoring_user,
    )


def _write(ctx: Context, path: Path, text: str, mode: int) -> None:
    path.write_text(text)
    path.chmod(mode)
    ctx.chown_pg(path)


def _environment(ctx: Context, node: Node) -> tuple[dict[str, str], dict[str, str]]:
    """(plain variables, variable -> secret name) of a member: the node's own."""
    env = dict(node.env)
    if ctx.pg_user is not None:
        env["HOME"] = pwd.getpwnam(ctx.pg_user).pw_dir
    return env, dict(node.secret_env)


def prepare_member(
    ctx: Context, node: Node, pg_port: int, api_port: int, etcd: tuple[Endpoint, ...]
) -> PatroniMember:
    """Write the member's roles script and patroni.yml and have Patroni validate them."""
    host = member_host(node.ordinal)
    folder = ctx.pg_dir(ctx.pg_root / node.name, 0o700)
    ctx.pg_dir(folder / "run", 0o755)
    postgres, api = Endpoint(host, pg_port), Endpoint(host, api_port)
    # The account Patroni runs as is the superuser on the socket (peer authentication).
    account = ctx.pg_user or getpass.getuser()
    layout = member_layout(
        patroni_scope(ctx.spec),
        node.name,
        postgres,
        api,
        folder,
        etcd,
        pg_bin_dir(),
        account,
        ctx.monitoring_user,
    )
    roles = roles_script(
        ctx.spec,
        layout.socket_dir,
        pg_port,
        f"http://{api}",
        monitoring=ctx.monitoring_user is not None,
    )
    _write(ctx, folder / "roles.sh", roles, 0o644)
    config = folder / "patroni.yml"
    # A transition's target: a standby cluster of the source's read-write door.
    standby = (
        StandbySource(ctx.follow.postgres.host, ctx.follow.postgres.port) if ctx.follow else None
    )
    _write(ctx, config, render_patroni_yml(ctx.spec, layout, standby), 0o600)
    validate(ctx, node, str(config))
    return PatroniMember(node.name, postgres, api, str(config))


def validate(ctx: Context, node: Node, config: str) -> None:
    """``patroni --validate-config``: it also checks the environment (etcd reachable, ports
    free, the binaries in bin_dir), so it runs where and as the member will."""
    env, secret_env = _environment(ctx, node)
    env |= {variable: ctx.secrets[secret] for variable, secret in secret_env.items()}
    ctx.run_tool(
        [patroni_tool("patroni"), "--validate-config", config],
        user=ctx.pg_user,
        env=env,
        log=ctx.log_path(node.name),
        timeout=60,
    )


def member_entry(ctx: Context, node: Node, member: PatroniMember) -> ProcessEntry:
    env, secret_env = _environment(ctx, node)
    argv = [patroni_tool("patroni"), member.config]
    namespaced = pidns.available()
    return ProcessEntry(
        name=node.name,
        role=node.role,
        tier=node.tier,
        argv=pidns.wrap(argv, ctx.pg_user) if namespaced else argv,
        log=ctx.log_path(node.name),
        host=member.postgres.host,
        port=member.postgres.port,
        env=env,
        secret_env=secret_env,
        # In a namespace, setpriv switches accounts; the launcher itself runs as root.
        user=None if namespaced else ctx.pg_user,
        cwd=str(Path(member.config).parent),
        stop_timeout=STOP_TIMEOUT,
        pid_namespace=namespaced,
    )


def start_patroni(ctx: Context, etcd: list[Endpoint]) -> list[PatroniMember]:
    """Start the members (the bootstrap member first) and wait until one leads and every
    other streams from it."""
    members_nodes = nodes(ctx.topology, "postgres", "primary", "replica")
    hosts = tuple(member_host(n.ordinal) for n in members_nodes)
    pg_port, api_port = ctx.ports.take(hosts), ctx.ports.take(hosts)
    if not pidns.available():
        ctx.notes.append(
            "postgres: not running as root, so each Patroni member runs directly as this "
            "account instead of in a PID namespace of its own: killing a member's pid leaves "
            "its PostgreSQL running"
        )
    started: list[PatroniMember] = []
    first, *others = sorted(members_nodes, key=lambda n: (n.role != "primary", n.ordinal))
    for batch, timeout in (([first], BOOTSTRAP_TIMEOUT), (others, JOIN_TIMEOUT)):
        entries = []
        for node in batch:
            ctx.begin(node.name, ctx.log_path(node.name))
            member = prepare_member(ctx, node, pg_port, api_port, tuple(etcd))
            entries.append(ctx.start(member_entry(ctx, node, member)))
            ctx.endpoints[node.name] = member.postgres
            started.append(member)
        names = [m.name for m in started]
        apis = [m.api_url for m in started]
        ctx.begin("the Patroni cluster", entries[0].log if entries else None, "waiting for")
        health.wait_until(
            f"a Patroni leader and {len(names) - 1} streaming replica(s) among {names}",
            lambda apis=apis, names=names: patroni_api.healthy(  # type: ignore[misc]
                patroni_api.fetch_cluster(apis), names
            ),
            timeout,
            processes=entries,
        )
    return started
