"""StackGres objects: Citus topology at scale, a replicated SGCluster below, sizing from the
phase, credentials through Secret references only."""

from __future__ import annotations

from k8s_support import SPECS, find, of_kind, on_kubernetes

from scaling.kubernetes import build_manifests, operator_release
from scaling.kubernetes.postgres import (
    PGBOUNCER_BLOCKLIST,
    POSTGRES_BLOCKLIST,
    postgres_version,
)
from scaling.kubernetes.secrets import POSTGRES_SECRET


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
    assert body["coordinator"]["configurations"] == {
        "sgPostgresConfig": "postgres-config",
        "sgPoolingConfig": "postgres-pooling",
    }
    assert body["shards"]["configurations"] == {"sgPostgresConfig": "postgres-config"}
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


def test_pooling_config_carries_the_phase_pgbouncer_numbers() -> None:
    spec = SPECS["scale"]()
    pooling = find(build_manifests(spec), "SGPoolingConfig", "postgres-pooling").body["spec"]
    ini = pooling["pgBouncer"]["pgbouncer.ini"]["pgbouncer"]
    assert ini == {
        "pool_mode": "transaction",
        "max_client_conn": "4000",
        "default_pool_size": "150",
        "reserve_pool_size": "20",
    }
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
