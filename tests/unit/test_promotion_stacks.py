"""Transitions as stack config, under Pulumi's mock engine: the program of a target stack
(sikka:promoteFrom) reads its source's outputs through a StackReference and renders the
standby; the cut-over (sikka:promoteCutover) promotes it. The registered graphs before and
after each step are compared: no protected stateful resource (volume, SGCluster,
SGShardedCluster, claim-bearing StatefulSet) is renamed, dropped, unprotected or given any
input but the ones each step means to change."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.pulumi_stack import Registered, StackRun, run_stack

SOURCE = "organization/sikka-scaling/launch"
K8S = {"sikka:platform": "kubernetes"}
FOLLOW = {"sikka:promoteFrom": "launch"}
CUTOVER = {**FOLLOW, "sikka:promoteCutover": True}
INHERITED = {
    "gateway-jwt-secret",
    "monitoring-password",
    "postgres-password",
    "postgres-superuser-password",
    "redis-password",
    "replication-password",
}


def digest(resource: Registered) -> str:
    return inputs_digest(resource.inputs)


def inputs_digest(inputs: dict[str, Any]) -> str:
    text = json.dumps(inputs, sort_keys=True, default=str)
    text = re.sub(r"<pulumi\.output\.Unknown object at 0x[0-9a-f]+>", "<unknown>", text)
    return hashlib.sha256(text.encode()).hexdigest()


def by_urn(run: StackRun) -> dict[str, Registered]:
    return {r.urn: r for r in run.resources}


def protected(run: StackRun) -> dict[str, Registered]:
    return {r.urn: r for r in run.resources if r.protect or r.retain_on_delete}


def without(resource: Registered, *keys: str) -> str:
    """The digest of a resource's inputs less ``keys``."""
    return inputs_digest({k: v for k, v in resource.inputs.items() if k not in keys})


def changes(before: StackRun, after: StackRun) -> tuple[set[str], set[str], set[str]]:
    """(removed, added, changed inputs) resource names between two runs."""
    a, b = by_urn(before), by_urn(after)
    removed = {a[u].name for u in a if u not in b}
    added = {b[u].name for u in b if u not in a}
    changed = {a[u].name for u in a if u in b and digest(a[u]) != digest(b[u])}
    return removed, added, changed


def assert_protected_untouched(
    before: StackRun, after: StackRun, allowed: dict[str, Any] | None = None
) -> None:
    """Every protected resource keeps its URN, protect and retain flags, and its inputs; a
    resource in ``allowed`` may differ, but only by what its function strips away."""
    allowed = allowed or {}
    old, new = protected(before), protected(after)
    assert set(old) == set(new), "protected resources renamed, dropped or added"
    assert old, "no protected resource: the comparison would prove nothing"
    for urn, was in old.items():
        now = new[urn]
        assert (now.protect, now.retain_on_delete) == (was.protect, was.retain_on_delete), urn
        if digest(now) == digest(was):
            continue
        strip = allowed.get(was.name)
        assert strip is not None, f"{was.name}: inputs changed"
        assert strip(copy.deepcopy(was.inputs)) == strip(copy.deepcopy(now.inputs)), was.name


# --- Docker ----------------------------------------------------------------------------------

SENTINELS = {f"sikka-growth-redis-redis-sentinel-{i}" for i in range(3)}
REDIS_MASTER = "sikka-growth-redis-redis-0"
REDIS_VOLUMES = {f"sikka-growth-redis-redis-{i}-data" for i in range(3)}


@pytest.fixture(scope="module")
def docker() -> dict[str, StackRun]:
    source = run_stack("launch", {"sikka:promoteTo": "growth"})
    refs = {SOURCE: source.exports}
    runs = {
        "plain-launch": run_stack("launch"),
        "source": source,
        "fresh": run_stack("growth"),
        "following": run_stack("growth", FOLLOW, references=refs),
        "cutover": run_stack("growth", CUTOVER, references=refs),
    }
    # After the transition the stack file drops both keys; the stack reads its own outputs.
    runs["after"] = run_stack("growth", previous_outputs=runs["cutover"].exports)
    return runs


def container(run: StackRun, node: str) -> Registered:
    return run.named(f"sikka-{run.exports['phase']}-postgres-postgres-{node}")


def patroni(resource: Registered) -> dict[str, Any]:
    upload = next(u for u in resource.inputs["uploads"] if u["file"].endswith("patroni.yml"))
    return yaml.safe_load(upload["content"])  # type: ignore[no-any-return]


