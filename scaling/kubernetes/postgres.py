"""PostgreSQL through the StackGres operator (1.18): the custom resources of a phase.

launch / growth: one ``SGCluster`` (a primary plus ``read_replicas`` streaming replicas, each
pod with StackGres's PgBouncer sidecar when the phase pools connections).
scale: one ``SGShardedCluster`` of type ``citus`` (a coordinator group and ``shards`` worker
groups, each ``instances_per_shard`` strong).

How many instances, in which groups and with how large a volume is the topology's
(:mod:`scaling.topology.postgres`): the ``postgres`` group is the SGCluster, the
``postgres-coord`` group and each shard group the SGShardedCluster's coordinator and
shards. The Services the operator creates carry the topology's Service names (the builder
refuses a topology Service the operator would not create).

Both reference an ``SGInstanceProfile`` (cpu/memory), an ``SGPostgresConfig`` and, with
pooling, an ``SGPoolingConfig`` with the phase's PgBouncer numbers. The application user is
created by an ``SGScript`` whose SQL lives in a Secret, so no password is ever written into a
custom resource.

StackGres runs Patroni, so failover works as on Docker and locally, from the same phase
values: the SGPostgresConfig carries the server parameters of
:func:`scaling.render.postgres.postgres_parameters` (less what StackGres keeps to itself), the
replication mode follows ``postgres.synchronousMode`` and ``configurations.patroni.dynamicConfig``
carries :func:`scaling.render.patroni.dynamic_configuration` (less what StackGres derives
itself), so ttl, loop_wait, retry_timeout and maximum_lag_on_failover are Patroni's there too.

Roles: the application role gets the same least privilege as on Docker and locally (LOGIN
only, owner of its database and that database's ``public`` schema, member of no role). The
superuser (``postgres``), the replication role's pg_hba and Patroni's ``authenticator`` are
StackGres's: it generates their passwords into the cluster's own Secret. So is PgBouncer's
console: ``admin_users``/``stats_users`` are in StackGres's SGPoolingConfig blocklist, and
StackGres sets them to its own ``pgbouncer_admin``/``pgbouncer_stats`` users (generated
passwords in that Secret too); the application role is no PgBouncer admin there either.

The operator itself is a prerequisite (``helm install stackgres-operator``). With
``kubernetes.installOperator`` the builder adds the operator's Namespace and
:func:`operator_release` describes the chart for the Pulumi layer to register as a
``k8s.helm.v3.Release`` - the only Helm use, since the operator is not this project's object.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scaling.exports import STACKGRES_DIRECT_PORT
from scaling.model import Phase, PhaseSpec
from scaling.promotion import following, token
from scaling.render.patroni import dynamic_configuration
from scaling.render.postgres import PG_PORT, REPLICATION_USER, postgres_parameters
from scaling.render.postgres_start import APP_ROLE_ATTRIBUTES, revoke_memberships_sql
from scaling.topology import Node, Topology
from scaling.topology.network import service_fqdn
from scaling.topology.postgres import COORDINATOR_GROUP, GROUP, READ_WRITE, shard_group

from .manifests import Manifest, labels, obj
from .pods import group_nodes, uniform
from .secrets import (
    POSTGRES_SECRET,
    REPLICATION_PASSWORD_KEY,
    placeholder,
    secret_manifest,
    secret_placeholders,
)

STACKGRES_API = "stackgres.io/v1"
STACKGRES_SHARDED_API = "stackgres.io/v1alpha1"
OPERATOR_NAMESPACE = "stackgres"
OPERATOR_CHART = "stackgres-operator"
OPERATOR_REPOSITORY = "https://stackgres.io/downloads/stackgres-k8s/stackgres/helm/"

# StackGres names the primary's Service after the cluster: the topology's read-write name.
CLUSTER_NAME = READ_WRITE
# The Services the operator creates for each kind, as suffixes of the cluster's name:
# SGCluster "<name>" (primary) and "<name>-replicas"; SGShardedCluster "<name>" (coordinator
# primary) and "<name>-reads" (any coordinator instance). (Its "-shards" Service, the shard
# primaries, is Citus's own business and no client's.)
OPERATOR_SERVICE_SUFFIXES = {"SGCluster": ("", "-replicas"), "SGShardedCluster": ("", "-reads")}
PROFILE_NAME = "postgres-profile"
POSTGRES_CONFIG_NAME = "postgres-config"
POOLING_CONFIG_NAME = "postgres-pooling"
SCRIPT_NAME = "postgres-app-user"
# StackGres services answer on 5432 through PgBouncer (when pooling) and 5433 directly.
SERVICE_PORT = PG_PORT

# Parameters StackGres manages itself and refuses in an SGPostgresConfig
# (operator/src/main/resources/postgresql-blocklist.properties) or in an SGPoolingConfig
# (pgbouncer-blocklist.properties). The builder never emits them; tests assert it.
POSTGRES_BLOCKLIST = frozenset(
    {
        "archive_command",
        "archive_mode",
        "dynamic_library_path",
        "lc_messages",
        "listen_addresses",
        "logging_collector",
        "log_destination",
        "log_directory",
        "log_filename",
        "log_rotation_age",
        "log_rotation_size",
        "log_truncate_on_rotation",
        "port",
        "wal_log_hints",
    }
)
# Replication plumbing StackGres sizes for its own features and keeps from its defaults:
# wal_level "logical" (Citus moves shards and SGStream captures changes over logical
# replication), 20 WAL senders and slots (those moves and streams take their own) and its
# wal_keep_size. The phase's smaller values would take those features away.
STACKGRES_MANAGED = frozenset(
    {"wal_level", "max_wal_senders", "max_replication_slots", "wal_keep_size"}
)
# Fields of Patroni's dynamic configuration StackGres ignores in dynamicConfig: it derives
# them from .replication, the SGPostgresConfig and .replicateFrom (CRD description).
PATRONI_IGNORED = frozenset(
    {"synchronous_mode", "synchronous_mode_strict", "postgresql", "standby_cluster"}
)
# postgres.synchronousMode → StackGres's replication mode (the same Patroni settings).
REPLICATION_MODES = {"off": "async", "on": "sync", "strict": "strict-sync"}
PGBOUNCER_BLOCKLIST = frozenset(
    {
        "admin_users",
        "application_name_add_host",
        "auth_file",
        "auth_hba_file",
        "auth_query",
        "auth_type",
        "auth_user",
        "listen_addr",
        "listen_port",
        "logfile",
        "pidfile",
        "server_check_query",
        "stats_users",
        "unix_socket_dir",
        "user",
    }
)

# Keys of the credentials Secret (the password keys are scaling.kubernetes.secrets').
APP_USERNAME_KEY = "username"
REPLICATION_USERNAME_KEY = "replication-username"
CREATE_USER_KEY = "create-app-user.sql"


def postgres_version(spec: PhaseSpec) -> str:
    """The Postgres version StackGres runs, from the phase's image tag ("17.6-bookworm" →
    "17.6"; scaling.rules requires one on Kubernetes). StackGres uses its own images; the tag
    keeps the same version on every platform."""
    version = spec.postgres.version
    if version is None:  # unreachable after validation
        raise ValueError(f"postgres.image {spec.postgres.image!r} names no version")
    return version


def major_version(spec: PhaseSpec) -> str:
    return postgres_version(spec).split(".")[0]


def is_sharded(spec: PhaseSpec) -> bool:
    return spec.postgres.mode == "citus"


def operator_services(kind: str, name: str) -> list[str]:
    """The Services StackGres creates for a cluster object ([] for other kinds)."""
    return [f"{name}{suffix}" for suffix in OPERATOR_SERVICE_SUFFIXES.get(kind, ())]


def check_services(topology: Topology, kind: str) -> None:
    """Every Postgres Service of the topology must be one the operator creates: clients
    are given those names and nothing else would define them."""
    created = set(operator_services(kind, CLUSTER_NAME))
    wanted = {s.name for s in topology.services if s.tier == "postgres"}
    if not wanted <= created:
        raise ValueError(
            f"{kind} {CLUSTER_NAME} creates the Services {sorted(created)}, the topology "
            f"also names {sorted(wanted - created)}"
        )


def pod_labels(spec: PhaseSpec) -> dict[str, str]:
    """Labels StackGres puts on every Postgres pod; the NetworkPolicies select them."""
    return labels(spec, CLUSTER_NAME, "postgres")


def instance_memory_mb(topology: Topology) -> int:
    """One SGInstanceProfile serves every instance: they share the topology's memory."""
    nodes = topology.tier("postgres")
    memory = uniform(nodes, "memory", lambda n: n.memory_mb)
    if memory is None:
        raise ValueError("the topology gives the Postgres instances no memory")
    return memory


