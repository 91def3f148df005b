"""Launch and growth stacks on Docker, evaluated under Pulumi's mock engine."""

from __future__ import annotations

import base64

import pulumi
import pytest
import yaml
from support.pulumi_stack import StackRun, run_stack

from scaling.issues import ConfigError
from scaling.render.scram import is_scram_verifier, scram_verifier
from scaling.stackconfig import parse

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
        "sikka-launch-nginx-exporter-0",
        "sikka-launch-node-exporter",
        "sikka-launch-postgres-0",
        "sikka-launch-postgres-exporter-0",
        "sikka-launch-prometheus",
        "sikka-launch-redis-0",
        "sikka-launch-redis-exporter",
    ]
    images = sorted(
        r.inputs["name"] for r in launch.of_type("docker:index/remoteImage:RemoteImage")
    )
    monitoring = parse({"sikka:phase": "launch"}, stack="launch").monitoring
    assert images == sorted(
        [
            "nginx:1.29.3",
            "postgres:17.6-bookworm",
            "valkey/valkey:8.1.4",
            monitoring.prometheus_image,
            monitoring.node_exporter_image,
            monitoring.postgres_exporter_image,
            monitoring.redis_exporter_image,
            monitoring.nginx_exporter_image,
        ]
    )
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
        "sikka:monitoring:Monitoring",
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
    # Its open files: worker_rlimit_nofile, as the container's nofile; a gateway's follow
    # from its connections (render/limits.py).
    assert nginx.inputs["ulimits"] == [{"name": "nofile", "soft": 4608, "hard": 4608}]
    gateway = containers(growth)["sikka-growth-gateway-0"]
    assert gateway.inputs["ulimits"] == [{"name": "nofile", "soft": 2256, "hard": 2256}]


def test_growth_topology(growth: StackRun) -> None:
    names = sorted(containers(growth))
    assert names == sorted(
        [
            f"sikka-growth-{n}"
            for n in (
                "etcd-0",
                "etcd-1",
                "etcd-2",
                "postgres-0",
                "postgres-1",
                "postgres-2",
                "haproxy-0",
                "haproxy-1",
                "pgbouncer-0",
                "pgbouncer-1",
                "redis-0",
                "redis-1",
                "redis-2",
                "redis-sentinel-0",
                "redis-sentinel-1",
                "redis-sentinel-2",
                "gateway-0",
                "gateway-1",
                "nginx",
                "node-exporter",
                "postgres-exporter-0",
                "postgres-exporter-1",
                "postgres-exporter-2",
                "pgbouncer-exporter-0",
                "pgbouncer-exporter-1",
                "redis-exporter",
                "nginx-exporter-0",
                "prometheus",
            )
        ]
    )


def test_growth_images_carry_the_phase_postgres(growth: StackRun) -> None:
    """The members run the Patroni image, built from the project FROM the phase's PostgreSQL
    image; the launch phase's single server pulls that PostgreSQL image itself."""
    (patroni,) = [
        r
        for r in growth.of_type("docker:index/image:Image")
        if r.inputs["imageName"] == "ghcr.io/sikka-scaling/postgres-patroni:0.1.0"
    ]
    assert patroni.inputs["build"]["context"].endswith("/images/postgres-patroni")
    assert patroni.inputs["build"]["args"] == {"POSTGRES_IMAGE": "postgres:17.6-bookworm"}
    assert patroni.inputs["skipPush"] is True
    pulled = {r.inputs["name"] for r in growth.of_type("docker:index/remoteImage:RemoteImage")}
    spec = parse({"sikka:phase": "growth"}, stack="growth")
    assert pulled == {
        spec.postgres.etcd_image,
        spec.pooler.router_image,
        spec.pooler.image,
        spec.redis.image,
        spec.nginx.image,
        spec.monitoring.prometheus_image,
        spec.monitoring.node_exporter_image,
        spec.monitoring.postgres_exporter_image,
        spec.monitoring.pgbouncer_exporter_image,
        spec.monitoring.redis_exporter_image,
        spec.monitoring.nginx_exporter_image,
    }


def test_patroni_image_can_be_pulled_instead() -> None:
    run = run_stack("growth", {"sikka:postgres": {"patroniBuildContext": None}})
    built = {r.inputs["imageName"] for r in run.of_type("docker:index/image:Image")}
    assert built == {"ghcr.io/sikka-scaling/gateway:0.1.0"}
    pulled = {r.inputs["name"] for r in run.of_type("docker:index/remoteImage:RemoteImage")}
    assert "ghcr.io/sikka-scaling/postgres-patroni:0.1.0" in pulled


