"""StackGres objects: Citus topology at scale, a replicated SGCluster below, sizing from the
phase, credentials through Secret references only."""

from __future__ import annotations

from typing import Any

import pytest
from k8s_support import SPECS, find, of_kind, on_kubernetes

from scaling.kubernetes import Manifest, build_manifests, operator_release
from scaling.kubernetes.postgres import (
    PATRONI_IGNORED,
    PGBOUNCER_BLOCKLIST,
    POSTGRES_BLOCKLIST,
    STACKGRES_MANAGED,
    postgres_version,
    replication,
)
from scaling.kubernetes.secrets import POSTGRES_SECRET
from scaling.model import PhaseSpec
from scaling.render.patroni import dynamic_configuration, timeouts
from scaling.render.postgres import postgres_parameters

SYNCHRONOUS_MODES = ("off", "on", "strict")


def with_postgres(phase: str, **postgres: Any) -> PhaseSpec:
    return on_kubernetes(phase, **{"sikka:postgres": postgres})


def cluster_of(manifests: list[Manifest]) -> Manifest:
    return next(m for m in manifests if m.kind in ("SGCluster", "SGShardedCluster"))


def patroni_groups(cluster: Manifest) -> list[dict[str, Any]]:
    """The parts of a cluster object that each stand for one Patroni cluster (or several
    alike): the SGCluster itself, or the coordinator and the shards."""
    body = cluster.body["spec"]
    if cluster.kind == "SGCluster":
        return [body]
    return [body["coordinator"], body["shards"]]


def test_scale_is_a_citus_sharded_cluster_with_the_phase_topology() -> None:
    spec = SPECS["scale"]()
    manifests = build_manifests(spec)
    assert of_kind(manifests, "SGCluster") == []
    sharded = find(manifests, "SGShardedCluster", "postgres")
    assert sharded.api_version == "stackgres.io/v1alpha1"
    body = sharded.body["spec"]
    assert body["type"] == "citus"
    assert body["database"] == spec.postgres.database == "sikka"
    assert body["coordinator"]["instances"] == spec.postgres.coordinator_instances == 2
    assert body["shards"]["clusters"] == spec.postgres.shards == 4
    assert body["shards"]["instancesPerCluster"] == spec.postgres.instances_per_shard
    assert body["shards"]["instancesPerCluster"] >= 2
    # Both groups use the phase's postgres config; only the coordinator pools clients.
    coordinator, shards = body["coordinator"]["configurations"], body["shards"]["configurations"]
    assert coordinator["sgPostgresConfig"] == shards["sgPostgresConfig"] == "postgres-config"
    assert coordinator["sgPoolingConfig"] == "postgres-pooling"
    assert "sgPoolingConfig" not in shards
    assert body["coordinator"]["managedSql"]["scripts"] == [{"sgScript": "postgres-app-user"}]
    assert body["shards"]["pods"]["persistentVolume"]["size"] == "50Gi"  # 200 GB over 4 shards


def test_scale_allows_at_least_200_connections() -> None:
    config = find(build_manifests(SPECS["scale"]()), "SGPostgresConfig", "postgres-config")
    assert int(config.body["spec"]["postgresql.conf"]["max_connections"]) >= 200


def test_citus_topology_follows_the_spec() -> None:
    spec = SPECS["scale"]()
    spec = spec.model_copy(
        update={
            "postgres": spec.postgres.model_copy(update={"shards": 6, "instances_per_shard": 3})
        }
    )
    body = find(build_manifests(spec), "SGShardedCluster", "postgres").body["spec"]
    assert (body["shards"]["clusters"], body["shards"]["instancesPerCluster"]) == (6, 3)


def test_growth_is_a_primary_with_its_read_replicas() -> None:
    spec = SPECS["growth"]()
    manifests = build_manifests(spec)
    cluster = find(manifests, "SGCluster", "postgres").body["spec"]
    assert cluster["instances"] == 1 + spec.postgres.read_replicas == 3
    assert cluster["pods"]["disableConnectionPooling"] is False
    assert cluster["configurations"]["sgPoolingConfig"] == "postgres-pooling"
    assert cluster["postgres"]["version"] == "17.6"
    assert of_kind(manifests, "SGShardedCluster") == []


