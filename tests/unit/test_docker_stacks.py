"""Launch and growth stacks on Docker, evaluated under Pulumi's mock engine."""

from __future__ import annotations

import pulumi
import pytest
from support.pulumi_stack import StackRun, run_stack

from scaling.issues import ConfigError

CONTAINER = "docker:index/container:Container"


def containers(run: StackRun) -> dict[str, dict]:
    """Container name on the Docker host → its inputs."""
    return {r.inputs["name"]: r for r in run.of_type(CONTAINER)}


def uploaded(resource, path: str) -> str:
    files = {u["file"]: u["content"] for u in resource.inputs.get("uploads", [])}
    return files[path]


def env(resource) -> dict[str, str]:
    return dict(item.split("=", 1) for item in resource.inputs["envs"])


@pytest.fixture(scope="module")
def launch() -> StackRun:
    return run_stack("launch")


@pytest.fixture(scope="module")
def growth() -> StackRun:
    return run_stack("growth")


def test_launch_registers_one_of_each(launch: StackRun) -> None:
    assert sorted(containers(launch)) == [
        "sikka-launch-gateway-0",
        "sikka-launch-nginx",
        "sikka-launch-postgres-0",
        "sikka-launch-redis-0",
    ]
    images = sorted(
        r.inputs["name"] for r in launch.of_type("docker:index/remoteImage:RemoteImage")
    )
    assert images == ["nginx:1.29.3", "postgres:17.6-bookworm", "valkey/valkey:8.1.4"]
    (gateway_image,) = launch.of_type("docker:index/image:Image")
    assert gateway_image.inputs["imageName"] == "ghcr.io/sikka-scaling/gateway:0.1.0"
    assert gateway_image.inputs["build"]["context"].endswith("/gateway")
    assert gateway_image.inputs["skipPush"] is True


def test_gateway_image_can_be_pulled_instead() -> None:
    run = run_stack("launch", {"sikka:gateway": {"buildContext": None}})
    assert not run.of_type("docker:index/image:Image")
    pulled = {r.inputs["name"] for r in run.of_type("docker:index/remoteImage:RemoteImage")}
    assert "ghcr.io/sikka-scaling/gateway:0.1.0" in pulled


def test_components_are_typed_and_parented(launch: StackRun) -> None:
    tokens = {r.type for r in launch.resources if r.type.startswith("sikka:")}
    assert tokens == {
        "sikka:platform:Platform",
        "sikka:secrets:PhaseSecrets",
        "sikka:postgres:Postgres",
        "sikka:redis:Redis",
        "sikka:gateway:WebSocketGateway",
        "sikka:nginx:Nginx",
    }
    primary = containers(launch)["sikka-launch-postgres-0"]
    assert primary.name == "sikka-launch-postgres-postgres-0"


def test_launch_postgres_sized_from_phase(launch: StackRun) -> None:
    primary = containers(launch)["sikka-launch-postgres-0"]
    conf = uploaded(primary, "/etc/postgresql/postgresql.conf")
    assert "max_connections = 20\n" in conf
    assert "shared_buffers = 256MB\n" in conf  # 25 % of the launch's 1024 MB
    assert primary.inputs["entrypoints"] == ["sh", "/etc/postgresql/primary-start.sh"]
    start = uploaded(primary, "/etc/postgresql/primary-start.sh")
    assert (
        "exec docker-entrypoint.sh postgres -c config_file=/etc/postgresql/postgresql.conf" in start
    )
    # Fast shutdown, with time to write its checkpoint, before a replacement.
    assert (primary.inputs["stopSignal"], primary.inputs["stopTimeout"]) == ("SIGINT", 120)


def test_launch_redis_standalone_with_maxmemory(launch: StackRun) -> None:
    redis = containers(launch)["sikka-launch-redis-0"]
    conf = uploaded(redis, "/etc/redis/redis.conf")
    assert "maxmemory 256mb\n" in conf and "maxmemory-policy allkeys-lru\n" in conf
    assert "cluster-enabled" not in conf and "replicaof" not in conf