@pytest.mark.parametrize("name", ["pgbouncer-0", "pgbouncer-1"])
def test_growth_pgbouncers_pool_through_the_routers(growth: StackRun, name: str) -> None:
    pgbouncer = containers(growth)[f"sikka-growth-{name}"]
    # Two PgBouncer processes per container (pooler.processes), each with half the pools.
    first, second = (uploaded(pgbouncer, f"/etc/pgbouncer/pgbouncer-{k}.ini") for k in range(2))
    for ini in (first, second):
        assert "pool_mode = transaction" in ini
        assert "auth_type = hba" in ini
        assert "max_client_conn = 1000" in ini
        assert "listen_port = 6432\n" in ini
        assert "so_reuseport = 1\n" in ini
        # Writes through the routers to the leader, reads through them to the replicas.
        assert "sikka = host=postgres port=5432 dbname=sikka pool_size=20" in ini
        assert "sikka_ro = host=postgres-replicas port=5433 dbname=sikka pool_size=20" in ini
        # 2 poolers x 2 processes never open more than PostgreSQL's 97 client connections.
        assert "max_db_connections = 24\n" in ini
    # reservePoolSize 5 split 3 + 2: 2 x (40 + 5) fit the primary's 97 connections.
    assert "reserve_pool_size = 3\n" in first
    assert "reserve_pool_size = 2\n" in second
    script = pgbouncer.inputs["entrypoints"][2]
    assert "pgbouncer /etc/pgbouncer/pgbouncer-0.ini &" in script
    assert "pgbouncer /etc/pgbouncer/pgbouncer-1.ini &" in script
    aliases = pgbouncer.inputs["networksAdvanced"][0]["aliases"]
    assert aliases == [name, "pgbouncer"]


def test_growth_pgbouncer_console_is_the_admin_roles_alone(growth: StackRun) -> None:
    """The application role is no PgBouncer admin; the console user answers from loopback
    only, the application role reaches its two databases from the private network, the
    exporters' monitoring user reads the console's statistics (stats_users, SHOW only)."""
    pgbouncer = containers(growth)["sikka-growth-pgbouncer-1"]
    ini = uploaded(pgbouncer, "/etc/pgbouncer/pgbouncer-1.ini")
    assert "admin_users = pgbouncer_admin\n" in ini
    assert "stats_users = pgbouncer_admin, sikka_monitor\n" in ini
    assert "auth_hba_file = /etc/pgbouncer/pgbouncer_hba.conf" in ini
    hba = uploaded(pgbouncer, "/etc/pgbouncer/pgbouncer_hba.conf")
    rules = [line.split() for line in hba.splitlines() if not line.startswith("#")]
    subnet = growth.of_type("docker:index/network:Network")[0].inputs["ipamConfigs"][0]["subnet"]
    assert rules == [
        ["host", "pgbouncer", "pgbouncer_admin", "127.0.0.1/32", "scram-sha-256"],
        ["host", "pgbouncer", "pgbouncer_admin", "::1/128", "scram-sha-256"],
        ["host", "sikka,sikka_ro", "sikka", subnet, "scram-sha-256"],
        ["host", "pgbouncer", "sikka_monitor", subnet, "scram-sha-256"],
    ]
    # Each user's auth-file line comes from its own secret: its password's SCRAM verifier,
    # with a salt of its own; the pooler holds no password.
    values = env(pgbouncer)
    assert set(values) == {
        "DATABASE_PASSWORD_SCRAM",
        "PGBOUNCER_ADMIN_PASSWORD_SCRAM",
        "MONITORING_PASSWORD_SCRAM",
    }
    assert values == env(containers(growth)["sikka-growth-pgbouncer-0"])
    for variable, password in (
        ("DATABASE_PASSWORD_SCRAM", "postgres-password"),
        ("PGBOUNCER_ADMIN_PASSWORD_SCRAM", "pgbouncer-admin-password"),
        ("MONITORING_PASSWORD_SCRAM", "monitoring-password"),
    ):
        assert_verifies(values[variable], f"generated-sikka-growth-secrets-{password}")
    assert len(set(values.values())) == 3
    script = pgbouncer.inputs["entrypoints"][2]
    assert '"pgbouncer_admin" "$escaped"' in script and '"sikka" "$escaped"' in script
    assert '"sikka_monitor" "$escaped"' in script


def assert_verifies(verifier: str, password: str) -> None:
    """``verifier`` is the SCRAM verifier of ``password`` (with its own salt)."""
    assert is_scram_verifier(verifier)
    salt = base64.b64decode(verifier.split("$")[1].split(":")[1])
    assert verifier == scram_verifier(password, salt)


