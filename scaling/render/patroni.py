"""patroni.yml: one member of the phase's Patroni cluster, and its role script.

Patroni manages PostgreSQL wherever the phase has replicas and runs outside Kubernetes
(Docker, the local runner); StackGres runs Patroni on Kubernetes from the same phase values
(scaling.kubernetes.postgres). Every member gets the same settings; only its layout (its
name, where it listens, its folders, the DCS) differs.

No password is written here. Patroni reads them from its environment
(``PATRONI_SUPERUSER_PASSWORD``, ``PATRONI_REPLICATION_PASSWORD``,
``PATRONI_REWIND_PASSWORD``, ``PATRONI_RESTAPI_USERNAME``/``PATRONI_RESTAPI_PASSWORD``) and
removes each of those variables from its environment once read, so the scripts it runs
never see them: the role script reads the passwords it applies from variables of its own
(:data:`ROLES_SECRET_VARIABLES`), which the member's environment carries besides.

Durability (``postgres.synchronousMode``): "on" and "strict" make Patroni keep one
synchronous standby and promote only it, so a commit the leader acknowledged is on the new
leader too; "off" replicates asynchronously and never promotes a replica lagging more than
``postgres.maximumLagOnFailoverMb``.

Standby cluster (a phase transition, scaling.transition): with a :class:`StandbySource`,
``bootstrap.dcs.standby_cluster`` makes the new cluster a replica of a running one: its
first member clones the source by ``pg_basebackup`` and streams from it as the *standby
leader*, the others replicate the standby leader; nothing is writable until the
``standby_cluster`` key is removed from the cluster's configuration (``PATCH /config
{"standby_cluster": null}``), which promotes the standby leader. StackGres's
``spec.replicateFrom`` renders the same Patroni setting.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from scaling.model import REPLICATION_USER, REWIND_USER, SUPERUSER, PhaseSpec
from scaling.render.endpoints import Endpoint
from scaling.render.postgres import hba_rules, postgres_parameters
from scaling.render.postgres_start import (
    APP_VERIFIER_ENV,
    REPLICATION_PASSWORD_ENV,
    REWIND_PASSWORD_ENV,
    SUPERUSER_PASSWORD_ENV,
    sql_functions_sh,
)

REST_PORT = 8008
RESTAPI_PASSWORD_ENV = "RESTAPI_PASSWORD"
# Secret name → the variable Patroni reads it from.
PATRONI_SECRET_VARIABLES = {
    "PATRONI_SUPERUSER_PASSWORD": "postgres-superuser-password",
    "PATRONI_REPLICATION_PASSWORD": "replication-password",
    "PATRONI_REWIND_PASSWORD": "postgres-rewind-password",
    "PATRONI_RESTAPI_PASSWORD": "patroni-api-password",
}
# Variable → secret name: what the role script applies (the superuser's and the replication
# role's passwords too, under names Patroni leaves alone, see the module's docstring).
ROLES_SECRET_VARIABLES = {
    SUPERUSER_PASSWORD_ENV: "postgres-superuser-password",
    REPLICATION_PASSWORD_ENV: "replication-password",
    APP_VERIFIER_ENV: "postgres-password-scram",
    REWIND_PASSWORD_ENV: "postgres-rewind-password",
    RESTAPI_PASSWORD_ENV: "patroni-api-password",
}
# Who may call the REST API's changing endpoints (switchover, restart, reinitialize);
# reading the state (/primary, /replica, /health, /cluster) needs no password.
REST_API_USER = "patroni"
LOOP_WAIT_SECONDS = 2
# pg_ident map: the system account that runs Patroni is the superuser on the socket.
IDENT_MAP = "patroni"
# libyaml's emitter when PyYAML has it: the same text as the pure-Python one (a unit test
# compares them) in a fifteenth of the time, which the program pays once per member.
YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


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
    # The system account Patroni and PostgreSQL run as (peer authentication on the socket).
    system_user: str = "postgres"
    # The monitoring role's login (exporters read the members), or None where none runs.
    monitoring_user: str | None = None
    # Where the superuser may log in from besides the socket and loopback (a transition's
    # source: its target's cut-over guard, through the routers).
    superuser_networks: tuple[str, ...] = ()


@dataclass(frozen=True)
class StandbySource:
    """The running cluster a new cluster starts as a standby of: its read-write door (a
    plain primary, or routers that follow its leader), reached as the replication role."""

    host: str
    port: int

    def standby_cluster(self) -> dict[str, object]:
        return {
            "host": self.host,
            "port": self.port,
            "create_replica_methods": ["basebackup"],
        }


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
        # While the DCS is unreachable (etcd lost its quorum, all its members replaced at
        # once), the leader keeps its role as long as every member still answers it over
        # the REST API, instead of demoting itself and stopping every write.
        "failsafe_mode": True,
    }


def cluster_configuration(spec: PhaseSpec) -> dict[str, object]:
    """What the DCS holds for the cluster: ``bootstrap.dcs`` when Patroni creates it, and
    what the role script sets again on every leader (``PATCH /config``), since Patroni reads
    ``bootstrap.dcs`` only once: a changed stack file reaches a running cluster too."""
    return dynamic_configuration(spec) | {
        "postgresql": {
            "use_pg_rewind": True,
            "use_slots": True,
            "parameters": _parameters(spec),
        },
    }


def _parameters(spec: PhaseSpec) -> dict[str, object]:
    # pg_rewind needs hint bits in the WAL (or data checksums, which initdb enables too).
    return {**postgres_parameters(spec), "wal_log_hints": "on"}


def render_patroni_yml(
    spec: PhaseSpec, layout: PatroniLayout, standby: StandbySource | None = None
) -> str:
    """One member's patroni.yml; with ``standby`` the cluster bootstraps as a standby
    cluster of that source instead of running initdb (see the module's docstring)."""
    rules = hba_rules(
        spec,
        layout.private_networks,
        rewind_user=REWIND_USER,
        superuser_socket=f"peer map={IDENT_MAP}",
        monitoring_user=layout.monitoring_user,
        superuser_networks=layout.superuser_networks,
    )
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
            "dcs": cluster_configuration(spec)
            | ({"standby_cluster": standby.standby_cluster()} if standby else {}),
            "initdb": [
                {"encoding": "UTF8"},
                {"locale": "C.UTF-8"},
                {"auth": "scram-sha-256"},
                "data-checksums",
            ],
            "pg_hba": list(rules),  # a copy: the file then has no YAML alias
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
            "pg_ident": [f"{IDENT_MAP} {layout.system_user} {SUPERUSER}"],
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
    return header + yaml.dump(
        document, Dumper=YAML_DUMPER, sort_keys=False, default_flow_style=False
    )


def roles_script(
    spec: PhaseSpec,
    socket_dir: str,
    port: int,
    api: str,
    *,
    keep_slots: Sequence[str] = (),
    monitoring: bool = False,
) -> str:
    """Patroni runs it as ``post_bootstrap`` (one argument: a connection string) and as the
    ``on_start``/``on_role_change`` callback (action, role, scope): on the leader it applies
    the phase's roles (scaling.render.postgres_start) and creates the application's
    database, over the member's own socket as the superuser, then sets the phase's cluster
    configuration through the member's REST API at ``api``. On a replica it does nothing."""
    user, database = spec.postgres.user, spec.postgres.database
    document = json.dumps(cluster_configuration(spec), separators=(",", ":"), sort_keys=True)
    if "'" in document:  # it goes between single quotes
        raise ValueError("the cluster configuration would break the role script's quoting")
    functions = sql_functions_sh(
        user, database, replication=True, keep_slots=keep_slots, rewind=True, monitoring=monitoring
    )
    return f"""\
#!/bin/sh
# Generated by sikka-scaling; Patroni's post_bootstrap and on_start/on_role_change callback.
set -eu
if [ "$#" -ge 2 ]; then
  case "$2" in primary|master|promoted) ;; *) exit 0 ;; esac
fi
{functions}
export PGPASSWORD="${SUPERUSER_PASSWORD_ENV}"
# Role changes commit locally: "strict" synchronous mode would block them while no standby
# runs, and every leader applies them again when it takes over.
export PGOPTIONS="-c synchronous_commit=local"
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
rewind_sql | psql -d postgres
psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '{database}'" | grep -q 1 \\
  || psql -d postgres -c 'CREATE DATABASE "{database}" OWNER "{user}"'
database_sql | psql -d {database}
# Patroni reads bootstrap.dcs once, when it creates the cluster (right after this script's
# post_bootstrap run): as a callback, the leader sets the stack's values again (the password
# goes to curl on stdin, never on its command line).
[ "$#" -ge 2 ] || exit 0
printf 'user = "%s:%s"\\n' {REST_API_USER} \\
  "$(printf '%s' "${RESTAPI_PASSWORD_ENV}" | sed 's/[\\\\"]/\\\\&/g')" \\
  | curl -fsS -o /dev/null -K - -X PATCH -H 'Content-Type: application/json' \\
    --data '{document}' {api}/config \\
  || echo "roles: the cluster configuration was not applied" >&2
"""