def test_nginx_published_and_proxies_gateways(growth: StackRun) -> None:
    nginx = containers(growth)["sikka-growth-nginx"]
    assert nginx.inputs["ports"] == [{"internal": 80, "external": 8080}]
    conf = uploaded(nginx, "/etc/nginx/nginx.conf")
    assert "server gateway-0:8080" in conf and "server gateway-1:8080" in conf
    assert "worker_connections 4096;" in conf  # 2048 x 2 (the accept gate)
    assert "hash $sticky_key consistent;" in conf


def test_growth_topology(growth: StackRun) -> None:
    names = sorted(containers(growth))
    assert names == sorted(
        [
            f"sikka-growth-{n}"
            for n in (
                "postgres-0",
                "postgres-1",
                "postgres-2",
                "pgbouncer",
                "redis-0",
                "redis-1",
                "redis-2",
                "redis-sentinel-0",
                "redis-sentinel-1",
                "redis-sentinel-2",
                "gateway-0",
                "gateway-1",
                "nginx",
            )
        ]
    )


def test_growth_replicas_stream_from_primary(growth: StackRun) -> None:
    replica = containers(growth)["sikka-growth-postgres-2"]
    assert env(replica)["PRIMARY_HOST"] == "postgres-0"
    assert env(replica)["REPLICATION_SLOT"] == "replica_2"
    script = uploaded(replica, "/etc/postgresql/replica-start.sh")
    assert "pg_basebackup" in script and "passfile=/run/sikka/pgpass" in script
    hba = uploaded(replica, "/etc/postgresql/pg_hba.conf")
    subnet = growth.of_type("docker:index/network:Network")[0].inputs["ipamConfigs"][0]["subnet"]
    assert f"host    replication  replicator    {subnet:<16} scram-sha-256" in hba
    aliases = replica.inputs["networksAdvanced"][0]["aliases"]
    assert "postgres-replicas" in aliases


def test_growth_pgbouncer_pools(growth: StackRun) -> None:
    pgbouncer = containers(growth)["sikka-growth-pgbouncer"]
    ini = uploaded(pgbouncer, "/etc/pgbouncer/pgbouncer.ini")
    assert "pool_mode = transaction" in ini
    assert "auth_type = hba" in ini
    assert "max_client_conn = 1000" in ini
    assert "sikka_ro = host=postgres-replicas port=5432" in ini
    assert "max_db_connections = 97" in ini


def test_growth_pgbouncer_console_is_the_admin_roles_alone(growth: StackRun) -> None:
    """The application role is no PgBouncer admin; the console user answers from loopback
    only, the application role reaches its two databases from the private network."""
    pgbouncer = containers(growth)["sikka-growth-pgbouncer"]
    ini = uploaded(pgbouncer, "/etc/pgbouncer/pgbouncer.ini")
    assert "admin_users = pgbouncer_admin\n" in ini
    assert "stats_users = pgbouncer_admin\n" in ini
    assert "auth_hba_file = /etc/pgbouncer/pgbouncer_hba.conf" in ini
    hba = uploaded(pgbouncer, "/etc/pgbouncer/pgbouncer_hba.conf")
    rules = [line.split() for line in hba.splitlines() if not line.startswith("#")]
    subnet = growth.of_type("docker:index/network:Network")[0].inputs["ipamConfigs"][0]["subnet"]
    assert rules == [
        ["host", "pgbouncer", "pgbouncer_admin", "127.0.0.1/32", "scram-sha-256"],
        ["host", "pgbouncer", "pgbouncer_admin", "::1/128", "scram-sha-256"],
        ["host", "sikka,sikka_ro", "sikka", subnet, "scram-sha-256"],
    ]
    # Each user's auth-file line comes from its own secret.
    assert set(env(pgbouncer)) == {"DATABASE_PASSWORD", "PGBOUNCER_ADMIN_PASSWORD"}
    assert env(pgbouncer)["PGBOUNCER_ADMIN_PASSWORD"] != env(pgbouncer)["DATABASE_PASSWORD"]
    script = pgbouncer.inputs["entrypoints"][2]
    assert '"pgbouncer_admin" "$escaped"' in script and '"sikka" "$escaped"' in script