def test_superuser_is_postgres_and_the_app_role_is_not(launch: StackRun) -> None:
    """The image makes POSTGRES_USER its superuser: that is postgres, with its own secret;
    the application role is created and demoted by the start-up SQL."""
    primary = containers(launch)["sikka-launch-postgres-0"]
    values = env(primary)
    assert values["POSTGRES_USER"] == "postgres"
    assert values["POSTGRES_DB"] == "sikka"
    assert (
        values["POSTGRES_PASSWORD"] == "generated-sikka-launch-secrets-postgres-superuser-password"
    )
    # The start-up SQL sets the application role's SCRAM verifier; its password stays out.
    assert "DATABASE_PASSWORD" not in values
    assert_verifies(
        values["DATABASE_PASSWORD_SCRAM"], "generated-sikka-launch-secrets-postgres-password"
    )
    init = uploaded(primary, "/docker-entrypoint-initdb.d/10-roles.sh")
    start = uploaded(primary, "/etc/postgresql/primary-start.sh")
    for script in (init, start):
        assert "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS" in script
        assert 'ALTER DATABASE "sikka" OWNER TO "sikka";' in script
    hba = uploaded(primary, "/etc/postgresql/pg_hba.conf")
    rules = [line.split() for line in hba.splitlines() if not line.startswith("#")]
    assert_least_privilege(rules, network_of(launch), replicas=False)


def network_of(run: StackRun) -> str:
    return run.of_type("docker:index/network:Network")[0].inputs["ipamConfigs"][0]["subnet"]


def assert_least_privilege(
    rules: list[list[str]], subnet: str, *, replicas: bool, socket: tuple[str, ...] = ()
) -> None:
    # The superuser never from the network: socket and loopback only.
    assert [r for r in rules if "postgres" in r[2:3]] == [
        ["local", "all", "postgres", *(socket or ("scram-sha-256",))],
        ["host", "all", "postgres", "127.0.0.1/32", "scram-sha-256"],
        ["host", "all", "postgres", "::1/128", "scram-sha-256"],
    ]
    assert ["host", "sikka", "sikka", subnet, "scram-sha-256"] in rules
    assert not [r for r in rules if r[1] == "all" and r[2] != "postgres"]
    # Replication only for replicator, only where the phase has replicas.
    replication = [r for r in rules if r[1] == "replication"]
    assert replication == (
        [["host", "replication", "replicator", subnet, "scram-sha-256"]] if replicas else []
    )


@pytest.mark.parametrize("member", ["postgres-0", "postgres-2"])
def test_patroni_members_keep_the_roles_least_privileged(growth: StackRun, member: str) -> None:
    """Patroni bootstraps as postgres with its own secret; the role script (post_bootstrap,
    and on every start or promotion of a leader) creates and demotes the application role."""
    container = containers(growth)[f"sikka-growth-{member}"]
    values = env(container)
    su = "generated-sikka-growth-secrets-postgres-superuser-password"
    assert values["PATRONI_SUPERUSER_PASSWORD"] == values["POSTGRES_PASSWORD"] == su
    assert "DATABASE_PASSWORD" not in values
    # The very verifier the poolers hold (SCRAM pass-through needs the same salt).
    assert values["DATABASE_PASSWORD_SCRAM"] == env(pooler_of(growth))["DATABASE_PASSWORD_SCRAM"]
    assert_verifies(
        values["DATABASE_PASSWORD_SCRAM"], "generated-sikka-growth-secrets-postgres-password"
    )
    config = yaml.safe_load(uploaded(container, "/etc/patroni/patroni.yml"))
    assert config["postgresql"]["authentication"]["superuser"] == {"username": "postgres"}
    roles = uploaded(container, "/etc/patroni/roles.sh")
    assert "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS" in roles
    assert 'ALTER DATABASE "sikka" OWNER TO "sikka";' in roles
    # Patroni drops PATRONI_* from its environment once read: the script never uses them.
    assert "PATRONI_" not in roles
    subnet = network_of(growth)
    for rules in (config["postgresql"]["pg_hba"], config["bootstrap"]["pg_hba"]):
        split = [rule.split() for rule in rules]
        # On the socket the superuser is the members' system account alone (peer), so a
        # rotated superuser password never locks Patroni out.
        assert_least_privilege(split, subnet, replicas=True, socket=("peer", "map=patroni"))
        assert config["postgresql"]["pg_ident"] == ["patroni postgres postgres"]
        # pg_rewind's role reaches the postgres database alone.
        assert [r for r in split if r[2] == "rewinder"] == [
            ["host", "postgres", "rewinder", subnet, "scram-sha-256"]
        ]


def pooler_of(run: StackRun):
    return containers(run)["sikka-growth-pgbouncer-1"]