def test_launch_is_a_single_instance_without_pooling() -> None:
    manifests = build_manifests(SPECS["launch"]())
    cluster = find(manifests, "SGCluster", "postgres").body["spec"]
    assert cluster["instances"] == 1
    assert cluster["pods"]["disableConnectionPooling"] is True
    assert "sgPoolingConfig" not in cluster["configurations"]
    assert of_kind(manifests, "SGPoolingConfig") == []


def test_postgres_config_is_sized_from_the_phase_memory() -> None:
    spec = SPECS["growth"]()
    config = find(build_manifests(spec), "SGPostgresConfig", "postgres-config").body["spec"]
    conf = config["postgresql.conf"]
    assert config["postgresVersion"] == "17"
    assert conf["max_connections"] == "100"
    assert conf["shared_buffers"] == "1024MB"  # 25 % of 4096 MB
    assert conf["effective_cache_size"] == "3072MB"  # 75 %
    assert conf["work_mem"].endswith("kB") and int(conf["work_mem"][:-2]) >= 4096
    assert conf["maintenance_work_mem"].endswith("MB")
    assert all(isinstance(value, str) for value in conf.values())
    assert not set(conf) & POSTGRES_BLOCKLIST


def test_postgres_config_is_the_phase_parameters_less_what_stackgres_keeps() -> None:
    """The same values as postgresql.conf and patroni.yml elsewhere; only what StackGres
    refuses (its blocklist) or sizes for its own features is left to StackGres."""
    for phase in SPECS:
        spec = SPECS[phase]()
        config = find(build_manifests(spec), "SGPostgresConfig", "postgres-config")
        conf = config.body["spec"]["postgresql.conf"]
        parameters = postgres_parameters(spec)
        assert conf == {
            name: value
            for name, value in parameters.items()
            if name not in POSTGRES_BLOCKLIST | STACKGRES_MANAGED
        }, phase
        assert not set(conf) & POSTGRES_BLOCKLIST
        # Nothing else is dropped: the durability and memory settings all reach StackGres.
        assert set(parameters) - set(conf) <= STACKGRES_MANAGED | POSTGRES_BLOCKLIST
        for name in ("max_connections", "shared_buffers", "work_mem", "max_slot_wal_keep_size"):
            assert conf[name] == parameters[name], (phase, name)


def test_postgres_config_follows_a_changed_phase_value() -> None:
    spec = with_postgres("growth", maxConnections=150, memoryMb=8192, storageGb=100)
    conf = find(build_manifests(spec), "SGPostgresConfig", "postgres-config").body["spec"][
        "postgresql.conf"
    ]
    assert conf["max_connections"] == "150"
    assert conf["shared_buffers"] == "2048MB"  # 25 % of 8192 MB
    assert conf["max_slot_wal_keep_size"] == "10240MB"  # a tenth of 100 GB


@pytest.mark.parametrize("mode", SYNCHRONOUS_MODES)
def test_replication_mode_follows_synchronous_mode(mode: str) -> None:
    expected = {
        "off": {"mode": "async"},
        "on": {"mode": "sync", "syncInstances": 1},
        "strict": {"mode": "strict-sync", "syncInstances": 1},
    }[mode]
    growth = cluster_of(build_manifests(with_postgres("growth", synchronousMode=mode)))
    assert growth.kind == "SGCluster"
    assert growth.body["spec"]["replication"] == expected
    scale = cluster_of(build_manifests(with_postgres("scale", synchronousMode=mode)))
    assert scale.kind == "SGShardedCluster"
    body = scale.body["spec"]
    # Cluster-wide and per group: the coordinator would otherwise get StackGres's sync-all.
    assert body["replication"] == expected
    assert body["coordinator"]["replication"] == expected
    assert body["shards"]["replication"] == expected


def test_synchronous_standbys_are_patronis_synchronous_node_count() -> None:
    for phase in ("growth", "scale"):
        spec = SPECS[phase]()
        assert spec.postgres.synchronous_mode == "on"
        for group in patroni_groups(cluster_of(build_manifests(spec))):
            count = dynamic_configuration(spec)["synchronous_node_count"]
            assert group["replication"]["syncInstances"] == count
            instances = group.get("instances", group.get("instancesPerCluster"))
            assert instances > count  # StackGres refuses as many standbys as instances