@pytest.mark.parametrize("stack", ["launch", "growth"])
def test_superuser_is_postgres_and_the_app_role_is_not(stack: str) -> None:
    """The image makes POSTGRES_USER its superuser: that is postgres, with its own secret;
    the application role is created and demoted by the start-up SQL."""
    run = run_stack(stack)
    primary = containers(run)[f"sikka-{stack}-postgres-0"]
    values = env(primary)
    assert values["POSTGRES_USER"] == "postgres"
    assert values["POSTGRES_DB"] == "sikka"
    assert (
        values["POSTGRES_PASSWORD"]
        == f"generated-sikka-{stack}-secrets-postgres-superuser-password"
    )
    assert values["DATABASE_PASSWORD"] == f"generated-sikka-{stack}-secrets-postgres-password"
    init = uploaded(primary, "/docker-entrypoint-initdb.d/10-roles.sh")
    start = uploaded(primary, "/etc/postgresql/primary-start.sh")
    for script in (init, start):
        assert "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS" in script
        assert 'ALTER DATABASE "sikka" OWNER TO "sikka";' in script
    hba = uploaded(primary, "/etc/postgresql/pg_hba.conf")
    rules = [line.split() for line in hba.splitlines() if not line.startswith("#")]
    # The superuser never from the network: socket and loopback only.
    assert [r for r in rules if "postgres" in r] == [
        ["local", "all", "postgres", "scram-sha-256"],
        ["host", "all", "postgres", "127.0.0.1/32", "scram-sha-256"],
        ["host", "all", "postgres", "::1/128", "scram-sha-256"],
    ]
    subnet = run.of_type("docker:index/network:Network")[0].inputs["ipamConfigs"][0]["subnet"]
    assert ["host", "sikka", "sikka", subnet, "scram-sha-256"] in rules
    assert not [r for r in rules if r[1] == "all" and r[2] != "postgres"]
    # Replication only for replicator, only where the phase has replicas.
    replication = [r for r in rules if r[1] == "replication"]
    assert replication == (
        [["host", "replication", "replicator", subnet, "scram-sha-256"]]
        if stack == "growth"
        else []
    )


@pytest.mark.parametrize("stack", ["launch", "growth"])
def test_each_container_gets_only_the_secrets_it_uses(stack: str) -> None:
    run = run_stack(stack)
    secrets = {
        name.removeprefix(f"sikka-{stack}-"): {k for k in env(c) if k.endswith("_PASSWORD")}
        for name, c in containers(run).items()
    }
    for name, held in secrets.items():
        if name.startswith("gateway-"):
            assert held == {"REDIS_PASSWORD"}, name  # gateways never use the database
        elif name == "nginx":
            assert held == set()
        elif name == "postgres-0":
            assert held == {"POSTGRES_PASSWORD", "DATABASE_PASSWORD"} | (
                {"REPLICATION_PASSWORD"} if stack == "growth" else set()
            )
        elif name.startswith("postgres-"):
            assert held == {"REPLICATION_PASSWORD"}, name
        elif name == "pgbouncer":
            assert held == {"DATABASE_PASSWORD", "PGBOUNCER_ADMIN_PASSWORD"}
        else:
            assert held == {"REDIS_PASSWORD"}, name
    gateway = containers(run)[f"sikka-{stack}-gateway-0"]
    assert not [k for k in env(gateway) if k.startswith("DATABASE")]


def test_growth_sentinels_watch_the_master(growth: StackRun) -> None:
    sentinel = containers(growth)["sikka-growth-redis-sentinel-2"]
    conf = uploaded(sentinel, "/etc/redis/sentinel.conf")
    assert "sentinel monitor sikka __MASTER_HOST__ 6379 2" in conf
    replica = containers(growth)["sikka-growth-redis-1"]
    # Every data node asks the Sentinels who the master is; redis-0 only on first boot.
    script = replica.inputs["entrypoints"][2]
    assert "sentinel get-master-addr-by-name sikka" in script
    assert "redis-sentinel-0:26379 redis-sentinel-1:26379 redis-sentinel-2:26379" in script
    assert '[ -n "$master" ] || master=redis-0' in script
    assert env(replica)["NODE_HOST"] == "redis-1"
    assert "min-replicas-to-write 1" in uploaded(replica, "/etc/redis/redis.conf")


