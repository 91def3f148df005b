"""PostgreSQL through the StackGres operator (1.18): the custom resources of a phase.

launch / growth: one ``SGCluster`` (a primary plus ``read_replicas`` streaming replicas, each
pod with StackGres's PgBouncer sidecar when the phase pools connections).
scale: one ``SGShardedCluster`` of type ``citus`` (a coordinator group and ``shards`` worker
groups, each ``instances_per_shard`` strong).

Both reference an ``SGInstanceProfile`` (cpu/memory), an ``SGPostgresConfig`` sized from the
phase and, with pooling, an ``SGPoolingConfig`` with the phase's PgBouncer numbers. The
application user is created by an ``SGScript`` whose SQL lives in a Secret, so no password is
ever written into a custom resource.

The operator itself is a prerequisite (``helm install stackgres-operator``). With
``kubernetes.installOperator`` the builder adds the operator's Namespace and
:func:`operator_release` describes the chart for the Pulumi layer to register as a
``k8s.helm.v3.Release`` - the only Helm use, since the operator is not this project's object.
"""

from __future__ import annotations

import math
from typing import Any

from scaling.model import PhaseSpec
from scaling.render.postgres import PG_PORT, REPLICATION_USER, memory_settings

from .manifests import Manifest, labels, obj, service_fqdn
from .secrets import POSTGRES_SECRET, placeholder, secret_manifest

STACKGRES_API = "stackgres.io/v1"
STACKGRES_SHARDED_API = "stackgres.io/v1alpha1"
OPERATOR_NAMESPACE = "stackgres"
OPERATOR_CHART = "stackgres-operator"
OPERATOR_REPOSITORY = "https://stackgres.io/downloads/stackgres-k8s/stackgres/helm/"

CLUSTER_NAME = "postgres"
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

# Keys of the credentials Secret.
APP_USERNAME_KEY = "username"
APP_PASSWORD_KEY = "password"
REPLICATION_USERNAME_KEY = "replication-username"
REPLICATION_PASSWORD_KEY = "replication-password"
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


def primary_host(spec: PhaseSpec) -> str:
    """The read-write entry point: the primary's (or Citus coordinator primary's) service."""
    return service_fqdn(CLUSTER_NAME, spec.kubernetes.namespace)


def read_host(spec: PhaseSpec) -> str | None:
    """The replicas' service, when the phase has read replicas (not with Citus)."""
    if is_sharded(spec) or spec.postgres.read_replicas == 0:
        return None
    return service_fqdn(f"{CLUSTER_NAME}-replicas", spec.kubernetes.namespace)


def pod_labels(spec: PhaseSpec) -> dict[str, str]:
    """Labels StackGres puts on every Postgres pod; the NetworkPolicies select them."""
    return labels(spec, CLUSTER_NAME, "postgres")


