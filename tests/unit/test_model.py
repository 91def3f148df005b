"""The phase model: per-phase defaults, overrides, and every class of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaling.issues import ConfigError
from scaling.model import Phase, PlatformKind
from scaling.stackconfig import load_stack_file, parse

ROOT = Path(__file__).resolve().parents[2]


def spec(stack: str, **overrides: object):
    return parse({"sikka:phase": stack.split("-")[0], **overrides}, stack=stack)


def problems(
    stack: str, values: dict[str, object], secret_keys: set[str] = frozenset()
) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(values, stack=stack, secret_keys=secret_keys)
    return [f"{i.key}: {i.message}" for i in caught.value.issues]


@pytest.mark.parametrize(
    ("phase", "users", "trips", "db", "redis_mb", "ws", "nginx", "thresholds"),
    [
        ("launch", (1000, 2000), (200, 500), 20, 256, 500, 1024, (60, 70, 80)),
        ("growth", (3000, 5000), (600, 1200), 100, 2048, 2000, 2048, (70, 75, 85)),
        ("scale", (10000, None), (2000, None), 200, 65536, 10000, 4096, (70, 80, 85)),
    ],
)
def test_capacity_table_is_each_phase_default(
    phase, users, trips, db, redis_mb, ws, nginx, thresholds
) -> None:
    s = load_stack_file(ROOT / f"Pulumi.{phase}.yaml")
    assert s.phase == Phase(phase)
    assert (s.capacity.concurrent_users.min, s.capacity.concurrent_users.max) == users
    assert (s.capacity.trips.min, s.capacity.trips.max) == trips
    assert s.postgres.max_connections == db
    assert s.redis.max_memory_mb == redis_mb
    assert s.gateway.max_connections == ws
    assert s.nginx.worker_connections == nginx
    assert (
        s.thresholds.cpu_percent,
        s.thresholds.memory_percent,
        s.thresholds.connections_percent,
    ) == thresholds


def test_growth_topology_defaults() -> None:
    s = spec("growth")
    assert (s.postgres.mode, s.postgres.read_replicas, s.pooler.enabled) == ("replicated", 2, True)
    assert (s.redis.mode, s.redis.replicas, s.redis.sentinels, s.redis.quorum) == (
        "sentinel",
        2,
        3,
        2,
    )
    assert s.redis.min_replicas_to_write == 1
    assert s.gateway.replicas == 2
    assert s.platform == PlatformKind.DOCKER


def test_scale_defaults_autoscale_on_kubernetes() -> None:
    s = spec("scale")
    assert s.platform == PlatformKind.KUBERNETES
    assert (s.autoscaling.cpu_target_percent, s.autoscaling.memory_target_percent) == (70, 80)
    assert (s.postgres.mode, s.postgres.shards, s.postgres.instances_per_shard) == ("citus", 4, 2)
    assert (s.redis.mode, s.redis.cluster_nodes, s.redis.memory_per_node_mb) == (
        "cluster",
        6,
        65536 // 3,
    )


def test_stack_file_overrides_only_what_differs() -> None:
    s = spec(
        "growth", **{"sikka:postgres": '{"readReplicas": 3}', "sikka:nginx": {"workerProcesses": 4}}
    )
    assert s.postgres.read_replicas == 3
    assert s.postgres.max_connections == 100  # untouched default
    assert s.nginx.worker_processes == 4
    assert s.nginx.worker_connections == 2048


def test_every_problem_is_reported_at_once_with_its_key() -> None:
    found = problems(
        "growth",
        {
            "sikka:phase": "growth",
            "sikka:postgres": {"readReplicas": -1, "maxConnections": "many"},
            "sikka:redis": {"sentinels": 4, "quorum": 5, "colour": "red"},
            "sikka:gatway": {},
            "sikka:gateway": {"replicas": 0},
            "sikka:redisPassword": "hunter2",
        },
    )
    assert found == [
        "sikka:gateway.replicas: input should be greater than or equal to 1 (got 0)",
        "sikka:gatway: unknown key; did you mean 'sikka:gateway'?",
        "sikka:postgres.maxConnections: input should be a valid integer (got 'many')",
        "sikka:postgres.readReplicas: input should be greater than or equal to 0 (got -1)",
        "sikka:redis.colour: unknown key",
        "sikka:redis.quorum: quorum must be between 1 and the number of sentinels (4) (got 5)",
        "sikka:redis.sentinels: Sentinel needs an odd number of sentinels, at least 3 (got 4)",
        "sikka:redisPassword: must be a secret: `pulumi config set --secret sikka:redisPassword ...`"
        " (or leave it unset to generate one)",
    ]


def test_error_names_the_stack_file() -> None:
    with pytest.raises(
        ConfigError, match=r"Pulumi\.growth\.yaml: sikka:redis\.sentinels: Sentinel needs"
    ):
        parse({"sikka:phase": "growth", "sikka:redis": {"sentinels": 1}}, stack="growth")


@pytest.mark.parametrize(
    ("stack", "values", "expected"),
    [
        (
            "growth",
            {"sikka:phase": "launch"},
            "sikka:phase: stack 'growth' holds the growth phase, not 'launch'",
        ),
        ("growth", {}, "sikka:phase: is required (launch, growth or scale)"),
        (
            "launch",
            {"sikka:phase": "huge"},
            "sikka:phase: must be one of launch, growth, scale (got 'huge')",
        ),
        (
            "launch",
            {"sikka:phase": "launch", "sikka:platform": "nomad"},
            "sikka:platform: must be 'docker' or 'kubernetes' (got 'nomad')",
        ),
        (
            "growth",
            {"sikka:phase": "growth", "sikka:redis": {"sentinels": 2}},
            "sikka:redis.sentinels: Sentinel needs an odd number of sentinels, at least 3 (got 2)",
        ),
        (
            "growth",
            {"sikka:phase": "growth", "sikka:redis": {"minReplicasToWrite": 3}},
            "sikka:redis.minReplicasToWrite: 3 exceeds the 2 replicas: the master would refuse every write",
        ),
        (
            "growth",
            {"sikka:phase": "growth", "sikka:pooler": {"defaultPoolSize": 95}},
            "sikka:pooler.defaultPoolSize: replicas 2 x (defaultPoolSize 95 + reservePoolSize 5) exceeds the 97 "
            "client connections PostgreSQL allows on the primary (postgres.maxConnections 100 - 3 reserved)",
        ),
        (
            "growth",
            {"sikka:phase": "growth", "sikka:pooler": {"readPoolSize": 90}},
            "sikka:pooler.readPoolSize: replicas 2 x (readPoolSize 90 + reservePoolSize 5) exceeds the 97 "
            "client connections PostgreSQL allows on each replica (postgres.maxConnections 100 - 3 reserved)",
        ),
        (
            "launch",
            {"sikka:phase": "launch", "sikka:postgres": {"readReplicas": 2}},
            "sikka:postgres.readReplicas: a 'single' PostgreSQL has no read replicas (got 2); "
            "set postgres.mode to 'replicated'",
        ),
        (
            "growth",
            {"sikka:phase": "growth", "sikka:pooler": {"enabled": False}},
            "sikka:pooler.enabled: PostgreSQL mode 'replicated' is served through PgBouncer: set true",
        ),
        (
            "scale",
            {"sikka:phase": "scale", "sikka:redis": {"masters": 2}},
            "sikka:redis.masters: Redis Cluster needs at least 3 masters (got 2)",
        ),
        (
            "scale",
            {
                "sikka:phase": "scale",
                "sikka:platform": "docker",
                "sikka:autoscaling": {"enabled": True},
            },
            "sikka:autoscaling.enabled: autoscaling runs as Kubernetes HorizontalPodAutoscalers and "
            "needs sikka:platform 'kubernetes'",
        ),
        (
            "launch",
            {"sikka:phase": "launch", "sikka:gateway": {"connectionsPerReplica": 100}},
            "sikka:gateway.connectionsPerReplica: 1 replicas x 100 connections cannot hold the "
            "phase's 500 WebSocket connections",
        ),
        (
            "growth",
            {"sikka:phase": "growth", "sikka:nginx": {"workerProcesses": 1}},
            "sikka:nginx.workerConnections: 2048 per worker x 1 workers x 1 replicas is too "
            "little for 2000 WebSockets: each worker needs 5032 (2 per WebSocket, client side "
            "+ upstream side, +25 % headroom, + the busiest worker's excess over an even "
            "share, + 32 for listeners and health checks); raise workerConnections or "
            "workerProcesses",
        ),
        (
            "launch",
            {"sikka:phase": "launch", "sikka:nginx": {"image": "nginx:latest"}},
            "sikka:nginx.image: must not use the moving 'latest' tag (got 'nginx:latest')",
        ),
        (
            "launch",
            {"sikka:phase": "launch", "sikka:redis": {"mode": "sentinal"}},
            "sikka:redis.mode: input should be 'standalone', 'sentinel' or 'cluster' (got 'sentinal')",
        ),
        (
            "launch",
            {"sikka:phase": "launch", "sikka:redis": {"maxMemoryMb": "256"}},
            "sikka:redis.maxMemoryMb: input should be a valid integer (got '256')",
        ),
        (
            "launch",
            {"sikka:phase": "launch", "sikka:postgres": "big"},
            "sikka:postgres: must be a mapping (got 'big')",
        ),
        (
            "growth",
            {"sikka:phase": "growth", "sikka:postgres": {"user": "postgres"}},
            "sikka:postgres.user: is a role name PostgreSQL, PgBouncer or StackGres already "
            "uses or reserves (postgres, replicator, pgbouncer_admin, pg_*, ...); choose "
            "another (got 'postgres')",
        ),
        (
            "growth",
            {"sikka:phase": "growth", "sikka:postgres": {"user": "pgbouncer_stats"}},
            "sikka:postgres.user: is a role name PostgreSQL, PgBouncer or StackGres already "
            "uses or reserves (postgres, replicator, pgbouncer_admin, pg_*, ...); choose "
            "another (got 'pgbouncer_stats')",
        ),
        (
            "growth",
            {"sikka:phase": "growth", "sikka:postgres": {"user": "pg_app"}},
            "sikka:postgres.user: is a role name PostgreSQL, PgBouncer or StackGres already "
            "uses or reserves (postgres, replicator, pgbouncer_admin, pg_*, ...); choose "
            "another (got 'pg_app')",
        ),
    ],
)
def test_bad_input_message(stack: str, values: dict[str, object], expected: str) -> None:
    assert expected in problems(stack, values)


def test_secret_keys_are_accepted_when_secret() -> None:
    s = parse(
        {"sikka:phase": "launch", "sikka:redisPassword": "ciphertext"},
        stack="launch",
        secret_keys={"sikka:redisPassword"},
    )
    assert s.phase == Phase.LAUNCH


@pytest.mark.parametrize("key", ["postgresSuperuserPassword", "pgbouncerAdminPassword"])
def test_role_password_keys_are_secret_keys(key: str) -> None:
    values = {"sikka:phase": "growth", f"sikka:{key}": "ciphertext"}
    assert parse(values, stack="growth", secret_keys={f"sikka:{key}"}).phase == Phase.GROWTH
    with pytest.raises(ConfigError, match=f"sikka:{key}: must be a secret"):
        parse(values, stack="growth")


def test_other_namespaces_are_ignored() -> None:
    s = parse({"sikka:phase": "scale", "kubernetes:context": "prod"}, stack="scale")
    assert s.platform == PlatformKind.KUBERNETES


def test_stack_file_secure_values_count_as_secret(tmp_path: Path) -> None:
    stack = tmp_path / "Pulumi.launch.yaml"
    stack.write_text(
        "config:\n  sikka:phase: launch\n  sikka:postgresPassword:\n    secure: v1:abc\n"
        "  sikka:redisPassword: plain\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_stack_file(stack)
    assert [i.key for i in caught.value.issues] == ["sikka:redisPassword"]


def test_unprefixed_project_keys_are_pointed_to_the_namespace() -> None:
    assert problems("launch", {"sikka:phase": "launch", "sikka-scaling:phase": "launch"}) == [
        "sikka-scaling:phase: project keys live in the 'sikka' namespace: use 'sikka:phase'"
    ]


def test_kubernetes_needs_a_postgres_version_in_the_tag() -> None:
    digest = "postgres@sha256:" + "a" * 64
    assert problems("scale", {"sikka:phase": "scale", "sikka:postgres": {"image": digest}}) == [
        f"sikka:postgres.image: {digest!r}: on Kubernetes StackGres runs the Postgres version "
        "the tag names; use a tag that starts with it, such as 'postgres:17.6-bookworm'"
    ]
    docker = parse({"sikka:phase": "launch", "sikka:postgres": {"image": digest}}, stack="launch")
    assert docker.postgres.version is None  # fine on Docker: the image is run as is
