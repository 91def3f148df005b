"""Every object is valid for its API: built-in kinds against the Kubernetes 1.33 OpenAPI
schemas (strict: unknown fields fail), StackGres and Prometheus Operator kinds against their
CRDs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import cache
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from k8s_support import CRD_DIR, SPECS, on_kubernetes

from scaling.kubernetes import Manifest, build_manifests

STACKGRES_DIR = CRD_DIR / "stackgres-1.18.6"
needs_crds = pytest.mark.skipif(
    not STACKGRES_DIR.is_dir(), reason=f"StackGres CRDs not found at {STACKGRES_DIR}"
)
PROMETHEUS_OPERATOR_DIR = CRD_DIR / "prometheus-operator-0.93.0"
needs_monitoring_crds = pytest.mark.skipif(
    not PROMETHEUS_OPERATOR_DIR.is_dir(),
    reason=f"Prometheus Operator CRDs not found at {PROMETHEUS_OPERATOR_DIR}",
)
CUSTOM_GROUPS = ("stackgres.io/", "monitoring.coreos.com/")


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    paths = [*STACKGRES_DIR.glob("*.yaml"), *PROMETHEUS_OPERATOR_DIR.glob("*.yaml")]
    for path in sorted(paths):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def unknown_fields(instance: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the schema does not declare. An API server silently prunes them from a custom
    resource, so a misspelt key would vanish instead of failing: catch it here."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(instance, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in instance.items():
            if path == "" and key in ("apiVersion", "kind", "metadata"):
                continue  # ObjectMeta is the API server's, not the CRD's, to check
            if properties is not None and key in properties:
                found += unknown_fields(value, properties[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(value, extra, f"{path}.{key}")
            elif extra is True or (properties is None and extra is None):
                continue
            else:
                found.append(f"{path}.{key}")
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(instance):
            found += unknown_fields(item, schema["items"], f"{path}[{index}]")
    return found


def builtin(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if not m.api_version.startswith(CUSTOM_GROUPS)]


def monitoring(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if m.api_version.startswith("monitoring.coreos.com/")]


def stackgres(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if m.api_version.startswith("stackgres.io/")]


def assert_strictly_valid(objects: list[Manifest]) -> None:
    """Every object passes Kubernetes 1.33's schema in strict mode (no unknown field)."""
    for manifest in objects:
        try:
            kubernetes_validate.validate(manifest.body, "1.33", strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{manifest.key}: {error.message} at {list(error.absolute_path)}")


@pytest.mark.parametrize("phase", sorted(SPECS))
def test_builtin_objects_pass_strict_kubernetes_1_33_validation(phase: str) -> None:
    objects = builtin(build_manifests(SPECS[phase]()))
    assert len(objects) > 15
    assert_strictly_valid(objects)


def test_strict_validation_rejects_an_unknown_field() -> None:
    # Guards the test above: strict mode must fail on a misspelt field.
    deployment = next(m for m in build_manifests(SPECS["scale"]()) if m.kind == "Deployment")
    body = {**deployment.body, "spec": {**deployment.body["spec"], "replicaz": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(body, "1.33", strict=True)


@needs_crds
@pytest.mark.parametrize("phase", sorted(SPECS))
def test_stackgres_objects_match_their_crds(phase: str) -> None:
    objects = check_against_crds(build_manifests(SPECS[phase]()))
    assert {m.kind for m in objects} >= {"SGInstanceProfile", "SGPostgresConfig", "SGScript"}


@needs_monitoring_crds
@pytest.mark.parametrize("phase", sorted(SPECS))
def test_monitoring_objects_match_the_prometheus_operator_crds(phase: str) -> None:
    objects = check_against_crds(build_manifests(SPECS[phase]()), monitoring)
    assert {m.kind for m in objects} == {"PrometheusRule", "PodMonitor"}
    assert {m.name for m in objects if m.kind == "PodMonitor"} == {
        "gateway-metrics",
        "nginx-metrics",
        "redis-metrics",
    }


@needs_monitoring_crds
def test_crd_validation_rejects_a_bad_pod_monitor() -> None:
    # Guards the test above: a PodMonitor endpoint is checked field by field.
    monitor = next(m for m in build_manifests(SPECS["scale"]()) if m.kind == "PodMonitor")
    endpoint = {**monitor.body["spec"]["podMetricsEndpoints"][0], "portNumber": "9102"}
    body = {**monitor.body, "spec": {**monitor.body["spec"], "podMetricsEndpoints": [endpoint]}}
    bad = dataclasses.replace(monitor, body=body)
    with pytest.raises(jsonschema.ValidationError):
        validate(bad, crd_schemas()[("monitoring.coreos.com/v1", "PodMonitor")])
    typo = {**monitor.body, "spec": {**monitor.body["spec"], "podMetricEndpoints": []}}
    schema = crd_schemas()[("monitoring.coreos.com/v1", "PodMonitor")]
    assert unknown_fields(typo, schema) == [".spec.podMetricEndpoints"]


def validate(manifest: Manifest, schema: dict[str, Any]) -> None:
    """jsonschema's validation; the Prometheus Operator's schemas hold RE2 patterns Python
    cannot compile as written ('^(?i)(abort|warn)?$', a flag after '^'), so their schema is
    not checked against the metaschema first (a pattern is compiled only where an object
    sets that field, and none of ours does)."""
    if manifest.api_version.startswith("monitoring.coreos.com/"):
        validator = jsonschema.validators.validator_for(schema)
        validator(schema).validate(manifest.body)
    else:
        jsonschema.validate(manifest.body, schema)


def check_against_crds(
    manifests: list[Manifest], kinds: Callable[[list[Manifest]], list[Manifest]] | None = None
) -> list[Manifest]:
    schemas = crd_schemas()
    objects = (kinds or stackgres)(manifests)
    for manifest in objects:
        schema = schemas.get((manifest.api_version, manifest.kind))
        assert schema is not None, f"no served CRD version for {manifest.key}"
        validate(manifest, schema)
        assert unknown_fields(manifest.body, schema) == [], manifest.key
    return objects


@needs_crds
@pytest.mark.parametrize("mode", ["off", "on", "strict"])
@pytest.mark.parametrize("phase", ["growth", "scale"])
def test_clusters_match_their_crds_in_every_synchronous_mode(phase: str, mode: str) -> None:
    spec = on_kubernetes(phase, **{"sikka:postgres": {"synchronousMode": mode}})
    objects = check_against_crds(build_manifests(spec))
    clusters = [m for m in objects if m.kind in ("SGCluster", "SGShardedCluster")]
    assert len(clusters) == 1
    assert clusters[0].body["spec"]["replication"]["mode"] in (
        "async",
        "sync",
        "strict-sync",
    )


@needs_crds
def test_crd_validation_rejects_a_bad_sync_instances() -> None:
    # Guards the test above: replication is checked against the CRD's schema.
    cluster = next(m for m in build_manifests(SPECS["growth"]()) if m.kind == "SGCluster")
    replication = {**cluster.body["spec"]["replication"], "syncInstances": 0}
    body = {**cluster.body, "spec": {**cluster.body["spec"], "replication": replication}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, crd_schemas()[("stackgres.io/v1", "SGCluster")])


@needs_crds
def test_unknown_field_check_catches_a_typo() -> None:
    cluster = next(m for m in build_manifests(SPECS["growth"]()) if m.kind == "SGCluster")
    body = {**cluster.body, "spec": {**cluster.body["spec"], "instance": 3}}
    schema = crd_schemas()[("stackgres.io/v1", "SGCluster")]
    assert unknown_fields(body, schema) == [".spec.instance"]


@needs_crds
def test_crd_validation_rejects_a_bad_instance_profile() -> None:
    profile = next(m for m in build_manifests(SPECS["scale"]()) if m.kind == "SGInstanceProfile")
    body = {**profile.body, "spec": {**profile.body["spec"], "memory": "8GB"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, crd_schemas()[("stackgres.io/v1", "SGInstanceProfile")])


def test_every_object_is_namespaced_in_the_phase_namespace_except_namespaces() -> None:
    spec = SPECS["scale"]()
    for manifest in build_manifests(spec):
        if manifest.kind == "Namespace":
            assert manifest.namespace is None
            assert "namespace" not in manifest.body["metadata"]
        else:
            assert manifest.namespace == spec.namespace == "sikka-scale"
            assert manifest.body["metadata"]["namespace"] == "sikka-scale"


def test_manifest_fields_mirror_the_body(manifests: list[Manifest]) -> None:
    assert manifests[0].kind == "Namespace"
    tiers = {"namespace", "operator", "postgres", "redis", "gateway", "nginx", "monitoring"}
    for m in manifests:
        assert m.tier in tiers
        assert (m.body["apiVersion"], m.body["kind"], m.body["metadata"]["name"]) == (
            m.api_version,
            m.kind,
            m.name,
        )
        meta_labels = m.body["metadata"]["labels"]
        assert meta_labels["app.kubernetes.io/part-of"] == "sikka-scaling"
        assert meta_labels["sikka.io/phase"] in ("launch", "growth", "scale")
        assert "app.kubernetes.io/name" in meta_labels
        assert "app.kubernetes.io/component" in meta_labels
    assert len({m.key for m in manifests}) == len(manifests)
