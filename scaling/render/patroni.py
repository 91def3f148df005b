"""patroni.yml: one member of the phase's Patroni cluster, and its role script.

Patroni manages PostgreSQL wherever the phase has replicas and runs outside Kubernetes
(Docker, the local runner); StackGres runs Patroni on Kubernetes from the same phase values
(scaling.kubernetes.postgres). Every member gets the same settings; only its layout (its
name, where it listens, its folders, the DCS) differs.

No password is written here. Patroni reads them from its environment
(``PATRONI_SUPERUSER_PASSWORD``, ``PATRONI_REPLICATION_PASSWORD``,
``PATRONI_REWIND_PASSWORD``, ``PATRONI_RESTAPI_USERNAME``/``PATRONI_RESTAPI_PASSWORD``), and
the role script reads the application's from ``$DATABASE_PASSWORD``. Patroni removes the
``PATRONI_*`` variables from its environment once read, so its callbacks never see them: the
role script reads the superuser's and the replication role's passwords from the variables
every other script of the phase uses (``$POSTGRES_PASSWORD``, ``$REPLICATION_PASSWORD``),
which the member gets as well.

Durability (``postgres.synchronousMode``): "on" and "strict" make Patroni keep one
synchronous standby and promote only it, so a commit the leader acknowledged is on the new
leader too; "off" replicates asynchronously and never promotes a replica lagging more than
``postgres.maximumLagOnFailoverMb``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from scaling.model import REPLICATION_USER, SUPERUSER, PhaseSpec
from scaling.render.endpoints import Endpoint
from scaling.render.postgres import hba_rules, postgres_parameters
from scaling.render.postgres_start import SQL_LITERAL_SH, database_sql_sh, startup_sql_sh

REST_PORT = 8008
# Patroni's pg_rewind role: it lets a former leader rewind itself from the new one, with
# only the functions pg_rewind needs (Patroni creates and grants it at bootstrap).
REWIND_USER = "rewinder"
# Secret name → the variable Patroni reads it from.
PATRONI_SECRET_VARIABLES = {
    "PATRONI_SUPERUSER_PASSWORD": "postgres-superuser-password",
    "PATRONI_REPLICATION_PASSWORD": "replication-password",
    "PATRONI_REWIND_PASSWORD": "postgres-rewind-password",
    "PATRONI_RESTAPI_PASSWORD": "patroni-api-password",
}
# Who may call the REST API's changing endpoints (switchover, restart, reinitialize);
# reading the state (/primary, /replica, /health, /cluster) needs no password.
REST_API_USER = "patroni"
LOOP_WAIT_SECONDS = 2


@dataclass(frozen=True)
class PatroniLayout:
    scope: str  # the cluster's name in the DCS (one per stack)
    name: str  # the member's name: its node name
    rest_listen: Endpoint
    rest_connect: Endpoint
    pg_listen: Endpoint
    pg_connect: Endpoint
    data_dir: str
    socket_dir: str
    pgpass: str
    etcd_hosts: tuple[Endpoint, ...]
    # Where members, routers and poolers connect from (the private network, or loopback).
    private_networks: tuple[str, ...]
    roles_script: str
    bin_dir: str | None = None


def timeouts(spec: PhaseSpec) -> dict[str, int]:
    """ttl, loop_wait and retry_timeout under Patroni's rule loop_wait + 2 x retry_timeout
    <= ttl: a DCS or PostgreSQL hiccup shorter than retry_timeout never demotes the leader."""
    ttl = spec.postgres.leader_ttl_seconds
    retry = max(3, min(10, (ttl - LOOP_WAIT_SECONDS) // 2))
    return {"ttl": ttl, "loop_wait": LOOP_WAIT_SECONDS, "retry_timeout": retry}


def dynamic_configuration(spec: PhaseSpec) -> dict[str, object]:
    """The cluster-wide settings Patroni keeps in its DCS (and StackGres in dynamicConfig)."""
    pg = spec.postgres
    return {
        **timeouts(spec),
        "maximum_lag_on_failover": pg.maximum_lag_on_failover_mb * 1024 * 1024,
        "synchronous_mode": pg.synchronous_mode != "off",
        "synchronous_mode_strict": pg.synchronous_mode == "strict",
        "synchronous_node_count": 1,
    }


def _parameters(spec: PhaseSpec) -> dict[str, object]:
    # pg_rewind needs hint bits in the WAL (or data checksums, which initdb enables too).
    return {**postgres_parameters(spec), "wal_log_hints": "on"}


def render_patroni_yml(spec: PhaseSpec, layout: PatroniLayout) -> str:
    rules = hba_rules(spec, layout.private_networks, rewind_user=REWIND_USER)
    parameters = _parameters(spec)
    document: dict[str, object] = {
        "scope": layout.scope,
        "name": layout.name,
        "restapi": {
            "listen": str(layout.rest_listen),
            "connect_address": str(layout.rest_connect),
        },
        "etcd3": {"hosts": [str(host) for host in layout.etcd_hosts]},
        "bootstrap": {
            "dcs": dynamic_configuration(spec)
            | {
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": parameters,
                },
            },
            "initdb": [
                {"encoding": "UTF8"},
                {"locale": "C.UTF-8"},
                {"auth": "scram-sha-256"},
                "data-checksums",
            ],
            "pg_hba": rules,
            # Creates the application's role and database once the cluster is initialised.
            "post_bootstrap": layout.roles_script,
        },
        "postgresql": {
            "listen": str(layout.pg_listen),
            "connect_address": str(layout.pg_connect),
            "data_dir": layout.data_dir,
            **({"bin_dir": layout.bin_dir} if layout.bin_dir else {}),
            "pgpass": layout.pgpass,
            "use_unix_socket": True,
            "authentication": {
                "superuser": {"username": SUPERUSER},
                "replication": {"username": REPLICATION_USER},
                "rewind": {"username": REWIND_USER},
            },
            # Local values win over the DCS for all but the few that must match on every
            # member (max_connections, ...): a changed stack file reaches each member.
            "parameters": {**parameters, "unix_socket_directories": layout.socket_dir},
            "pg_hba": rules,
            # The leader re-applies the roles whenever it becomes the leader, so a rotated
            # password takes effect at the next start, switchover or failover.
            "callbacks": {"on_role_change": layout.roles_script, "on_start": layout.roles_script},
            "create_replica_methods": ["basebackup"],
            "basebackup": [{"checkpoint": "fast"}],
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
    }
    header = (
        f"# Generated by sikka-scaling for the {spec.phase.value} phase; do not edit by hand.\n"
        f"# Patroni member {layout.name} of {layout.scope}: passwords come from the environment.\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def roles_script(
    user: str, database: str, socket_dir: str, port: int, *, keep_slots: Sequence[str] = ()
) -> str:
    """Patroni runs it as ``post_bootstrap`` (one argument: a connection string) and as the
    ``on_start``/``on_role_change`` callback (action, role, scope): on the leader it applies
    the phase's roles (scaling.render.postgres_start) and creates the application's
    database, over the member's own socket as the superuser. On a replica it does nothing."""
    return f"""\
#!/bin/sh
# Generated by sikka-scaling; Patroni's post_bootstrap and on_start/on_role_change callback.
set -eu
if [ "$#" -ge 2 ]; then
  case "$2" in primary|master|promoted) ;; *) exit 0 ;; esac
fi
{SQL_LITERAL_SH}
startup_sql() {{
{startup_sql_sh(user, replication=True, keep_slots=keep_slots)}
}}
database_sql() {{
{database_sql_sh(user, database)}
}}
export PGPASSWORD="$POSTGRES_PASSWORD"
psql() {{
  command psql -v ON_ERROR_STOP=1 -q --no-psqlrc -h {socket_dir} -p {port} -U {SUPERUSER} "$@"
}}
# A callback may run while the server is still starting: wait for it to take writes.
tries=0
until [ "$(psql -d postgres -tAc 'SELECT NOT pg_is_in_recovery()' 2>/dev/null)" = t ]; do
  tries=$((tries + 1))
  [ "$tries" -lt 60 ] || {{ echo "roles: the server never became writable" >&2; exit 1; }}
  sleep 1
done
startup_sql | psql -d postgres
psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '{database}'" | grep -q 1 \\
  || psql -d postgres -c 'CREATE DATABASE "{database}" OWNER "{user}"'
database_sql | psql -d {database}
"""