def test_launch_replicates_asynchronously() -> None:
    cluster = cluster_of(build_manifests(SPECS["launch"]()))
    assert cluster.body["spec"]["replication"] == {"mode": "async"}


def test_a_synchronous_group_needs_a_standby() -> None:
    spec = with_postgres("growth", synchronousMode="strict")
    assert replication(spec, 2) == {"mode": "strict-sync", "syncInstances": 1}
    with pytest.raises(ValueError, match=r"postgres\.synchronousMode 'strict'"):
        replication(spec, 1)
    assert replication(with_postgres("growth", synchronousMode="off"), 1) == {"mode": "async"}


def test_patroni_dynamic_config_is_the_phase_dynamic_configuration() -> None:
    """ttl, loop_wait, retry_timeout and maximum_lag_on_failover as on Docker; what StackGres
    ignores in dynamicConfig (it derives the synchronous mode from .replication) is left out."""
    for phase in SPECS:
        spec = SPECS[phase]()
        expected = {
            key: value
            for key, value in dynamic_configuration(spec).items()
            if key not in PATRONI_IGNORED
        }
        for group in patroni_groups(cluster_of(build_manifests(spec))):
            dynamic = group["configurations"]["patroni"]["dynamicConfig"]
            assert dynamic == expected, phase
            assert not set(dynamic) & PATRONI_IGNORED
            assert dynamic.items() >= timeouts(spec).items()
            assert dynamic["maximum_lag_on_failover"] == (
                spec.postgres.maximum_lag_on_failover_mb * 1024 * 1024
            )
            assert "initialConfig" not in group["configurations"]["patroni"]


def test_patroni_dynamic_config_follows_a_changed_phase_value() -> None:
    spec = with_postgres("scale", leaderTtlSeconds=40, maximumLagOnFailoverMb=16)
    for group in patroni_groups(cluster_of(build_manifests(spec))):
        dynamic = group["configurations"]["patroni"]["dynamicConfig"]
        assert dynamic["ttl"] == 40
        assert dynamic["loop_wait"] + 2 * dynamic["retry_timeout"] <= 40
        assert dynamic["maximum_lag_on_failover"] == 16 * 1024 * 1024


def test_pooling_config_carries_the_phase_pgbouncer_numbers() -> None:
    spec = SPECS["scale"]()
    pooling = find(build_manifests(spec), "SGPoolingConfig", "postgres-pooling").body["spec"]
    ini = pooling["pgBouncer"]["pgbouncer.ini"]["pgbouncer"]
    assert ini == {
        "pool_mode": spec.pooler.pool_mode,
        "max_client_conn": str(spec.pooler.max_client_conn),
        "default_pool_size": str(spec.pooler.default_pool_size),
        "reserve_pool_size": str(spec.pooler.reserve_pool_size),
    }
    # The scale defaults: PostgreSQL's 200 connections hold two poolers' full pools.
    assert (ini["pool_mode"], ini["max_client_conn"]) == ("transaction", "4000")
    assert (ini["default_pool_size"], ini["reserve_pool_size"]) == ("85", "10")
    assert not set(ini) & PGBOUNCER_BLOCKLIST


def test_instance_profile_follows_the_phase() -> None:
    for phase, cpu, memory in (
        ("launch", "1", "1024Mi"),
        ("growth", "2", "4096Mi"),
        ("scale", "4", "8192Mi"),
    ):
        profile = find(build_manifests(SPECS[phase]()), "SGInstanceProfile", "postgres-profile")
        assert profile.body["spec"] == {"cpu": cpu, "memory": memory}, phase


