"""`pulumi up` never loses data: each stack is evaluated under the mock engine before and
after a routine change, and the two resource graphs are compared.

Every resource that holds data (Docker volumes; the Namespace, StackGres clusters and
claim-bearing StatefulSets) must survive the change with the same identity (the inputs whose
change makes the provider replace it), and be protected and retained on delete in both runs.
Changes that cannot be applied without losing data are refused, naming the key, before
anything is registered.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml
from support.pulumi_stack import Registered, StackRun, run_stack

from scaling.issues import ConfigError
from scaling.render.scram import scram_verifier

VOLUME = "docker:index/volume:Volume"
CONTAINER = "docker:index/container:Container"
STATEFUL_K8S = {
    "kubernetes:core/v1:Namespace",
    "kubernetes:apps/v1:StatefulSet",
    "kubernetes:stackgres.io/v1:SGCluster",
    "kubernetes:stackgres.io/v1alpha1:SGShardedCluster",
}
SCALE_ON_DOCKER = {
    "sikka:platform": "docker",
    "sikka:autoscaling": {"enabled": False},
    "sikka:postgres": {"mode": "replicated"},
}


def holds_data(resource: Registered) -> bool:
    if resource.type == VOLUME:
        return True
    if resource.type == "kubernetes:apps/v1:StatefulSet":
        return bool(resource.inputs["spec"].get("volumeClaimTemplates"))
    return resource.type in STATEFUL_K8S


def identity(resource: Registered) -> Any:
    """What must not change, or the provider replaces the resource (and its data)."""
    if resource.type == VOLUME:
        return resource.inputs  # every input of a Docker volume forces a new volume
    metadata = resource.inputs["metadata"]
    key: dict[str, Any] = {"name": metadata["name"], "namespace": metadata.get("namespace")}
    if resource.type == "kubernetes:apps/v1:StatefulSet":
        spec = resource.inputs["spec"]
        key |= {k: spec.get(k) for k in ("serviceName", "selector", "volumeClaimTemplates")}
    return key


def stateful(run: StackRun) -> dict[tuple[str, str], Registered]:
    return {(r.type, r.name): r for r in run.resources if holds_data(r)}


def assert_data_kept(before: StackRun, after: StackRun) -> None:
    kept, now = stateful(before), stateful(after)
    assert kept, "the stack registers no data-holding resource"
    for key, resource in kept.items():
        assert key in now, f"{key} would be deleted"
        assert identity(now[key]) == identity(resource), f"{key} would be replaced"
    for run in (before, after):
        for key, resource in stateful(run).items():
            assert resource.protect and resource.retain_on_delete, f"{key} is not protected"


def evolve(stack: str, base: dict[str, Any], change: dict[str, Any], **kw: Any) -> None:
    before = run_stack(stack, base)
    after = run_stack(stack, {**base, **change}, previous_outputs=before.exports, **kw)
    assert_data_kept(before, after)


ROUTINE: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("launch", {}, {"sikka:postgres": {"maxConnections": 30}}),
    ("launch", {}, {"sikka:redis": {"maxMemoryMb": 512}}),
    ("launch", {}, {"sikka:gateway": {"replicas": 2, "maxReplicas": 2}}),
    ("launch", {}, {"sikka:nginx": {"workerConnections": 2048}}),
    ("launch", {}, {"sikka:docker": {"network": "renamed"}}),
    ("growth", {}, {"sikka:postgres": {"readReplicas": 3}}),
    ("growth", {}, {"sikka:postgres": {"synchronousMode": "strict"}}),
    ("growth", {}, {"sikka:pooler": {"replicas": 1}}),
    ("growth", {}, {"sikka:postgres": {"maxConnections": 120}}),
    ("growth", {}, {"sikka:redis": {"maxMemoryMb": 3072}}),
    ("growth", {}, {"sikka:docker": {"network": "renamed", "subnet": "10.99.0.0/24"}}),
    ("scale", SCALE_ON_DOCKER, {"sikka:redis": {"masters": 4}}),
    ("scale", {}, {"sikka:redis": {"masters": 4}}),
    ("scale", {}, {"sikka:redis": {"maxMemoryMb": 98304}}),
    ("scale", {}, {"sikka:postgres": {"maxConnections": 300}}),
    ("scale", {}, {"sikka:gateway": {"replicas": 6}}),
    ("scale", {}, {"sikka:nginx": {"workerConnections": 8192}}),
    ("scale", {}, {"sikka:postgres": {"shards": 5}}),
    ("growth", {"sikka:platform": "kubernetes"}, {"sikka:postgres": {"readReplicas": 3}}),
    ("launch", {"sikka:platform": "kubernetes"}, {"sikka:redis": {"maxMemoryMb": 512}}),
]


@pytest.mark.parametrize(("stack", "base", "change"), ROUTINE, ids=lambda v: str(v))
def test_routine_change_keeps_every_volume(stack: str, base: dict, change: dict) -> None:
    evolve(stack, base, change)


@pytest.mark.parametrize(
    ("stack", "base"),
    [("launch", {}), ("growth", {}), ("scale", {}), ("growth", {"sikka:platform": "kubernetes"})],
)
def test_password_rotation_keeps_every_volume(stack: str, base: dict) -> None:
    evolve(stack, base, {}, secret_values={"sikka:postgresPassword": "rotated"})


@pytest.mark.parametrize(
    ("stack", "script"),
    [("launch", "/etc/postgresql/primary-start.sh"), ("growth", "/etc/patroni/roles.sh")],
)
def test_rotated_password_is_applied_to_the_database_at_start(stack: str, script: str) -> None:
    """launch: the start script applies the passwords before the server listens; growth:
    Patroni runs the role script on the leader at every start and promotion."""
    run = run_stack(
        stack,
        secret_values={
            "sikka:postgresPassword": "rotated",
            "sikka:postgresSuperuserPassword": "rotated-su",
        },
    )
    primary = next(r for r in run.of_type(CONTAINER) if r.inputs["hostname"] == "postgres-0")
    uploads = {u["file"]: u["content"] for u in primary.inputs["uploads"]}
    start = uploads[script]
    assert (
        'ALTER ROLE "sikka" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
        'NOBYPASSRLS INHERIT PASSWORD $(sql_literal "$DATABASE_PASSWORD_SCRAM")'
    ) in start
    assert (
        'ALTER ROLE "postgres" WITH SUPERUSER LOGIN PASSWORD $(sql_literal "$POSTGRES_PASSWORD")'
        in start
    )
    # The rotated password's verifier (with the salt the stack keeps).
    (verifier,) = [
        e.split("=", 1)[1]
        for e in primary.inputs["envs"]
        if e.startswith("DATABASE_PASSWORD_SCRAM=")
    ]
    salt = base64.b64decode(verifier.split("$")[1].split(":")[1])
    assert verifier == scram_verifier("rotated", salt)
    assert "POSTGRES_PASSWORD=rotated-su" in primary.inputs["envs"]
    if stack == "growth":
        assert "PATRONI_SUPERUSER_PASSWORD=rotated-su" in primary.inputs["envs"]
        config = yaml.safe_load(uploads["/etc/patroni/patroni.yml"])
        run_roles = f"sh {script}"
        assert config["postgresql"]["callbacks"] == {
            "on_role_change": run_roles,
            "on_start": run_roles,
        }
        assert config["bootstrap"]["post_bootstrap"] == run_roles


@pytest.mark.parametrize("stack", ["launch", "growth"])
def test_data_containers_stop_gracefully_one_at_a_time(stack: str) -> None:
    run = run_stack(stack)
    by_host = {r.inputs["hostname"]: r for r in run.of_type(CONTAINER)}
    # PostgreSQL alone: fast shutdown; under Patroni, Patroni stops it (fast) and hands the
    # leader lock over first; etcd leaves its cluster cleanly on SIGTERM; Prometheus writes
    # its head block out on SIGTERM.
    postgres = ("SIGTERM", 120) if stack == "growth" else ("SIGINT", 120)
    graceful = {
        "postgres": postgres,
        "redis": ("SIGTERM", 120),
        "etcd": ("SIGTERM", 30),
        "prometheus": ("SIGTERM", 120),
    }
    stateful = [host for host, c in by_host.items() if c.inputs.get("volumes")]
    assert {host.split("-")[0] for host in stateful} == set(graceful) - (
        set() if stack == "growth" else {"etcd"}
    )
    for host, container in by_host.items():
        assert container.delete_before_replace, host
        tier = host.split("-")[0]
        if host in stateful:
            signal, grace = graceful[tier]
            assert container.inputs["stopSignal"] == signal, host
            assert (
                container.inputs["stopTimeout"] == grace == container.inputs["destroyGraceSeconds"]
            ), host
    if stack == "growth":
        redis_conf = next(
            u["content"]
            for u in by_host["redis-1"].inputs["uploads"]
            if u["file"].endswith(".conf")
        )
        assert "shutdown-on-sigterm save" in redis_conf


def test_volumes_are_named_from_the_stack_not_the_network() -> None:
    run = run_stack("growth", {"sikka:docker": {"network": "elsewhere"}})
    names = sorted(r.inputs["name"] for r in run.of_type(VOLUME))
    assert names == sorted(
        [f"sikka-growth-{group}-{i}-data" for group in ("etcd", "postgres") for i in range(3)]
        + [f"sikka-growth-redis-{i}-data" for i in range(3)]
        + ["sikka-growth-prometheus-data"]
    )
    assert run.of_type("docker:index/network:Network")[0].inputs["name"] == "elsewhere"


def test_protect_data_can_be_turned_off_on_purpose() -> None:
    run = run_stack("launch", {"sikka:protectData": False})
    volumes = run.of_type(VOLUME)
    assert volumes and not any(v.protect for v in volumes)
    assert all(v.retain_on_delete for v in volumes)


REFUSED: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("scale", {"sikka:redis": {"masters": 4}}, {"sikka:redis": {"masters": 3}}, "redis.masters"),
    ("scale", {}, {"sikka:postgres": {"shards": 3}}, "postgres.shards"),
    ("scale", {}, {"sikka:kubernetes": {"namespace": "sikka-moved"}}, "kubernetes.namespace"),
    ("scale", {}, {"sikka:redis": {"storageGb": 128}}, "redis.storageGb"),
    ("scale", {}, {"sikka:kubernetes": {"storageClass": "fast"}}, "kubernetes.storageClass"),
    ("scale", {}, {"sikka:redis": {"replicasPerMaster": 2}}, "redis.replicasPerMaster"),
    ("growth", {}, {"sikka:platform": "kubernetes"}, "platform"),
    # Patroni may have made any member the leader: postgres-0 alone may hold an older copy.
    (
        "growth",
        {},
        {"sikka:postgres": {"mode": "single", "readReplicas": 0, "synchronousMode": "off"}},
        "postgres.mode",
    ),
    ("growth", {}, {"sikka:postgres": {"etcdMembers": 5}}, "postgres.etcdMembers"),
    ("growth", {}, {"sikka:postgres": {"etcdMembers": 1}}, "postgres.etcdMembers"),
    (
        "scale",
        SCALE_ON_DOCKER,
        {
            "sikka:redis": {
                "mode": "sentinel",
                "masters": 0,
                "replicasPerMaster": 0,
                "replicas": 2,
                "sentinels": 3,
                "quorum": 2,
                "maxMemoryMb": 2048,
            }
        },
        "redis.mode",
    ),
]


@pytest.mark.parametrize(("stack", "base", "change", "key"), REFUSED, ids=lambda v: str(v))
def test_data_losing_change_is_refused_with_its_key(
    stack: str, base: dict, change: dict, key: str
) -> None:
    before = run_stack(stack, base)
    with pytest.raises(ConfigError) as refused:
        run_stack(stack, {**base, **change}, previous_outputs=before.exports)
    assert [i.key for i in refused.value.issues] == [f"sikka:{key}"]
    assert "README.md" in refused.value.issues[0].message
    assert refused.value.registered == []  # type: ignore[attr-defined]


def test_first_deployment_has_nothing_to_refuse() -> None:
    run = run_stack("scale", {"sikka:redis": {"masters": 3}}, previous_outputs={})
    assert run.exports["deployedShape"]["redisMasters"] == 3


def sgscript_versions(run: StackRun) -> dict[str, Any]:
    (script,) = run.of_type("kubernetes:stackgres.io/v1:SGScript")
    return {e["name"]: e.get("version") for e in script.inputs["spec"]["scripts"]}


def test_rotated_password_reruns_the_app_user_script_on_kubernetes() -> None:
    first = run_stack("scale")
    rotated = run_stack("scale", secret_values={"sikka:postgresPassword": "rotated"})
    before, after = sgscript_versions(first), sgscript_versions(rotated)
    # The entry that reads the password from its Secret runs again; the others do not.
    assert before["create-app-user"] != after["create-app-user"]
    assert before["grant-app-user"] is after["grant-app-user"] is None
    (version,) = rotated.of_type("random:index/randomInteger:RandomInteger")
    assert "keepers.postgres-password" in version.secret_paths()


def test_changed_app_user_sql_reruns_the_script_on_kubernetes() -> None:
    """A new version of the role's SQL (here: another role name; likewise new attributes)
    runs again on a running cluster, without the password changing; the same SQL does not."""
    first, again = run_stack("scale"), run_stack("scale")
    changed = run_stack("scale", {"sikka:postgres": {"user": "trips"}})
    assert sgscript_versions(first) == sgscript_versions(again)
    assert (
        sgscript_versions(first)["create-app-user"] != sgscript_versions(changed)["create-app-user"]
    )
    (version,) = changed.of_type("random:index/randomInteger:RandomInteger")
    assert "keepers.postgres-password" in version.secret_paths()
    assert len(version.inputs["keepers"]["sql-sha256"]) == 64