def test_the_source_exports_where_it_is_followed_from(docker: dict[str, StackRun]) -> None:
    source = docker["source"]
    assert source.exports["transition"] == {
        "stack": "launch",
        "phase": "launch",
        "platform": "docker",
        "postgres": {
            "host": "sikka-launch-postgres-0",
            "port": 5432,
            "sharded": False,
            "shards": 0,
            "database": "sikka",
        },
        "redis": {"mode": "standalone", "host": "sikka-launch-redis-0", "port": 6379},
        "docker": {"network": "sikka-launch-transition"},
    }
    assert "transition_secrets" in source.secret_exports
    assert set(source.exports["transition_secrets"]) == INHERITED
    # The plain launch exports no network (its read-write door joins none).
    assert docker["plain-launch"].exports["transition"]["docker"] == {"network": None}


def test_the_source_only_adds_its_replication_login_and_network(
    docker: dict[str, StackRun],
) -> None:
    removed, added, changed = changes(docker["plain-launch"], docker["source"])
    assert removed == set()
    assert added == {"sikka-launch-secrets-replication-password", "sikka-launch-transition-network"}
    # The primary restarts once (hba, its start script's replication login, the network),
    # the Redis master once (the network alone: its target's master follows it there).
    assert changed == {"sikka-launch-postgres-postgres-0", "sikka-launch-redis-redis-0"}
    for name in changed:
        joined = docker["source"].named(name).inputs["networksAdvanced"]
        assert joined[1] == {"name": "sikka-launch-transition", "aliases": []}
        was = docker["plain-launch"].named(name).inputs["networksAdvanced"]
        assert joined[:1] == was
    redis = docker["source"].named("sikka-launch-redis-redis-0")
    plain = docker["plain-launch"].named("sikka-launch-redis-redis-0")
    assert without(redis, "networksAdvanced") == without(plain, "networksAdvanced")
    assert_protected_untouched(docker["plain-launch"], docker["source"])


def test_the_target_follows_the_source_from_its_outputs(docker: dict[str, StackRun]) -> None:
    following = docker["following"]
    for index in range(3):
        member = container(following, str(index))
        assert patroni(member)["bootstrap"]["dcs"]["standby_cluster"] == {
            "host": "sikka-launch-postgres-0",
            "port": 5432,
            "create_replica_methods": ["basebackup"],
        }
        # The source's network, with no alias: only container names, unique, resolve there.
        assert member.inputs["networksAdvanced"] == [
            {"name": "sikka-growth", "aliases": [f"postgres-{index}"]},
            {"name": "sikka-launch-transition", "aliases": []},
        ]
    joined = [
        r.name
        for r in following.of_type("docker:index/container:Container")
        if len(r.inputs["networksAdvanced"]) > 1
    ]
    assert sorted(joined) == [
        *(f"sikka-growth-postgres-postgres-{i}" for i in range(3)),
        "sikka-growth-redis-redis-0",
    ]


def test_the_target_inherits_the_source_secrets_as_secrets(docker: dict[str, StackRun]) -> None:
    following, source = docker["following"], docker["source"]
    assert following.exports["transition_inherited"] == sorted(INHERITED)
    passwords = following.of_type("random:index/randomPassword:RandomPassword")
    assert not any(r.name.endswith(tuple(INHERITED)) for r in passwords)
    member = container(following, "0")
    replication = source.exports["transition_secrets"]["replication-password"]
    assert f"PATRONI_REPLICATION_PASSWORD={replication}" in member.inputs["envs"]
    assert "envs" in member.secret_paths()
    # The program never puts a secret into a file or a command line.
    text = json.dumps({k: v for k, v in member.inputs.items() if k != "envs"}, default=str)
    assert replication not in text


def test_a_secret_in_the_target_config_wins_over_the_inherited_one() -> None:
    source = run_stack("launch", {"sikka:promoteTo": "growth"})
    run = run_stack(
        "growth",
        {**FOLLOW, "sikka:redisPassword": "own-redis-password"},
        secret_values={"sikka:redisPassword": "own-redis-password"},
        references={SOURCE: source.exports},
    )
    redis = run.named("sikka-growth-redis-redis-0")
    assert "REDIS_PASSWORD=own-redis-password" in redis.inputs["envs"]
    assert "redis-password" not in run.exports["transition_inherited"]