def test_credentials_are_secret_references_and_the_app_user_comes_from_a_secret() -> None:
    for phase in SPECS:
        manifests = build_manifests(SPECS[phase]())
        cluster = next(m for m in manifests if m.kind in ("SGCluster", "SGShardedCluster"))
        users = cluster.body["spec"]["configurations"]["credentials"]["users"]
        for ref in users["replication"].values():
            assert ref["name"] == POSTGRES_SECRET
        secret = find(manifests, "Secret", POSTGRES_SECRET).body["stringData"]
        assert secret[users["replication"]["password"]["key"]] == "${REPLICATION_PASSWORD}"
        script = find(manifests, "SGScript", "postgres-app-user").body["spec"]["scripts"]
        ref = script[0]["scriptFrom"]["secretKeyRef"]
        assert ref["name"] == POSTGRES_SECRET
        assert "PASSWORD '${DATABASE_PASSWORD}'" in secret[ref["key"]]
        assert all("PASSWORD" not in s.get("script", "") for s in script)


def test_the_app_role_has_least_privilege_and_owns_its_database() -> None:
    """The SGScript's role: LOGIN and nothing more (an older cluster's extra rights are taken
    away), member of no role, owner of its database and its public schema."""
    for phase in SPECS:
        manifests = build_manifests(SPECS[phase]())
        secret = find(manifests, "Secret", POSTGRES_SECRET).body["stringData"]
        sql = secret["create-app-user.sql"]
        assert "CREATE ROLE sikka;" in sql
        assert (
            "ALTER ROLE sikka WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
            "NOBYPASSRLS INHERIT PASSWORD" in sql
        )
        assert "REVOKE %I FROM %I" in sql
        scripts = find(manifests, "SGScript", "postgres-app-user").body["spec"]["scripts"]
        grant = next(s for s in scripts if s["name"] == "grant-app-user")
        assert grant["database"] == "sikka"
        assert grant["script"] == (
            "ALTER DATABASE sikka OWNER TO sikka;\nALTER SCHEMA public OWNER TO sikka;\n"
        )
        assert "GRANT" not in grant["script"]


def test_stackgres_keeps_the_pooler_console_to_itself() -> None:
    """admin_users/stats_users are StackGres's (its pgbouncer_admin/pgbouncer_stats): the
    pooling config never names the application role, or any user."""
    for phase in SPECS:
        manifests = build_manifests(SPECS[phase]())
        for config in (m for m in manifests if m.kind == "SGPoolingConfig"):
            ini = config.body["spec"]["pgBouncer"]["pgbouncer.ini"]["pgbouncer"]
            assert not {"admin_users", "stats_users", "auth_user"} & set(ini)
            assert "sikka" not in ini.values()


def test_the_database_is_created_by_the_script_only_where_stackgres_does_not() -> None:
    names = {
        phase: [
            s["name"]
            for s in find(build_manifests(SPECS[phase]()), "SGScript", "postgres-app-user").body[
                "spec"
            ]["scripts"]
        ]
        for phase in SPECS
    }
    assert "create-app-database" in names["growth"]
    assert "create-app-database" not in names["scale"]  # SGShardedCluster creates it


def test_postgres_pods_carry_the_labels_the_network_policy_selects() -> None:
    for phase in SPECS:
        manifests = build_manifests(SPECS[phase]())
        cluster = next(m for m in manifests if m.kind in ("SGCluster", "SGShardedCluster"))
        pod_labels = cluster.body["spec"]["metadata"]["labels"]["clusterPods"]
        policy = find(manifests, "NetworkPolicy", "postgres-ingress").body["spec"]
        assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()


def test_postgres_version_comes_from_the_image_tag() -> None:
    assert postgres_version(SPECS["scale"]()) == "17.6"
    spec = on_kubernetes("growth", **{"sikka:postgres": {"image": "postgres:16.4"}})
    assert postgres_version(spec) == "16.4"


def test_operator_is_a_prerequisite_unless_asked_to_install_it() -> None:
    spec = SPECS["scale"]()
    assert operator_release(spec) is None
    assert [m for m in build_manifests(spec) if m.tier == "operator"] == []

    spec = on_kubernetes("scale", **{"sikka:kubernetes": {"installOperator": True}})
    release = operator_release(spec)
    assert release is not None
    assert release["chart"] == "stackgres-operator"
    assert release["version"] == "1.18.6"
    assert release["namespace"] == "stackgres"
    operator = [m for m in build_manifests(spec) if m.tier == "operator"]
    assert [(m.kind, m.name) for m in operator] == [("Namespace", "stackgres")]