def cpu_for(memory_mb: int) -> str:
    # One core per 2 GiB of memory: a balanced OLTP shape (1 GiB → 1, 4 → 2, 8 → 4).
    return str(max(1, memory_mb // 2048))


def postgresql_conf(spec: PhaseSpec) -> dict[str, str]:
    """The phase's server parameters, as every other PostgreSQL of the phase runs with them,
    less those StackGres refuses or sizes itself."""
    excluded = POSTGRES_BLOCKLIST | STACKGRES_MANAGED
    return {
        name: value for name, value in postgres_parameters(spec).items() if name not in excluded
    }


def patroni_dynamic_config(spec: PhaseSpec) -> dict[str, object]:
    """Patroni's cluster-wide settings as on Docker and locally; what StackGres ignores there
    is left out (the synchronous mode is :func:`replication`'s)."""
    return {
        key: value
        for key, value in dynamic_configuration(spec).items()
        if key not in PATRONI_IGNORED
    }


def replication(spec: PhaseSpec, instances: int) -> dict[str, Any]:
    """The replication mode of a group of ``instances``: synchronous modes keep as many
    synchronous standbys as Patroni's ``synchronous_node_count``, which StackGres requires to
    be below the group's instances."""
    mode = REPLICATION_MODES[spec.postgres.synchronous_mode]
    if mode == "async":
        return {"mode": mode}
    standbys = dynamic_configuration(spec)["synchronous_node_count"]
    if not isinstance(standbys, int) or instances <= standbys:
        raise ValueError(
            f"postgres.synchronousMode '{spec.postgres.synchronous_mode}' needs "
            f"{standbys} synchronous standby(s): a group of {instances} instance(s) has too few"
        )
    return {"mode": mode, "syncInstances": standbys}


def pgbouncer_ini(spec: PhaseSpec) -> dict[str, str]:
    pooler = spec.pooler
    return {
        "pool_mode": pooler.pool_mode,
        "max_client_conn": str(pooler.max_client_conn),
        "default_pool_size": str(pooler.default_pool_size),
        "reserve_pool_size": str(pooler.reserve_pool_size),
    }


def create_user_sql(spec: PhaseSpec) -> str:
    """Creates (or re-keys) the application role with least privilege (what an older
    deployment gave it is taken away); the password is a placeholder filled by
    :func:`scaling.kubernetes.secrets.fill_placeholders`, which quotes it for SQL."""
    user = spec.postgres.user
    return (
        "DO $$\nBEGIN\n"
        f"  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{user}') THEN\n"
        f"    CREATE ROLE {user};\n"
        "  END IF;\nEND\n$$;\n"
        f"ALTER ROLE {user} WITH {APP_ROLE_ATTRIBUTES} "
        f"PASSWORD '{placeholder('postgres-password')}';\n"
        f"{revoke_memberships_sql(user)}\n"
    )


def credentials_secret(spec: PhaseSpec) -> Manifest:
    return secret_manifest(
        spec,
        "postgres",
        POSTGRES_SECRET,
        {
            APP_USERNAME_KEY: spec.postgres.user,
            REPLICATION_USERNAME_KEY: REPLICATION_USER,
            **secret_placeholders(POSTGRES_SECRET),
            CREATE_USER_KEY: create_user_sql(spec),
        },
    )


def _credentials() -> dict[str, Any]:
    # The superuser and authenticator passwords are generated by StackGres and stay in the
    # cluster's own Secret; the replication user's comes from the phase's secret.
    return {
        "users": {
            "replication": {
                "username": {"name": POSTGRES_SECRET, "key": REPLICATION_USERNAME_KEY},
                "password": {"name": POSTGRES_SECRET, "key": REPLICATION_PASSWORD_KEY},
            }
        }
    }


def _sg(
    phase: PhaseSpec,
    kind: str,
    name: str,
    body: dict[str, Any],
    *,
    api_version: str = STACKGRES_API,
    holds_data: bool = False,
) -> Manifest:
    return obj(
        "postgres",
        api_version,
        kind,
        name,
        phase.namespace,
        labels(phase, name, "postgres"),
        holds_data=holds_data,
        spec=body,
    )


def instance_profile(topology: Topology) -> Manifest:
    memory = instance_memory_mb(topology)
    return _sg(
        topology.spec,
        "SGInstanceProfile",
        PROFILE_NAME,
        {"cpu": cpu_for(memory), "memory": f"{memory}Mi"},
    )


def postgres_config(spec: PhaseSpec) -> Manifest:
    return _sg(
        spec,
        "SGPostgresConfig",
        POSTGRES_CONFIG_NAME,
        {"postgresVersion": major_version(spec), "postgresql.conf": postgresql_conf(spec)},
    )


def pooling_config(spec: PhaseSpec) -> Manifest:
    return _sg(
        spec,
        "SGPoolingConfig",
        POOLING_CONFIG_NAME,
        {"pgBouncer": {"pgbouncer.ini": {"pgbouncer": pgbouncer_ini(spec)}}},
    )


def app_script(spec: PhaseSpec) -> Manifest:
    pg = spec.postgres
    scripts: list[dict[str, Any]] = [
        {
            "name": "create-app-user",
            "scriptFrom": {"secretKeyRef": {"name": POSTGRES_SECRET, "key": CREATE_USER_KEY}},
        }
    ]
    if not is_sharded(spec) and spec.promotion is None and not spec.data_from_source:
        # SGShardedCluster creates spec.database itself (with Citus); an SGCluster does not.
        # CREATE DATABASE cannot run in a transaction: the script runs on its own. A
        # transition's target (sikka:promoteFrom) has it from its source, with the data.
        scripts.append(
            {
                "name": "create-app-database",
                "script": f"CREATE DATABASE {pg.database} OWNER {pg.user};\n",
            }
        )
    # The application role owns its database and its public schema (on a sharded cluster
    # StackGres created the database as the superuser's).
    scripts.append(
        {
            "name": "grant-app-user",
            "database": pg.database,
            "script": (
                f"ALTER DATABASE {pg.database} OWNER TO {pg.user};\n"
                f"ALTER SCHEMA public OWNER TO {pg.user};\n"
            ),
        }
    )
    return _sg(spec, "SGScript", SCRIPT_NAME, {"continueOnError": False, "scripts": scripts})


def volume_size_gb(nodes: Sequence[Node]) -> int:
    """The instances of one StackGres group share one volume size: the topology's."""
    sizes = uniform(nodes, "volumes", lambda n: tuple(v.size_gb for v in n.volumes))
    if len(sizes) != 1:
        raise ValueError(f"{nodes[0].group}: StackGres gives an instance one volume")
    return sizes[0]


def _persistent_volume(spec: PhaseSpec, size_gb: int) -> dict[str, Any]:
    volume: dict[str, Any] = {"size": f"{size_gb}Gi"}
    if spec.kubernetes.storage_class:
        volume["storageClass"] = spec.kubernetes.storage_class
    return volume


def _pods(spec: PhaseSpec, nodes: Sequence[Node], *, pooling: bool) -> dict[str, Any]:
    return {
        "persistentVolume": _persistent_volume(spec, volume_size_gb(nodes)),
        "disableConnectionPooling": not pooling,
    }


def _metadata(spec: PhaseSpec) -> dict[str, Any]:
    return {"labels": {"clusterPods": pod_labels(spec)}}


def _configurations(spec: PhaseSpec, *, pooling: bool) -> dict[str, Any]:
    configurations: dict[str, Any] = {"sgPostgresConfig": POSTGRES_CONFIG_NAME}
    if pooling:
        configurations["sgPoolingConfig"] = POOLING_CONFIG_NAME
    # dynamicConfig may change on a running cluster (initialConfig is creation-only).
    configurations["patroni"] = {"dynamicConfig": patroni_dynamic_config(spec)}
    return configurations


# A transition's target (sikka:promoteFrom): the source cluster's users, copied by the Pulumi
# layer from the source cluster's own Secret (StackGres names it after the cluster and
# generates these keys) into this namespace, as replicateFrom.users references them.
SOURCE_USERS_SECRET = "postgres-source-users"
SOURCE_USERS_OF = "postgres"  # the source's cluster name, hence its Secret's
SOURCE_USER_ROLES = ("superuser", "replication", "authenticator")


def source_users() -> dict[str, Any]:
    return {
        role: {
            "username": {"name": SOURCE_USERS_SECRET, "key": f"{role}-username"},
            "password": {"name": SOURCE_USERS_SECRET, "key": f"{role}-password"},
        }
        for role in SOURCE_USER_ROLES
    }


def follows_logically(spec: PhaseSpec) -> bool:
    """Whether the phase moves its source's rows by logical replication
    (:mod:`scaling.kubernetes.logical`): a Citus target whose source is a launch or growth
    stack. A sharded source is followed by ``replicateFrom``, group by group."""
    promotion = spec.promotion
    return (
        promotion is not None
        and is_sharded(spec)
        and promotion.source_phase is not None
        and promotion.source_phase != Phase.SCALE
    )


def replicate_from(spec: PhaseSpec) -> dict[str, Any] | None:
    """``spec.replicateFrom`` while the phase follows its transition's source (None before a
    transition and once ``sikka:promoteCutover`` promotes it: removing the field makes the
    standby leader a primary). The source is another stack, so another namespace (the
    clusters of two stacks share the name ``postgres``, so never one namespace): StackGres's
    ``external`` form, with the source's address from its stack outputs and its users'
    credentials from :data:`SOURCE_USERS_SECRET`. A sharded cluster follows a sharded source
    group by group: its coordinator's and each shard's primary Service, one to one."""
    if not following(spec.promotion) or follows_logically(spec):
        return None
    if is_sharded(spec):
        namespace = token("kubernetes", "namespace")
        hosts = [token("postgres", "host")] + [
            service_fqdn(shard_group(i), namespace) for i in range(spec.postgres.shards)
        ]
        external: dict[str, Any] = {
            "hosts": hosts,
            "ports": [STACKGRES_DIRECT_PORT] * len(hosts),
        }
    else:
        external = {"host": token("postgres", "host"), "port": STACKGRES_DIRECT_PORT}
    return {"instance": {"external": external}, "users": source_users()}


# StackGres's exporter runs in every instance; its collector reads them and, with autobind,
# creates the PodMonitors the cluster's Prometheus Operator scrapes (scaling.kubernetes.
# monitoring). Changing it touches no data (the field is read by the operator alone).
OBSERVABILITY = {"prometheusAutobind": True}


def sg_cluster(topology: Topology) -> Manifest:
    """The ``postgres`` group: a primary and its streaming replicas, Patroni electing."""
    spec = topology.spec
    nodes = group_nodes(topology, GROUP)
    pooling = spec.pooler.enabled
    check_services(topology, "SGCluster")
    return _sg(
        spec,
        "SGCluster",
        CLUSTER_NAME,
        {
            "instances": len(nodes),
            "postgres": {"version": postgres_version(spec)},
            "replication": replication(spec, len(nodes)),
            "sgInstanceProfile": PROFILE_NAME,
            "metadata": _metadata(spec),
            "configurations": {
                **_configurations(spec, pooling=pooling),
                "credentials": _credentials(),
                "observability": dict(OBSERVABILITY),
            },
            "pods": _pods(spec, nodes, pooling=pooling),
            "managedSql": {"scripts": [{"sgScript": SCRIPT_NAME}]},
            **_replication_source(spec),
        },
        holds_data=True,
    )


def _replication_source(spec: PhaseSpec) -> dict[str, Any]:
    source = replicate_from(spec)
    return {"replicateFrom": source} if source is not None else {}


def shard_groups(topology: Topology) -> list[list[Node]]:
    """The Citus worker groups, in the topology's order (one SGShardedCluster shard each)."""
    groups: dict[str, list[Node]] = {}
    for node in topology.with_role("shard"):
        groups.setdefault(node.group, []).append(node)
    if not groups:
        raise ValueError("a Citus topology without shard groups")
    return list(groups.values())


def sg_sharded_cluster(topology: Topology) -> Manifest:
    """The ``postgres-coord`` group as the coordinator and every shard group as one shard
    cluster; StackGres sizes all shard clusters alike, so the topology's must agree."""
    spec = topology.spec
    pg = spec.postgres
    pooling = spec.pooler.enabled
    coordinator = group_nodes(topology, COORDINATOR_GROUP)
    shards = shard_groups(topology)
    shard_nodes = [node for group in shards for node in group]
    check_services(topology, "SGShardedCluster")
    sizes = {len(group) for group in shards}
    if len(sizes) != 1:
        raise ValueError(f"shard groups of {sorted(sizes)} instances: StackGres sizes all alike")
    per_shard = sizes.pop()
    return _sg(
        spec,
        "SGShardedCluster",
        CLUSTER_NAME,
        {
            "type": "citus",
            "database": pg.database,
            "postgres": {"version": postgres_version(spec)},
            # Every group also says its own mode: StackGres gives a coordinator without one
            # "sync-all" (every replica synchronous) instead of this cluster-wide mode.
            "replication": replication(spec, min(len(coordinator), per_shard)),
            "metadata": _metadata(spec),
            "configurations": {
                "credentials": _credentials(),
                "observability": dict(OBSERVABILITY),
            },
            "coordinator": {
                "instances": len(coordinator),
                "replication": replication(spec, len(coordinator)),
                "sgInstanceProfile": PROFILE_NAME,
                # Clients reach Citus through the coordinator only: it alone gets the phase's
                # PgBouncer numbers; workers keep StackGres's default pooling.
                "configurations": _configurations(spec, pooling=pooling),
                "managedSql": {"scripts": [{"sgScript": SCRIPT_NAME}]},
                "pods": _pods(spec, coordinator, pooling=pooling),
            },
            "shards": {
                "clusters": len(shards),
                "instancesPerCluster": per_shard,
                "replication": replication(spec, per_shard),
                "sgInstanceProfile": PROFILE_NAME,
                "configurations": _configurations(spec, pooling=False),
                "pods": _pods(spec, shard_nodes, pooling=True),
            },
            **_replication_source(spec),
        },
        api_version=STACKGRES_SHARDED_API,
        holds_data=True,
    )


def postgres_manifests(topology: Topology) -> list[Manifest]:
    """Secret and configuration objects first: the cluster references them by name."""
    spec = topology.spec
    manifests = [credentials_secret(spec), instance_profile(topology), postgres_config(spec)]
    if spec.pooler.enabled:
        manifests.append(pooling_config(spec))
    manifests.append(app_script(spec))
    sharded = topology.with_role("coordinator", "shard")
    manifests.append(sg_sharded_cluster(topology) if sharded else sg_cluster(topology))
    return manifests


def operator_manifests(spec: PhaseSpec) -> list[Manifest]:
    if not spec.kubernetes.install_operator:
        return []
    return [
        obj(
            "operator",
            "v1",
            "Namespace",
            OPERATOR_NAMESPACE,
            None,
            labels(spec, OPERATOR_NAMESPACE, "operator"),
        )
    ]


def operator_release(spec: PhaseSpec) -> dict[str, Any] | None:
    """The StackGres operator chart, for a ``k8s.helm.v3.Release`` (None unless
    ``kubernetes.installOperator``). Install it before the custom resources: they need its
    CRDs and admission webhooks."""
    if not spec.kubernetes.install_operator:
        return None
    return {
        "name": OPERATOR_CHART,
        "chart": OPERATOR_CHART,
        "repository": OPERATOR_REPOSITORY,
        "version": spec.kubernetes.operator_version,
        "namespace": OPERATOR_NAMESPACE,
        "create_namespace": False,  # the builder emits the Namespace (tier "operator")
        "values": {},
    }