@pytest.mark.parametrize("stack", ["launch", "growth"])
def test_each_container_gets_only_the_secrets_it_uses(stack: str) -> None:
    run = run_stack(stack)
    secrets = {
        name.removeprefix(f"sikka-{stack}-"): {
            k
            for k in env(c)
            if k.endswith(("_PASSWORD", "_PASSWORD_SCRAM", "_PASS")) or k == "PGPASSWORD"
        }
        for name, c in containers(run).items()
    }
    # Patroni's own (it reads and hides them) and its role script's.
    patroni = {
        "PATRONI_SUPERUSER_PASSWORD",
        "PATRONI_REPLICATION_PASSWORD",
        "PATRONI_REWIND_PASSWORD",
        "PATRONI_RESTAPI_PASSWORD",
        "POSTGRES_PASSWORD",
        "REPLICATION_PASSWORD",
        "REWIND_PASSWORD",
        "RESTAPI_PASSWORD",
        "DATABASE_PASSWORD_SCRAM",
        "MONITORING_PASSWORD_SCRAM",
    }
    for name, held in secrets.items():
        if name.startswith("gateway-"):
            assert held == {"REDIS_PASSWORD"}, name  # gateways never use the database
        elif name.startswith("postgres-exporter-"):
            # The monitoring role's password alone, in postgres_exporter's own variable.
            assert held == {"DATA_SOURCE_PASS"}, name
        elif name.startswith("pgbouncer-exporter-"):
            assert held == {"PGPASSWORD"}, name
        elif name in ("nginx", "prometheus", "node-exporter") or name.startswith(
            ("haproxy-", "etcd-", "nginx-exporter-")
        ):
            assert held == set(), name
        elif name.startswith("postgres-"):
            assert held == (
                patroni
                if stack == "growth"
                else {"POSTGRES_PASSWORD", "DATABASE_PASSWORD_SCRAM", "MONITORING_PASSWORD_SCRAM"}
            ), name
        elif name.startswith("pgbouncer"):
            assert held == {
                "DATABASE_PASSWORD_SCRAM",
                "PGBOUNCER_ADMIN_PASSWORD_SCRAM",
                "MONITORING_PASSWORD_SCRAM",
            }, name
        else:
            assert held == {"REDIS_PASSWORD"}, name
    if stack == "growth":  # each kind of node was checked
        assert {"pgbouncer-1", "haproxy-1", "etcd-2", "postgres-2"} <= set(secrets)
        assert {"postgres-exporter-2", "pgbouncer-exporter-1", "redis-exporter"} <= set(secrets)
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
    # application role, superuser, replication, pg_rewind, Patroni's REST API, PgBouncer
    # console, Redis, the exporters' monitoring role, and the gateways' HS256 key, twice as
    # long (256+ bits)
    assert len(passwords) == 9
    lengths = sorted(p.inputs["length"] for p in passwords)
    assert lengths == [32, 32, 32, 32, 32, 32, 32, 32, 64]
    # The salts of the three SCRAM verifiers, 16 bytes each as PostgreSQL draws them.
    salts = growth.of_type("random:index/randomBytes:RandomBytes")
    assert sorted(s.name for s in salts) == [
        "sikka-growth-secrets-monitoring-password-scram-salt",
        "sikka-growth-secrets-pgbouncer-admin-password-scram-salt",
        "sikka-growth-secrets-postgres-password-scram-salt",
    ]
    assert {s.inputs["length"] for s in salts} == {16}
    for container in growth.of_type(CONTAINER):
        values = env(container)
        secret_vars = {
            "POSTGRES_PASSWORD",
            "REPLICATION_PASSWORD",
            "REDIS_PASSWORD",
            "DATABASE_PASSWORD",
            "DATABASE_PASSWORD_SCRAM",
            "PGBOUNCER_ADMIN_PASSWORD",
            "PGBOUNCER_ADMIN_PASSWORD_SCRAM",
            "GATEWAY_JWT_SECRET",
            "PATRONI_SUPERUSER_PASSWORD",
            "PATRONI_REPLICATION_PASSWORD",
            "PATRONI_REWIND_PASSWORD",
            "PATRONI_RESTAPI_PASSWORD",
            "MONITORING_PASSWORD",
            "MONITORING_PASSWORD_SCRAM",
            "DATA_SOURCE_PASS",
            "PGPASSWORD",
        }
        if secret_vars & set(values):
            assert "envs" in container.secret_paths(), container.name
        for upload in container.inputs.get("uploads", []):
            assert "generated-" not in upload["content"], (container.name, upload["file"])


def test_supplied_secret_replaces_generated_one() -> None:
    run = run_stack("launch", secret_values={"sikka:redisPassword": "from-config"})
    # Still generated: the application role's, the superuser's, the monitoring role's and
    # the gateways' key.
    assert len(run.of_type("random:index/randomPassword:RandomPassword")) == 4
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
    # Besides, the passwords a later transition's target inherits (scaling.promotion).
    assert growth.secret_exports == uris | {"transition_secrets"}
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
