"""growth → scale on Kubernetes, under Pulumi's mock engine: a Citus target (SGShardedCluster)
follows a plain source (SGCluster) by logical replication into its coordinator.

The scale stack with sikka:promoteFrom renders its SGShardedCluster as a fresh phase does
(no replicateFrom) plus the follow Job and its scripts; sikka:promoteCutover swaps the Job
for the cut-over Job; removing the keys removes both. No stateful resource (the Namespace,
the SGShardedCluster, the Redis StatefulSets and their claims) changes its URN, protection
or any input across fresh → following → cut-over → after."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.pulumi_stack import Registered, StackRun, run_stack
from test_promotion_stacks import assert_protected_untouched, by_urn, changes, digest

from scaling.kubernetes.logical import CUTOVER_JOB, FOLLOW_JOB
from scaling.kubernetes.postgres import SOURCE_USERS_SECRET
from scaling.render.logical_transition import ENVIRONMENT, cutover_script, follow_script
from scaling.stackconfig import parse

SOURCE = "organization/sikka-scaling/growth"


def parse_values(stack: str, overrides: dict[str, Any]) -> Any:
    """The phase as the program reads it (the scale stack file's own keys, and
    ``overrides``)."""
    values = {"sikka:phase": "scale", "sikka:platform": "kubernetes"}
    return parse({**values, **overrides}, stack=stack)


K8S = {"sikka:platform": "kubernetes"}
DISTRIBUTION = {
    "sikka:postgres": {
        "distributionColumns": {"trips": "city_id", "app.payments": "city_id"},
        "referenceTables": ["cities"],
    }
}
FOLLOW = {**DISTRIBUTION, "sikka:promoteFrom": "growth"}
CUTOVER = {**FOLLOW, "sikka:promoteCutover": True}
SG_SHARDED = "kubernetes:stackgres.io/v1alpha1:SGShardedCluster"
JOB = "kubernetes:batch/v1:Job"
USERS_READ = ("kubernetes:core/v1:Secret", "sikka-growth/postgres")
CONFIG = "sikka-scale-postgres-configmap-postgres-transition"
USERS = f"sikka-scale-postgres-secret-{SOURCE_USERS_SECRET}"


@pytest.fixture(scope="module")
def runs() -> dict[str, StackRun]:
    source = run_stack("growth", {**K8S, "sikka:promoteTo": "scale"})
    refs = {SOURCE: source.exports}
    reads = {USERS_READ: {"data": {"superuser-password": "c291cmNl"}}}
    found = {
        "plain-growth": run_stack("growth", K8S),
        "source": source,
        "plain-scale": run_stack("scale"),
        "fresh": run_stack("scale", DISTRIBUTION),
        "following": run_stack("scale", FOLLOW, references=refs, reads=reads),
        "cutover": run_stack("scale", CUTOVER, references=refs, reads=reads),
    }
    found["after"] = run_stack("scale", DISTRIBUTION, previous_outputs=found["cutover"].exports)
    return found


def sharded(run: StackRun) -> Registered:
    (found,) = run.of_type(SG_SHARDED)
    return found


def jobs(run: StackRun) -> dict[str, Registered]:
    return {r.inputs["metadata"]["name"]: r for r in run.of_type(JOB)}


def env(job: Registered) -> dict[str, Any]:
    (container,) = job.inputs["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item for item in container["env"]}


def test_the_sharded_cluster_is_created_fresh_not_as_a_standby(runs: dict[str, StackRun]) -> None:
    for step in ("following", "cutover", "after"):
        spec = sharded(runs[step]).inputs["spec"]
        assert "replicateFrom" not in spec, step
        assert digest(sharded(runs[step])) == digest(sharded(runs["fresh"])), step
    # The distribution keys alone change nothing on a stack that follows no source.
    assert changes(runs["plain-scale"], runs["fresh"]) == (set(), set(), set())


def test_following_renders_the_follow_job_with_the_source_from_its_outputs(
    runs: dict[str, StackRun],
) -> None:
    run = runs["following"]
    assert set(jobs(run)) - {"redis-cluster-init"} == {FOLLOW_JOB}
    job = jobs(run)[FOLLOW_JOB]
    variables = env(job)
    assert set(ENVIRONMENT) <= set(variables)  # what the scripts refuse to start without
    assert variables["SOURCE_HOST"]["value"] == "postgres.sikka-growth.svc.cluster.local"
    assert variables["SOURCE_DATABASE"]["value"] == "sikka"
    assert variables["SOURCE_PORT"]["value"] == variables["TARGET_PORT"]["value"] == "5433"
    assert variables["TARGET_HOST"]["value"] == "postgres.sikka-scale.svc.cluster.local"
    # Passwords and users only by reference to Secrets: the source's (copied here) and
    # the one StackGres generates for the sharded cluster.
    assert variables["SOURCE_PASSWORD"] == {
        "name": "SOURCE_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": SOURCE_USERS_SECRET, "key": "superuser-password"}},
    }
    assert variables["TARGET_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "postgres"
    assert all("value" not in v for k, v in variables.items() if k.endswith(("PASSWORD", "USER")))
    # The Job runs after the cluster is declared and the source's users are copied.
    copied = run.named(USERS)
    assert copied.inputs["metadata"]["namespace"] == "sikka-scale"
    assert {sharded(run).urn, copied.urn} <= set(job.depends_on)
    assert job.inputs["metadata"]["annotations"] == {"pulumi.com/replaceUnready": "true"}
    pod = job.inputs["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    # Its pods carry the postgres component, which the source's NetworkPolicy admits.
    labels = job.inputs["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "postgres"
    scripts = run.named(CONFIG).inputs["data"]
    # The very text tests/integration/test_transition_logical.py runs on real servers.
    assert scripts == {
        "follow.sh": follow_script(),
        "cutover.sh": cutover_script(parse_values("scale", FOLLOW)),
    }
    assert "CREATE SUBSCRIPTION sikka_transition" in scripts["follow.sh"]
    assert "copy_data = true" in scripts["follow.sh"]
    assert "pg_dump --schema-only" in scripts["follow.sh"]


def test_the_source_admits_the_target_and_changes_nothing_else(
    runs: dict[str, StackRun],
) -> None:
    removed, added, changed = changes(runs["plain-growth"], runs["source"])
    assert (removed, added) == (set(), set())
    assert changed == {
        "sikka-growth-postgres-networkpolicy-postgres-ingress",
        "sikka-growth-redis-networkpolicy-redis-ingress",
    }
    policy = runs["source"].named("sikka-growth-postgres-networkpolicy-postgres-ingress")
    peers = policy.inputs["spec"]["ingress"][0]["from"]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "sikka-scale"}},
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/part-of": "sikka-scaling",
                "app.kubernetes.io/component": "postgres",
            }
        },
    } in peers
    # The source's cluster (and so its wal_level, StackGres's "logical") is untouched.
    assert_protected_untouched(runs["plain-growth"], runs["source"])
    assert runs["source"].exports["transition"]["postgres"]["database"] == "sikka"


def test_the_cutover_swaps_the_follow_job_for_the_cutover_job(runs: dict[str, StackRun]) -> None:
    removed, added, changed = changes(runs["following"], runs["cutover"])
    assert removed == {f"sikka-scale-postgres-job-{FOLLOW_JOB}"}
    # The Redis Cluster's keys come at the cut-over (scaling.render.redis_import).
    assert added == {
        f"sikka-scale-postgres-job-{CUTOVER_JOB}",
        "sikka-scale-redis-job-redis-import",
    }
    assert changed == set()
    importer = jobs(runs["cutover"])["redis-import"]
    # After PostgreSQL's cut-over: a refused one leaves the keys with the source too.
    assert jobs(runs["cutover"])[CUTOVER_JOB].urn in importer.depends_on
    assert importer.inputs["spec"]["backoffLimit"] == 0
    assert importer.inputs["metadata"]["annotations"] == {"pulumi.com/replaceUnready": "true"}
    pod = importer.inputs["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (script,) = [c["command"][-1] for c in pod["containers"]]
    # The source's master, filled from the source stack's outputs; the cluster's masters.
    assert "SOURCE_HOST=redis-0.redis-headless.sikka-growth.svc.cluster.local" in script
    assert "redis-0.redis-headless.sikka-scale.svc.cluster.local:6379" in script
    assert "@@source" not in script
    job = jobs(runs["cutover"])[CUTOVER_JOB]
    assert job.inputs["spec"]["backoffLimit"] == 0
    (container,) = job.inputs["spec"]["template"]["spec"]["containers"]
    assert container["command"][-1].endswith("/cutover.sh")
    cutover = runs["cutover"].named(CONFIG).inputs["data"]["cutover.sh"]
    assert "create_distributed_table_concurrently('\"public\".\"trips\"', 'city_id')" in cutover
    assert "create_distributed_table_concurrently('\"app\".\"payments\"', 'city_id')" in cutover
    assert 'create_reference_table(\'"public"."cities"\')' in cutover
    assert "ALTER SYSTEM SET default_transaction_read_only = on" in cutover
    assert "freeze_source" in cutover and "thaw_source" in cutover


def test_no_stateful_resource_changes_through_the_transition(runs: dict[str, StackRun]) -> None:
    for before, after in (
        ("fresh", "following"),
        ("following", "cutover"),
        ("cutover", "after"),
        ("fresh", "after"),
    ):
        assert_protected_untouched(runs[before], runs[after])
    protected = {r.name for r in runs["following"].resources if r.protect}
    assert "sikka-scale-postgres-sgshardedcluster-postgres" in protected
    assert any("statefulset-redis" in name for name in protected)
    # After the transition the stack is the fresh phase again: the Jobs, their scripts and
    # the copied users are gone, nothing else differs.
    removed, added, changed = changes(runs["cutover"], runs["after"])
    assert removed == {
        f"sikka-scale-postgres-job-{CUTOVER_JOB}",
        "sikka-scale-redis-job-redis-import",
        CONFIG,
        USERS,
    }
    assert (added, changed) == (set(), set())
    # Against a fresh phase: only the passwords it would draw are missing (they came from
    # the source, whose application keeps using them).
    after, fresh = by_urn(runs["after"]), by_urn(runs["fresh"])
    assert set(after) < set(fresh)
    assert {fresh[u].type for u in set(fresh) - set(after)} == {
        "random:index/randomPassword:RandomPassword"
    }


def test_a_sharded_source_named_as_a_growth_stack_is_refused(runs: dict[str, StackRun]) -> None:
    exports = json.loads(json.dumps(runs["source"].exports))
    exports["transition"]["postgres"]["sharded"] = True
    with pytest.raises(Exception, match="runs a sharded PostgreSQL; this stack follows a plain"):
        run_stack("scale", FOLLOW, references={SOURCE: exports}, reads={USERS_READ: {"data": {}}})


def test_the_distribution_keys_are_validated_with_their_key() -> None:
    from scaling.issues import ConfigError

    def problems(phase: str, postgres: dict[str, Any]) -> str:
        values = {"sikka:phase": phase, "sikka:platform": "kubernetes", "sikka:postgres": postgres}
        with pytest.raises(ConfigError) as caught:
            parse(values, stack=phase)
        return str(caught.value)

    said = problems("growth", {"distributionColumns": {"trips": "city_id"}})
    assert "Pulumi.growth.yaml: sikka:postgres.distributionColumns: spreads tables over" in said
    said = problems("scale", {"distributionColumns": {"Trips": "city-id"}})
    assert "sikka:postgres.distributionColumns.Trips" in said
    said = problems("scale", {"distributionColumns": {"trips": "id"}, "referenceTables": ["trips"]})
    assert "sikka:postgres.referenceTables: 'trips' is also distributed" in said
    said = problems("scale", {"referenceTables": ["public.cities", "cities"]})
    assert "sikka:postgres.referenceTables: names 'cities' twice" in said


@pytest.mark.parametrize(
    "postgres",
    [{}, {"distributionColumns": {"trips": "city_id"}, "referenceTables": ["app.cities"]}],
    ids=["no-distribution", "distribution"],
)
def test_the_scripts_are_valid_posix_sh(postgres: dict[str, Any], tmp_path: Path) -> None:
    """`sh -n` parses every branch, the Citus one the integration test cannot run."""
    spec = parse_values("scale", {"sikka:postgres": postgres} if postgres else {})
    for name, text in (("follow.sh", follow_script()), ("cutover.sh", cutover_script(spec))):
        path = tmp_path / name
        path.write_text(text)
        checked = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr


def test_the_phase_stays_hashable_with_a_distribution() -> None:
    one = parse_values("scale", {"sikka:postgres": {"distributionColumns": {"a": "x", "b": "y"}}})
    two = parse_values("scale", {"sikka:postgres": {"distributionColumns": {"b": "y", "a": "x"}}})
    assert one == two and hash(one) == hash(two)
    assert hash(one) != hash(parse_values("scale", {}))
