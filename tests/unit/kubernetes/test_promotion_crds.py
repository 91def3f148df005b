"""A transition's Kubernetes objects against the StackGres CRDs: the SGCluster and the
SGShardedCluster with ``spec.replicateFrom`` (following the source) and without it (promoted),
as the builder writes them and as the program registers them under the mock engine (the
source's address filled in from its stack outputs)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from k8s_support import on_kubernetes
from support.pulumi_stack import Registered, run_stack
from test_validation import check_against_crds, crd_schemas, needs_crds, unknown_fields

from scaling.kubernetes import build_manifests

CLUSTERS = ("SGCluster", "SGShardedCluster")


def following(phase: str, **values: Any) -> Any:
    source = {"growth": "launch", "scale": "scale-eu"}[phase]
    extra = {"sikka:promoteForce": True} if phase == "scale" else {}
    return on_kubernetes(phase, **{"sikka:promoteFrom": source, **extra, **values})


def clusters(spec: Any) -> list[Any]:
    return [m for m in build_manifests(spec) if m.kind in CLUSTERS]


def registered_body(resource: Registered, api_version: str, kind: str) -> dict[str, Any]:
    inputs = copy.deepcopy(resource.inputs)
    return {"apiVersion": api_version, "kind": kind, **inputs}


@needs_crds
@pytest.mark.parametrize("phase", ["growth", "scale"])
def test_the_standby_and_the_promoted_cluster_match_their_crds(phase: str) -> None:
    standby = check_against_crds(build_manifests(following(phase)))
    (cluster,) = [m for m in standby if m.kind in CLUSTERS]
    assert "replicateFrom" in cluster.body["spec"]
    promoted = build_manifests(following(phase, **{"sikka:promoteCutover": True}))
    (after,) = [m for m in check_against_crds(promoted) if m.kind in CLUSTERS]
    assert "replicateFrom" not in after.body["spec"]


@needs_crds
def test_the_registered_clusters_match_their_crds(tmp_path: Path) -> None:
    """With the source's address filled in from a StackReference: what the API server gets."""
    launch = run_stack("launch", {"sikka:platform": "kubernetes", "sikka:promoteTo": "growth"})
    growth = run_stack(
        "growth",
        {"sikka:platform": "kubernetes", "sikka:promoteFrom": "launch"},
        references={"organization/sikka-scaling/launch": launch.exports},
        reads={("kubernetes:core/v1:Secret", "sikka-launch/postgres"): {"data": {}}},
    )
    scale = run_stack("scale")
    target = tmp_path / "Pulumi.scale-eu.yaml"
    target.write_text(
        "config:\n  sikka:phase: scale\n  sikka:platform: kubernetes\n"
        "  sikka:promoteFrom: scale\n  sikka:promoteForce: true\n"
    )
    scale_eu = run_stack(
        "scale-eu",
        stack_file=target,
        references={"organization/sikka-scaling/scale": scale.exports},
        reads={("kubernetes:core/v1:Secret", "sikka-scale/postgres"): {"data": {}}},
    )
    checked = []
    for run, api_version, kind in (
        (growth, "stackgres.io/v1", "SGCluster"),
        (scale_eu, "stackgres.io/v1alpha1", "SGShardedCluster"),
    ):
        (resource,) = run.of_type(f"kubernetes:{api_version}:{kind}")
        body = registered_body(resource, api_version, kind)
        schema = crd_schemas()[(api_version, kind)]
        jsonschema.validate(body, schema)
        assert unknown_fields(body, schema) == []
        assert "@@source" not in str(body["spec"]["replicateFrom"])
        checked.append(kind)
    assert checked == list(CLUSTERS)


@needs_crds
def test_crd_validation_catches_a_bad_replicate_from() -> None:
    """Guards the tests above: the schema checks replicateFrom field by field."""
    (cluster,) = clusters(following("growth"))
    schema = crd_schemas()[("stackgres.io/v1", "SGCluster")]
    body = copy.deepcopy(cluster.body)
    del body["spec"]["replicateFrom"]["instance"]["external"]["port"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, schema)
    typo = copy.deepcopy(cluster.body)
    typo["spec"]["replicateFrom"]["instance"]["externl"] = {}
    assert unknown_fields(typo, schema) == [".spec.replicateFrom.instance.externl"]
    users = copy.deepcopy(cluster.body)
    del users["spec"]["replicateFrom"]["users"]["authenticator"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(users, schema)