def test_secrets_are_generated_and_marked_secret(growth: StackRun) -> None:
    passwords = growth.of_type("random:index/randomPassword:RandomPassword")
    # application role, superuser, replication, PgBouncer console, Redis, and the gateways'
    # HS256 key, twice as long (256+ bits)
    assert len(passwords) == 6
    lengths = sorted(p.inputs["length"] for p in passwords)
    assert lengths == [32, 32, 32, 32, 32, 64]
    for container in growth.of_type(CONTAINER):
        values = env(container)
        secret_vars = {
            "POSTGRES_PASSWORD",
            "REPLICATION_PASSWORD",
            "REDIS_PASSWORD",
            "DATABASE_PASSWORD",
            "PGBOUNCER_ADMIN_PASSWORD",
            "GATEWAY_JWT_SECRET",
        }
        if secret_vars & set(values):
            assert "envs" in container.secret_paths(), container.name
        for upload in container.inputs.get("uploads", []):
            assert "generated-" not in upload["content"], (container.name, upload["file"])


def test_supplied_secret_replaces_generated_one() -> None:
    run = run_stack("launch", secret_values={"sikka:redisPassword": "from-config"})
    # Still generated: the application role's, the superuser's and the gateways' key.
    assert len(run.of_type("random:index/randomPassword:RandomPassword")) == 3
    redis = containers(run)["sikka-launch-redis-0"]
    assert env(redis)["REDIS_PASSWORD"] == "from-config"
    assert "envs" in redis.secret_paths()


def test_bad_config_registers_nothing() -> None:
    with pytest.raises(pulumi.RunError) as caught:
        run_stack(
            "growth", {"sikka:redis": {"sentinels": 2}, "sikka:postgres": {"readReplicas": -1}}
        )
    assert [i.key for i in caught.value.issues] == [
        "sikka:postgres.readReplicas",
        "sikka:redis.sentinels",
    ]
    assert caught.value.registered == []  # type: ignore[attr-defined]


def test_scale_on_docker_runs_a_redis_cluster() -> None:
    run = run_stack(
        "scale",
        {
            "sikka:platform": "docker",
            "sikka:autoscaling": {"enabled": False},
            "sikka:postgres": {"mode": "replicated"},
        },
    )
    names = containers(run)
    nodes = [n for n in names if n.startswith("sikka-scale-redis-") and n[-1].isdigit()]
    assert len(nodes) == 6
    init = names["sikka-scale-redis-cluster-init"]
    script = init.inputs["entrypoints"][2]
    assert "--cluster create redis-0:6379 redis-2:6379 redis-4:6379 --cluster-replicas 0" in script
    assert "join_replica redis-1:6379 redis-0:6379" in script
    assert init.inputs["restart"] == "no"
    conf = uploaded(names["sikka-scale-redis-0"], "/etc/redis/redis.conf")
    assert f"maxmemory {65536 // 3}mb" in conf and "cluster-enabled yes" in conf
    assert len([n for n in names if "gateway" in n]) == 4


def test_citus_on_docker_is_refused_with_its_key() -> None:
    with pytest.raises(ConfigError, match=r"sikka:postgres\.mode: 'citus' runs through"):
        run_stack("scale", {"sikka:platform": "docker", "sikka:autoscaling": {"enabled": False}})


def test_connection_uris_are_exported_as_secrets(growth: StackRun) -> None:
    uris = {"database_read_uri", "database_uri", "redis_uri"}
    assert uris <= set(growth.exports)
    assert growth.secret_exports == uris
    pw = "generated-sikka-growth-secrets-postgres-password"
    assert growth.exports["database_uri"] == f"postgresql://sikka:{pw}@pgbouncer:6432/sikka"
    assert growth.exports["database_read_uri"] == f"postgresql://sikka:{pw}@pgbouncer:6432/sikka_ro"
    assert growth.exports["redis_uri"] == (
        "redis+sentinel://:generated-sikka-growth-secrets-redis-password"
        "@redis-sentinel-0:26379,redis-sentinel-1:26379,redis-sentinel-2:26379/sikka/0"
    )
    assert growth.exports["url"] == "http://localhost:8080"
    assert growth.exports["thresholds"] == {
        "cpuPercent": 70,
        "memoryPercent": 75,
        "connectionsPercent": 85,
    }
