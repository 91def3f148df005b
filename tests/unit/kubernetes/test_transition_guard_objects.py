"""The objects of a standby's cut-over on Kubernetes (scaling.kubernetes.guards and the
topology's redis-promote node) are valid for their APIs: every built-in object of the
target against Kubernetes 1.33 (strict), its SGCluster against the StackGres CRD (skipped
when ../shared/crds is absent)."""

from __future__ import annotations

from k8s_support import find, on_kubernetes
from test_validation import assert_strictly_valid, builtin, check_against_crds, needs_crds

from scaling.kubernetes import build_manifests
from scaling.kubernetes.guards import GUARD_JOB
from scaling.model import PhaseSpec
from scaling.topology.redis import PROMOTER


def target(cutover: bool) -> PhaseSpec:
    return on_kubernetes(
        "growth", **{"sikka:promoteFrom": "launch", "sikka:promoteCutover": cutover}
    )


def test_the_guards_come_at_the_cutover_alone() -> None:
    following = {(m.kind, m.name) for m in build_manifests(target(False))}
    cutover = {(m.kind, m.name) for m in build_manifests(target(True))}
    assert cutover - following == {("Job", GUARD_JOB), ("Job", PROMOTER)}
    assert following - cutover == set()


def test_the_cutover_objects_pass_strict_validation() -> None:
    manifests = build_manifests(target(True))
    guards = [find(manifests, "Job", GUARD_JOB), find(manifests, "Job", PROMOTER)]
    assert all(job in builtin(manifests) for job in guards)
    assert_strictly_valid(builtin(manifests))


@needs_crds
def test_the_promoted_cluster_matches_its_crd() -> None:
    objects = check_against_crds(build_manifests(target(True)))
    (cluster,) = [m for m in objects if m.kind == "SGCluster"]
    assert "replicateFrom" not in cluster.body["spec"]
