"""The objects of a Citus target following a plain source (scaling.kubernetes.logical) are
valid for their APIs: the Job and ConfigMap against Kubernetes 1.33 (strict), the StackGres
objects against their CRDs (skipped when ../shared/crds is absent), in both steps."""

from __future__ import annotations

import pytest
from k8s_support import find, on_kubernetes
from test_validation import assert_strictly_valid, builtin, check_against_crds, needs_crds

from scaling.kubernetes import build_manifests
from scaling.kubernetes.logical import CONFIG_NAME, CUTOVER_JOB, FOLLOW_JOB
from scaling.model import PhaseSpec

DISTRIBUTION = {"distributionColumns": {"trips": "city_id"}, "referenceTables": ["cities"]}


def target(cutover: bool) -> PhaseSpec:
    return on_kubernetes(
        "scale",
        **{
            "sikka:promoteFrom": "growth",
            "sikka:promoteCutover": cutover,
            "sikka:postgres": DISTRIBUTION,
        },
    )


@pytest.mark.parametrize("cutover", [False, True], ids=["following", "cutover"])
def test_the_transition_objects_pass_strict_validation(cutover: bool) -> None:
    manifests = build_manifests(target(cutover))
    job = find(manifests, "Job", CUTOVER_JOB if cutover else FOLLOW_JOB)
    config = find(manifests, "ConfigMap", CONFIG_NAME)
    assert job in builtin(manifests) and config in builtin(manifests)
    assert_strictly_valid(builtin(manifests))


@needs_crds
@pytest.mark.parametrize("cutover", [False, True], ids=["following", "cutover"])
def test_the_stackgres_objects_match_their_crds(cutover: bool) -> None:
    objects = check_against_crds(build_manifests(target(cutover)))
    (cluster,) = [m for m in objects if m.kind == "SGShardedCluster"]
    assert "replicateFrom" not in cluster.body["spec"]


def test_the_job_runs_hardened_with_its_secrets_in_memory() -> None:
    job = find(build_manifests(target(False)), "Job", FOLLOW_JOB)
    pod = job.body["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    scratch = next(v for v in pod["volumes"] if v["name"] == "scratch")
    assert scratch["emptyDir"]["medium"] == "Memory"
    assert container["image"].startswith("postgres:")