def cpu_for(spec: PhaseSpec) -> str:
    # One core per 2 GiB of memory: a balanced OLTP shape (1 GiB → 1, 4 → 2, 8 → 4).
    return str(max(1, spec.postgres.memory_mb // 2048))


def postgresql_conf(spec: PhaseSpec) -> dict[str, str]:
    pg = spec.postgres
    mem = memory_settings(spec)
    return {
        "max_connections": str(pg.max_connections),
        "superuser_reserved_connections": str(pg.superuser_reserved_connections),
        "shared_buffers": f"{mem.shared_buffers_mb}MB",
        "effective_cache_size": f"{mem.effective_cache_size_mb}MB",
        "work_mem": f"{mem.work_mem_kb}kB",
        "maintenance_work_mem": f"{mem.maintenance_work_mem_mb}MB",
        "password_encryption": "scram-sha-256",
        "log_min_duration_statement": "500ms",
    }


def pgbouncer_ini(spec: PhaseSpec) -> dict[str, str]:
    pooler = spec.pooler
    return {
        "pool_mode": pooler.pool_mode,
        "max_client_conn": str(pooler.max_client_conn),
        "default_pool_size": str(pooler.default_pool_size),
        "reserve_pool_size": str(pooler.reserve_pool_size),
    }


def create_user_sql(spec: PhaseSpec) -> str:
    """Creates (or re-keys) the application role; the password is a placeholder filled by
    :func:`scaling.kubernetes.secrets.fill_placeholders`, which quotes it for SQL."""
    user = spec.postgres.user
    return (
        "DO $$\nBEGIN\n"
        f"  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{user}') THEN\n"
        f"    CREATE ROLE {user} LOGIN;\n"
        "  END IF;\nEND\n$$;\n"
        f"ALTER ROLE {user} WITH LOGIN PASSWORD '{placeholder('postgres-password')}';\n"
    )


def credentials_secret(spec: PhaseSpec) -> Manifest:
    return secret_manifest(
        spec,
        "postgres",
        POSTGRES_SECRET,
        {
            APP_USERNAME_KEY: spec.postgres.user,
            APP_PASSWORD_KEY: placeholder("postgres-password"),
            REPLICATION_USERNAME_KEY: REPLICATION_USER,
            REPLICATION_PASSWORD_KEY: placeholder("replication-password"),
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


def _sg(phase: PhaseSpec, kind: str, name: str, body: dict[str, Any]) -> Manifest:
    return obj(
        "postgres",
        STACKGRES_API,
        kind,
        name,
        phase.kubernetes.namespace,
        labels(phase, name, "postgres"),
        spec=body,
    )


def instance_profile(spec: PhaseSpec) -> Manifest:
    return _sg(
        spec,
        "SGInstanceProfile",
        PROFILE_NAME,
        {"cpu": cpu_for(spec), "memory": f"{spec.postgres.memory_mb}Mi"},
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
    if not is_sharded(spec):
        # SGShardedCluster creates spec.database itself (with Citus); an SGCluster does not.
        # CREATE DATABASE cannot run in a transaction: the script runs on its own.
        scripts.append(
            {
                "name": "create-app-database",
                "script": f"CREATE DATABASE {pg.database} OWNER {pg.user};\n",
            }
        )
    scripts.append(
        {
            "name": "grant-app-user",
            "database": pg.database,
            "script": (
                f"GRANT ALL PRIVILEGES ON DATABASE {pg.database} TO {pg.user};\n"
                f"GRANT ALL ON SCHEMA public TO {pg.user};\n"
            ),
        }
    )
    return _sg(spec, "SGScript", SCRIPT_NAME, {"continueOnError": False, "scripts": scripts})


def _persistent_volume(spec: PhaseSpec, size_gb: int) -> dict[str, Any]:
    volume: dict[str, Any] = {"size": f"{size_gb}Gi"}
    if spec.kubernetes.storage_class:
        volume["storageClass"] = spec.kubernetes.storage_class
    return volume


def _pods(spec: PhaseSpec, size_gb: int, *, pooling: bool) -> dict[str, Any]:
    return {
        "persistentVolume": _persistent_volume(spec, size_gb),
        "disableConnectionPooling": not pooling,
    }


def _metadata(spec: PhaseSpec) -> dict[str, Any]:
    return {"labels": {"clusterPods": pod_labels(spec)}}


def _configurations(spec: PhaseSpec, *, pooling: bool) -> dict[str, Any]:
    configurations = {"sgPostgresConfig": POSTGRES_CONFIG_NAME}
    if pooling:
        configurations["sgPoolingConfig"] = POOLING_CONFIG_NAME
    return configurations


def sg_cluster(spec: PhaseSpec) -> Manifest:
    pg = spec.postgres
    pooling = spec.pooler.enabled
    return _sg(
        spec,
        "SGCluster",
        CLUSTER_NAME,
        {
            "instances": 1 + pg.read_replicas,
            "postgres": {"version": postgres_version(spec)},
            "sgInstanceProfile": PROFILE_NAME,
            "metadata": _metadata(spec),
            "configurations": {
                **_configurations(spec, pooling=pooling),
                "credentials": _credentials(),
            },
            "pods": _pods(spec, pg.storage_gb, pooling=pooling),
            "managedSql": {"scripts": [{"sgScript": SCRIPT_NAME}]},
        },
    )


def shard_storage_gb(spec: PhaseSpec) -> int:
    """Each worker group holds its share of the phase's data; the coordinator (metadata and
    reference tables) gets a share's worth too."""
    return max(1, math.ceil(spec.postgres.storage_gb / spec.postgres.shards))


def sg_sharded_cluster(spec: PhaseSpec) -> Manifest:
    pg = spec.postgres
    pooling = spec.pooler.enabled
    size = shard_storage_gb(spec)
    return obj(
        "postgres",
        STACKGRES_SHARDED_API,
        "SGShardedCluster",
        CLUSTER_NAME,
        spec.kubernetes.namespace,
        labels(spec, CLUSTER_NAME, "postgres"),
        spec={
            "type": "citus",
            "database": pg.database,
            "postgres": {"version": postgres_version(spec)},
            "metadata": _metadata(spec),
            "configurations": {"credentials": _credentials()},
            "coordinator": {
                "instances": pg.coordinator_instances,
                "sgInstanceProfile": PROFILE_NAME,
                # Clients reach Citus through the coordinator only: it alone gets the phase's
                # PgBouncer numbers; workers keep StackGres's default pooling.
                "configurations": _configurations(spec, pooling=pooling),
                "managedSql": {"scripts": [{"sgScript": SCRIPT_NAME}]},
                "pods": _pods(spec, size, pooling=pooling),
            },
            "shards": {
                "clusters": pg.shards,
                "instancesPerCluster": pg.instances_per_shard,
                "sgInstanceProfile": PROFILE_NAME,
                "configurations": {"sgPostgresConfig": POSTGRES_CONFIG_NAME},
                "pods": _pods(spec, size, pooling=True),
            },
        },
    )


def postgres_manifests(spec: PhaseSpec) -> list[Manifest]:
    """Secret and configuration objects first: the cluster references them by name."""
    manifests = [credentials_secret(spec), instance_profile(spec), postgres_config(spec)]
    if spec.pooler.enabled:
        manifests.append(pooling_config(spec))
    manifests.append(app_script(spec))
    manifests.append(sg_sharded_cluster(spec) if is_sharded(spec) else sg_cluster(spec))
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