def test_following_leaves_every_protected_resource_as_it_was(docker: dict[str, StackRun]) -> None:
    """Adding sikka:promoteFrom: the volumes keep their URNs, flags and inputs; the passwords
    the source hands over replace the generated ones; the containers that read them (or,
    Patroni's members, patroni.yml and the network) change, and only those."""
    removed, added, changed = changes(docker["fresh"], docker["following"])
    # The Sentinels too: none runs while the master replicates the source.
    assert removed == {f"sikka-growth-secrets-{s}" for s in INHERITED} | SENTINELS
    assert added == set()
    assert changed, "nothing changed: the target would not follow"
    fresh = {r.name: r for r in docker["fresh"].resources}
    for name in changed:
        assert fresh[name].type == "docker:index/container:Container", name
    assert_protected_untouched(docker["fresh"], docker["following"])


def test_the_members_differ_by_the_standby_and_the_network_alone(
    docker: dict[str, StackRun],
) -> None:
    for index in range(3):
        fresh, following = (
            container(docker["fresh"], str(index)),
            container(docker["following"], str(index)),
        )
        was, now = patroni(fresh), patroni(following)
        assert now["bootstrap"]["dcs"].pop("standby_cluster")
        assert was == now
        assert following.inputs["networksAdvanced"][:1] == fresh.inputs["networksAdvanced"]


PROMOTER = "sikka-growth-postgres-postgres-promote"
REDIS_PROMOTER = "sikka-growth-redis-redis-promote"


def test_the_cutover_adds_the_guards_and_the_sentinels(docker: dict[str, StackRun]) -> None:
    """Besides them only the Redis master changes: it restarts without --replicaof."""
    removed, added, changed = changes(docker["following"], docker["cutover"])
    assert (removed, changed) == (set(), {"sikka-growth-redis-redis-0"})
    assert added == {PROMOTER, REDIS_PROMOTER} | SENTINELS
    promoter = docker["cutover"].named(PROMOTER)
    assert not promoter.protect and promoter.inputs.get("volumes") in (None, [])
    assert promoter.inputs["mustRun"] is False and promoter.inputs["restart"] == "no"
    # `pulumi up` waits for its end and keeps its output (the reason of a refusal).
    assert promoter.inputs["attach"] is True and promoter.inputs["logs"] is True
    script = promoter.inputs["entrypoints"][-1]
    assert '{"standby_cluster":null}' in script
    # It stops writes on the source's read-write door first, over the source's network.
    assert "SOURCE_HOST=sikka-launch-postgres-0\nSOURCE_PORT=5432\n" in script
    assert "ALTER SYSTEM SET default_transaction_read_only = on" in script
    assert script.index("default_transaction_read_only = on") < script.index("until promote")
    assert promoter.inputs["networksAdvanced"][1] == {
        "name": "sikka-launch-transition",
        "aliases": [],
    }
    # It waits for every member (they must be up to take the change).
    members = {container(docker["cutover"], str(i)).urn for i in range(3)}
    assert members <= set(promoter.depends_on)
    assert_protected_untouched(docker["following"], docker["cutover"])


def test_the_guards_read_their_passwords_from_secret_variables(
    docker: dict[str, StackRun],
) -> None:
    """The source's superuser password (inherited) and Redis password reach the guards as
    secret environment variables alone: never in their scripts or any other input."""
    cutover, source = docker["cutover"], docker["source"]
    inherited = source.exports["transition_secrets"]
    for name, secret, variable in (
        (PROMOTER, "postgres-superuser-password", "POSTGRES_PASSWORD"),
        (REDIS_PROMOTER, "redis-password", "REDIS_PASSWORD"),
    ):
        guard = cutover.named(name)
        assert f"{variable}={inherited[secret]}" in guard.inputs["envs"], name
        assert "envs" in guard.secret_paths()
        text = json.dumps({k: v for k, v in guard.inputs.items() if k != "envs"}, default=str)
        assert inherited[secret] not in text, name


