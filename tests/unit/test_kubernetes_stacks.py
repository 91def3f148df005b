"""Kubernetes stacks under the mock engine: every object the builder describes is registered
as its own typed resource, with exactly the body `render` writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.pulumi_stack import StackRun, run_stack

from scaling.kubernetes import build_manifests
from scaling.model import PhaseSpec
from scaling.stackconfig import load_stack_file, parse

KUBERNETES = {"sikka:platform": "kubernetes"}
CASES = {
    "scale": {},
    "growth": KUBERNETES,
    "launch": KUBERNETES,
}


def _numbers(value: Any) -> Any:
    """The mock engine carries numbers as floats; the objects carry ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


@pytest.fixture(scope="module", params=list(CASES))
def case(request: pytest.FixtureRequest) -> tuple[str, StackRun]:
    stack = request.param
    return stack, run_stack(stack, CASES[stack])


def _spec(stack: str) -> PhaseSpec:
    values = {"sikka:phase": stack, **CASES[stack]}
    if stack == "scale":
        return load_stack_file(Path(__file__).resolve().parents[2] / "Pulumi.scale.yaml")
    return parse(values, stack=stack)


def kubernetes_objects(run: StackRun) -> dict[tuple[str, str, str], dict[str, Any]]:
    objects = {}
    for r in run.resources:
        if r.type.startswith("kubernetes:") and "helm" not in r.type:
            body = _numbers(r.inputs)
            objects[(body["apiVersion"], body["kind"], body["metadata"]["name"])] = body
    return objects


def test_every_manifest_is_registered_once_with_its_body(case: tuple[str, StackRun]) -> None:
    stack, run = case
    registered = kubernetes_objects(run)
    manifests = build_manifests(_spec(stack))
    assert len(registered) == len(manifests)
    for m in manifests:
        body = registered[(m.api_version, m.kind, m.name)]
        if m.kind == "Secret":
            assert body["stringData"].keys() == m.body["stringData"].keys()
            body = {**body, "stringData": m.body["stringData"]}
        if m.kind == "SGScript":
            # The entries reading the password's Secret carry a version drawn per password.
            scripts = body["spec"]["scripts"]
            assert all(isinstance(e.pop("version"), int) for e in scripts if "scriptFrom" in e)
        assert body == m.body, m.key


def test_typed_resources_not_yaml_groups(case: tuple[str, StackRun]) -> None:
    _, run = case
    types = {r.type for r in run.resources if r.type.startswith("kubernetes:")}
    assert not {t for t in types if "yaml" in t or "helm" in t}
    assert {"kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet"} <= types


def test_secrets_are_filled_only_in_secret_objects(case: tuple[str, StackRun]) -> None:
    _, run = case
    for r in run.resources:
        if not r.type.startswith("kubernetes:"):
            continue
        text = repr(r.inputs)
        if r.type == "kubernetes:core/v1:Secret":
            assert "generated-" in text
            assert "stringData" in r.secret_paths()
            assert "${" not in text
        else:
            assert "generated-" not in text, r.name


def test_every_object_lives_in_the_stack_namespace(case: tuple[str, StackRun]) -> None:
    stack, run = case
    namespace = _spec(stack).namespace
    for (_, kind, name), body in kubernetes_objects(run).items():
        if kind != "Namespace":
            assert body["metadata"]["namespace"] == namespace, (kind, name)


def test_scale_registers_citus_and_redis_cluster() -> None:
    run = run_stack("scale")
    objects = kubernetes_objects(run)
    citus = objects[("stackgres.io/v1alpha1", "SGShardedCluster", "postgres")]
    assert citus["spec"]["type"] == "citus"
    assert citus["spec"]["shards"]["clusters"] == 4
    assert citus["spec"]["shards"]["instancesPerCluster"] >= 2
    redis = objects[("apps/v1", "StatefulSet", "redis")]
    assert redis["spec"]["replicas"] == 6
    hpa = objects[("autoscaling/v2", "HorizontalPodAutoscaler", "gateway")]
    targets = {
        m["resource"]["name"]: m["resource"]["target"]["averageUtilization"]
        for m in hpa["spec"]["metrics"]
    }
    assert targets == {"cpu": 70, "memory": 80}


def test_objects_holding_data_are_protected_and_retained(case: tuple[str, StackRun]) -> None:
    stack, run = case
    manifests = {(m.api_version, m.kind, m.name): m for m in build_manifests(_spec(stack))}
    for r in run.resources:
        if not r.type.startswith("kubernetes:") or "helm" in r.type:
            continue
        body = r.inputs
        manifest = manifests[(body["apiVersion"], body["kind"], body["metadata"]["name"])]
        assert (r.protect, r.retain_on_delete) == (manifest.holds_data,) * 2, manifest.key


def test_monitoring_objects_belong_to_the_monitoring_component(
    case: tuple[str, StackRun],
) -> None:
    stack, run = case
    (component,) = [r for r in run.resources if r.type == "sikka:monitoring:Monitoring"]
    children = {r.type for r in run.resources if r.parent == component.urn}
    assert {
        "kubernetes:monitoring.coreos.com/v1:PrometheusRule",
        "kubernetes:monitoring.coreos.com/v1:PodMonitor",
        "kubernetes:apps/v1:Deployment",
        "kubernetes:networking.k8s.io/v1:NetworkPolicy",
    } <= children, stack