def test_the_redis_master_is_replaced_only_after_its_guard(docker: dict[str, StackRun]) -> None:
    """The order at the cut-over: PostgreSQL's guard, then Redis's, then the master's
    replacement, then the Sentinels."""
    cutover = docker["cutover"]
    guard, master = cutover.named(REDIS_PROMOTER), cutover.named(REDIS_MASTER)
    assert guard.urn in master.depends_on
    assert cutover.named(PROMOTER).urn in guard.depends_on
    assert guard.inputs["attach"] is True and guard.inputs["mustRun"] is False
    script = guard.inputs["entrypoints"][-1]
    assert "-h sikka-launch-redis-0 -p 6379" in script
    assert "-h redis-0 -p 6379" in script
    assert script.index("pause") < script.index("replicaof no one")
    assert guard.inputs["networksAdvanced"][1] == {"name": "sikka-launch-transition", "aliases": []}
    # Redis's own order, checked elsewhere: the Sentinels after the master.
    for name in SENTINELS:
        assert master.urn in cutover.named(name).depends_on


def _failing(guard: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mock engine reports ``guard``'s run as refused (exit 1, its output)."""
    from components import offline_preview

    original = offline_preview.Recorder.new_resource

    def new_resource(self: Any, args: Any) -> tuple[str, dict[str, Any]]:
        resource_id, state = original(self, args)
        if args.name == guard:
            state = {
                **state,
                "exitCode": 1,
                "containerLogs": "cut-over refused: the target replayed up to 5 of 9 in 60 s\n",
            }
        return resource_id, state

    monkeypatch.setattr(offline_preview.Recorder, "new_resource", new_resource)


@pytest.mark.parametrize("guard", [PROMOTER, REDIS_PROMOTER])
def test_a_refused_guard_fails_the_update_before_the_master_is_replaced(
    guard: str, docker: dict[str, StackRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    _failing(guard, monkeypatch)
    refs = {SOURCE: docker["source"].exports}
    with pytest.raises(Exception, match=r"exited 1.*\n.*replayed up to 5 of 9") as error:
        run_stack("growth", CUTOVER, references=refs)
    assert "pulumi up --replace" in str(error.value)


def test_finishing_the_transition_rotates_no_password(docker: dict[str, StackRun]) -> None:
    """Removing both keys after the cut-over: the stack keeps the passwords it inherited
    (from its own last outputs); only the members change (standby and network gone)."""
    removed, added, changed = changes(docker["cutover"], docker["after"])
    assert removed == {PROMOTER, REDIS_PROMOTER}
    assert added == set()
    assert changed == {f"sikka-growth-postgres-postgres-{i}" for i in range(3)}
    assert (
        docker["after"].exports["transition_secrets"]
        == docker["cutover"].exports["transition_secrets"]
    )
    assert_protected_untouched(docker["cutover"], docker["after"])


def test_the_target_redis_master_replicates_the_source_master(
    docker: dict[str, StackRun],
) -> None:
    following, source = docker["following"], docker["source"]
    master = following.named(REDIS_MASTER)
    script = master.inputs["entrypoints"][2]
    address = source.exports["transition"]["redis"]
    assert (address["host"], address["port"]) == ("sikka-launch-redis-0", 6379)
    # It tells the source its container name: `redis-0` would name the source's own master.
    assert (
        '|| set -- "$@" --replicaof sikka-launch-redis-0 6379'
        " --replica-announce-ip sikka-growth-redis-0\n"
    ) in script
    # It reaches the source's master over the source's transition network, no alias there.
    assert master.inputs["networksAdvanced"][1] == {
        "name": "sikka-launch-transition",
        "aliases": [],
    }
    # masterauth is the source's password (inherited), from the secret environment alone.
    password = source.exports["transition_secrets"]["redis-password"]
    assert f"REDIS_PASSWORD={password}" in master.inputs["envs"]
    assert "envs" in master.secret_paths()
    assert 'masterauth "%s"' in script
    text = json.dumps({k: v for k, v in master.inputs.items() if k != "envs"}, default=str)
    assert password not in text
    # Its replicas chain from it as in any growth phase: their containers are the fresh ones
    # but for the inherited password.
    for index in (1, 2):
        name = f"sikka-growth-redis-redis-{index}"
        assert without(following.named(name), "envs") == without(
            docker["fresh"].named(name), "envs"
        )
        assert "--replicaof sikka-launch" not in following.named(name).inputs["entrypoints"][2]


def test_no_sentinel_runs_while_following(docker: dict[str, StackRun]) -> None:
    names = {r.name for r in docker["following"].of_type("docker:index/container:Container")}
    assert names.isdisjoint(SENTINELS)
    assert not any("sentinel" in name for name in names)
    # The fresh phase and the promoted one run them.
    for run in (docker["fresh"], docker["cutover"], docker["after"]):
        running = {r.name for r in run.of_type("docker:index/container:Container")}
        assert running >= SENTINELS


def test_at_the_cutover_the_master_runs_on_its_own_and_the_sentinels_start(
    docker: dict[str, StackRun],
) -> None:
    cutover, fresh = docker["cutover"], docker["fresh"]
    master = cutover.named(REDIS_MASTER)
    assert "--replicaof sikka-launch" not in master.inputs["entrypoints"][2]
    assert master.inputs["entrypoints"] == fresh.named(REDIS_MASTER).inputs["entrypoints"]
    assert master.inputs["networksAdvanced"] == fresh.named(REDIS_MASTER).inputs["networksAdvanced"]
    # The same volume, by the same name: the promoted master starts on the replicated data.
    volume = {"volumeName": "sikka-growth-redis-0-data", "containerPath": "/data"}
    following = docker["following"].named(REDIS_MASTER)
    assert volume in master.inputs["volumes"] and volume in following.inputs["volumes"]
    # The replaced container stops the way Redis saves its data (SHUTDOWN SAVE on SIGTERM).
    assert master.inputs["stopSignal"] == "SIGTERM" and master.inputs["destroyGraceSeconds"] > 0
    for name in SENTINELS:
        assert master.urn in cutover.named(name).depends_on
    # Removing the keys afterwards changes no Redis container.
    _, _, changed = changes(cutover, docker["after"])
    assert not any("redis" in name for name in changed)


def test_the_redis_volumes_stay_through_every_step(docker: dict[str, StackRun]) -> None:
    """fresh, following, cut-over and after: the Redis data volumes keep their URN, their
    protect and retain flags and their inputs (the name from the stack and the node)."""
    runs = [docker[k] for k in ("fresh", "following", "cutover", "after")]
    volumes = [
        {r.name: r for r in run.of_type("docker:index/volume:Volume") if r.name in REDIS_VOLUMES}
        for run in runs
    ]
    assert set(volumes[0]) == REDIS_VOLUMES
    for before, after in itertools.pairwise(volumes):
        for name, was in before.items():
            now = after[name]
            assert now.protect and now.retain_on_delete, name
            assert (now.urn, digest(now)) == (was.urn, digest(was)), name
    for before, after in itertools.pairwise(runs):
        assert_protected_untouched(before, after)


# --- Docker, onto a Redis Cluster ------------------------------------------------------------

SCALE_ON_DOCKER = {
    "sikka:platform": "docker",
    "sikka:autoscaling": {"enabled": False},
    "sikka:postgres": {"mode": "replicated"},
}
SCALE_FORCED = {**SCALE_ON_DOCKER, "sikka:promoteForce": True}
IMPORTER = "sikka-scale-redis-redis-import"


@pytest.fixture(scope="module")
def docker_scale() -> dict[str, StackRun]:
    """launch → scale on Docker (a phase skipped, so forced): the Redis Cluster target."""
    source = run_stack("launch", {"sikka:promoteTo": "scale"})
    refs = {SOURCE: source.exports}
    return {
        "source": source,
        "following": run_stack("scale", {**SCALE_FORCED, **FOLLOW}, references=refs),
        "cutover": run_stack("scale", {**SCALE_FORCED, **CUTOVER}, references=refs),
    }


def test_the_cluster_target_imports_the_keys_at_the_cutover(
    docker_scale: dict[str, StackRun],
) -> None:
    following, cutover = docker_scale["following"], docker_scale["cutover"]
    assert IMPORTER not in {r.name for r in following.resources}
    importer = cutover.named(IMPORTER)
    # A guard: run to its end within `pulumi up`, after PostgreSQL's cut-over and the
    # cluster's init; over the source's transition network.
    assert importer.inputs["attach"] is True and importer.inputs["mustRun"] is False
    assert cutover.named("sikka-scale-postgres-postgres-promote").urn in importer.depends_on
    assert cutover.named("sikka-scale-redis-redis-cluster-init").urn in importer.depends_on
    networks = [n["name"] for n in importer.inputs["networksAdvanced"]]
    assert networks[1:] == ["sikka-launch-transition"]
    script = importer.inputs["entrypoints"][-1]
    assert "SOURCE_HOST=sikka-launch-redis-0" in script
    assert 'SEEDS="redis-0:6379 redis-2:6379 redis-4:6379"' in script
    assert script.index("client pause") < script.index("RESTORE") < script.rindex("handed_over=1")
    assert {"REDIS_PASSWORD"} <= {e.split("=", 1)[0] for e in importer.inputs["envs"]}
    # The cluster's data nodes are the same before and after: nothing stateful changes.
    assert_protected_untouched(following, cutover)


def test_a_refused_import_fails_the_update(
    docker_scale: dict[str, StackRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    _failing(IMPORTER, monkeypatch)
    refs = {SOURCE: docker_scale["source"].exports}
    with pytest.raises(Exception, match=r"redis-import exited 1") as error:
        run_stack("scale", {**SCALE_FORCED, **CUTOVER}, references=refs)
    assert "pulumi up --replace" in str(error.value)


# --- Kubernetes ------------------------------------------------------------------------------

SG_CLUSTER = "kubernetes:stackgres.io/v1:SGCluster"
SG_SHARDED = "kubernetes:stackgres.io/v1alpha1:SGShardedCluster"
SOURCE_USERS = ("kubernetes:core/v1:Secret", "sikka-launch/postgres")


def without_replicate_from(inputs: dict[str, Any]) -> dict[str, Any]:
    inputs["spec"].pop("replicateFrom", None)
    return inputs


def redis_template(inputs: dict[str, Any]) -> dict[str, Any]:
    """A Redis StatefulSet less its pods' start command and replica count: what the
    cut-over changes. Its claims, selector and service name (immutable) stay compared."""
    spec = inputs["spec"]
    spec.pop("replicas")
    spec["template"]["metadata"].pop("annotations", None)
    for c in spec["template"]["spec"]["containers"]:
        c.pop("command", None)
        c.pop("args", None)
    return inputs


@pytest.fixture(scope="module")
def kubernetes() -> dict[str, StackRun]:
    source = run_stack("launch", {**K8S, "sikka:promoteTo": "growth"})
    refs = {SOURCE: source.exports}
    users = {"data": {"superuser-password": "c291cmNl"}}  # what the read returns
    reads = {SOURCE_USERS: users}
    runs = {
        "plain-launch": run_stack("launch", K8S),
        "source": source,
        "fresh": run_stack("growth", K8S),
        "following": run_stack("growth", {**K8S, **FOLLOW}, references=refs, reads=reads),
        "cutover": run_stack("growth", {**K8S, **CUTOVER}, references=refs, reads=reads),
    }
    runs["after"] = run_stack("growth", K8S, previous_outputs=runs["cutover"].exports)
    return runs


def cluster(run: StackRun) -> Registered:
    (found,) = run.of_type(SG_CLUSTER)
    return found


def test_the_sgcluster_replicates_from_the_source_cluster(kubernetes: dict[str, StackRun]) -> None:
    spec = cluster(kubernetes["following"]).inputs["spec"]
    assert spec["replicateFrom"]["instance"] == {
        "external": {"host": "postgres.sikka-launch.svc.cluster.local", "port": 5433}
    }
    users = spec["replicateFrom"]["users"]
    assert set(users) == {"superuser", "replication", "authenticator"}
    assert users["replication"]["password"] == {
        "name": "postgres-source-users",
        "key": "replication-password",
    }
    # The users' Secret is a copy of the source cluster's own, made in this namespace.
    copy_of = kubernetes["following"].named("sikka-growth-postgres-secret-postgres-source-users")
    assert copy_of.inputs["metadata"]["namespace"] == "sikka-growth"
    assert copy_of.inputs["data"] == {"superuser-password": "c291cmNl"}
    assert "data" in copy_of.secret_paths()
    assert copy_of.urn in cluster(kubernetes["following"]).depends_on
    # The database comes with the data: no CREATE DATABASE on the target.
    (script,) = kubernetes["following"].of_type("kubernetes:stackgres.io/v1:SGScript")
    assert "create-app-database" not in json.dumps(script.inputs)


def test_the_cutover_removes_replicate_from_and_starts_the_sentinels(
    kubernetes: dict[str, StackRun],
) -> None:
    promoted = cluster(kubernetes["cutover"])
    assert "replicateFrom" not in promoted.inputs["spec"]
    assert promoted.protect and promoted.retain_on_delete
    removed, added, changed = changes(kubernetes["following"], kubernetes["cutover"])
    # The guards come (the source's users stay for them), nothing goes.
    assert removed == set()
    assert added == {PG_GUARD, REDIS_GUARD}
    assert changed == {
        "sikka-growth-postgres-sgcluster-postgres",
        "sikka-growth-redis-statefulset-redis",
        "sikka-growth-redis-statefulset-redis-sentinel",
    }
    sets = {r.name: r for r in kubernetes["following"].of_type("kubernetes:apps/v1:StatefulSet")}
    assert sets["sikka-growth-redis-statefulset-redis-sentinel"].inputs["spec"]["replicas"] == 0
    # The Sentinels start once the Redis pods no longer follow the source.
    sentinels = kubernetes["cutover"].named("sikka-growth-redis-statefulset-redis-sentinel")
    data = kubernetes["cutover"].named("sikka-growth-redis-statefulset-redis")
    assert data.urn in sentinels.depends_on
    command = json.dumps(sets["sikka-growth-redis-statefulset-redis"].inputs["spec"]["template"])
    assert "--replicaof redis-0.redis-headless.sikka-launch.svc.cluster.local 6379" in command
    allowed = {
        "sikka-growth-postgres-sgcluster-postgres": without_replicate_from,
        "sikka-growth-redis-statefulset-redis": redis_template,
        "sikka-growth-redis-statefulset-redis-sentinel": redis_template,
    }
    assert_protected_untouched(kubernetes["following"], kubernetes["cutover"], allowed)


def test_following_changes_the_clusters_by_replicate_from_alone(
    kubernetes: dict[str, StackRun],
) -> None:
    allowed = {
        "sikka-growth-postgres-sgcluster-postgres": without_replicate_from,
        "sikka-growth-redis-statefulset-redis": redis_template,
        "sikka-growth-redis-statefulset-redis-sentinel": redis_template,
    }
    assert_protected_untouched(kubernetes["fresh"], kubernetes["following"], allowed)
    assert_protected_untouched(kubernetes["cutover"], kubernetes["after"])
    # No password rotates when the keys are removed after the cut-over, and the database
    # that came with the data is not created again.
    removed, added, changed = changes(kubernetes["cutover"], kubernetes["after"])
    assert removed == {"sikka-growth-postgres-secret-postgres-source-users", PG_GUARD, REDIS_GUARD}
    assert (added, changed) == (set(), set())


PG_GUARD = "sikka-growth-postgres-job-postgres-promote"
REDIS_GUARD = "sikka-growth-redis-job-redis-promote"


def test_the_cutover_waits_for_its_guards(kubernetes: dict[str, StackRun]) -> None:
    """The SGCluster loses replicateFrom only after the PostgreSQL guard (the source frozen,
    its last position replayed); the Redis guard runs after it, and the Redis pods roll
    without --replicaof only after the Redis guard promoted the master."""
    cutover = kubernetes["cutover"]
    pg_guard, redis_guard = cutover.named(PG_GUARD), cutover.named(REDIS_GUARD)
    assert pg_guard.urn in cluster(cutover).depends_on
    assert pg_guard.urn in redis_guard.depends_on
    assert redis_guard.urn in cutover.named("sikka-growth-redis-statefulset-redis").depends_on
    for job in (pg_guard, redis_guard):
        assert job.inputs["spec"]["backoffLimit"] == 0
        assert job.inputs["metadata"]["annotations"] == {"pulumi.com/replaceUnready": "true"}
        assert job.inputs["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    (container,) = pg_guard.inputs["spec"]["template"]["spec"]["containers"]
    script = container["command"][-1]
    assert "src() { psql_on postgres.sikka-launch.svc.cluster.local 5433" in script
    assert "dst() { psql_on postgres.sikka-growth.svc.cluster.local 5433" in script
    assert {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]} == {
        "SUPERUSER": "postgres-source-users",
        "SUPERUSER_PASSWORD": "postgres-source-users",
    }
    (container,) = redis_guard.inputs["spec"]["template"]["spec"]["containers"]
    script = container["command"][-1]
    assert "-h redis-0.redis-headless.sikka-launch.svc.cluster.local -p 6379" in script
    assert "-h redis-0.redis-headless.sikka-growth.svc.cluster.local -p 6379" in script
    # The guards' pods are admitted where they connect: the source's policies name the
    # target namespace's postgres and redis pods, which the guards' labels make them.
    assert (
        pg_guard.inputs["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        == "postgres"
    )
    assert (
        redis_guard.inputs["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        == "redis"
    )


def test_the_source_admits_its_target_namespace(kubernetes: dict[str, StackRun]) -> None:
    removed, added, changed = changes(kubernetes["plain-launch"], kubernetes["source"])
    assert (removed, added) == (set(), set())
    assert changed == {
        "sikka-launch-postgres-networkpolicy-postgres-ingress",
        "sikka-launch-redis-networkpolicy-redis-ingress",
    }
    policy = kubernetes["source"].named("sikka-launch-postgres-networkpolicy-postgres-ingress")
    peers = policy.inputs["spec"]["ingress"][0]["from"]
    target = {"matchLabels": {"kubernetes.io/metadata.name": "sikka-growth"}}
    assert any(p.get("namespaceSelector") == target for p in peers)
    assert_protected_untouched(kubernetes["plain-launch"], kubernetes["source"])


def test_a_sharded_target_follows_a_sharded_source_group_by_group(tmp_path: Path) -> None:
    source = run_stack("scale")
    target = tmp_path / "Pulumi.scale-eu.yaml"
    target.write_text(
        "config:\n  sikka:phase: scale\n  sikka:platform: kubernetes\n"
        "  sikka:promoteFrom: scale\n  sikka:promoteForce: true\n"
    )
    reads = {("kubernetes:core/v1:Secret", "sikka-scale/postgres"): {"data": {}}}
    run = run_stack(
        "scale-eu",
        stack_file=target,
        references={"organization/sikka-scaling/scale": source.exports},
        reads=reads,
    )
    (sharded,) = run.of_type(SG_SHARDED)
    external = sharded.inputs["spec"]["replicateFrom"]["instance"]["external"]
    assert external["hosts"] == [
        "postgres.sikka-scale.svc.cluster.local",
        *(f"postgres-shard{i}.sikka-scale.svc.cluster.local" for i in range(4)),
    ]
    assert external["ports"] == [5433] * 5
    assert sharded.protect and sharded.retain_on_delete


# --- refusals at run time --------------------------------------------------------------------


def test_a_source_on_another_platform_is_refused() -> None:
    source = run_stack("launch", {"sikka:promoteTo": "growth"})  # Docker
    with pytest.raises(Exception, match="runs on 'docker', this stack on 'kubernetes'"):
        run_stack(
            "growth",
            {**K8S, **FOLLOW},
            references={SOURCE: source.exports},
            reads={SOURCE_USERS: {"data": {}}},
        )


def test_a_source_without_the_outputs_is_refused() -> None:
    # An older source, or another project's stack: no transition outputs, nothing to follow.
    with pytest.raises(Exception, match=r"stack 'organization/sikka-scaling/launch' exports no"):
        run_stack("growth", FOLLOW, references={SOURCE: {"phase": "launch"}})


def test_a_docker_source_without_promote_to_is_named() -> None:
    """The source must have joined its transition network (sikka:promoteTo) first."""
    source = run_stack("launch")
    with pytest.raises(Exception, match=r"launch'.* no .*: set sikka:promoteTo"):
        run_stack("growth", FOLLOW, references={SOURCE: source.exports})
    # Its secrets there, the network alone missing: named too.
    exports = {
        **source.exports,
        "transition_secrets": run_stack("launch", {"sikka:promoteTo": "growth"}).exports[
            "transition_secrets"
        ],
    }
    with pytest.raises(Exception, match=r"has no docker\.network: set sikka:promoteTo"):
        run_stack("growth", FOLLOW, references={SOURCE: exports})


def test_the_offline_preview_evaluates_the_source_beside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sikka-scaling preview` of a target reads its source's outputs from the source's own
    stack file, evaluated the same way: the promoter shows, nothing else is needed."""
    from scaling.cli import main

    (tmp_path / "Pulumi.launch.yaml").write_text(
        "config:\n  sikka:phase: launch\n  sikka:promoteTo: growth\n"
    )
    target = tmp_path / "Pulumi.growth.yaml"
    target.write_text(
        "config:\n  sikka:phase: growth\n  sikka:promoteFrom: launch\n"
        "  sikka:promoteCutover: true\n"
    )
    assert main(["preview", str(target), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    names = {row["name"] for row in document["resources"]}
    assert "sikka-growth-postgres-postgres-promote" in names
    assert "transition_secrets" in document["secret_exports"]
