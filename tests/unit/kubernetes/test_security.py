"""Hardening rules, checked on every pod template the builder emits."""

from __future__ import annotations

from typing import Any

from k8s_support import containers, pod_templates

from scaling.kubernetes import Manifest


def _templates(manifests: list[Manifest]) -> list[tuple[Manifest, dict[str, Any]]]:
    found = list(pod_templates(manifests))
    # Deployments for gateway and nginx, a StatefulSet for Redis at least.
    assert {m.kind for m, _ in found} >= {"Deployment", "StatefulSet"}
    return found


def test_every_container_has_cpu_and_memory_requests_and_limits(
    manifests: list[Manifest],
) -> None:
    for owner, template in _templates(manifests):
        for container in containers(template["spec"]):
            where = f"{owner.key}:{container['name']}"
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert set(resources.get(bound, {})) >= {"cpu", "memory"}, where


def test_every_container_is_non_root_without_escalation_and_drops_all_capabilities(
    manifests: list[Manifest],
) -> None:
    for owner, template in _templates(manifests):
        pod = template["spec"]
        pod_context = pod.get("securityContext", {})
        assert pod_context.get("runAsNonRoot") is True, owner.key
        assert isinstance(pod_context.get("runAsUser"), int) and pod_context["runAsUser"] > 0
        assert pod_context.get("seccompProfile") == {"type": "RuntimeDefault"}, owner.key
        assert pod.get("automountServiceAccountToken") is False, owner.key
        for container in containers(pod):
            where = f"{owner.key}:{container['name']}"
            context = container.get("securityContext", {})
            assert context.get("runAsNonRoot") is True, where
            assert context.get("runAsUser", 0) > 0, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not context.get("capabilities", {}).get("add"), where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("privileged") is not True, where


def test_writable_paths_are_volumes_so_the_root_filesystem_can_stay_read_only(
    manifests: list[Manifest],
) -> None:
    for owner, template in _templates(manifests):
        pod = template["spec"]
        declared = {v["name"] for v in pod.get("volumes", [])}
        declared |= {
            c["metadata"]["name"] for c in owner.body["spec"].get("volumeClaimTemplates", [])
        }
        for container in containers(pod):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in declared, f"{owner.key}: {mount['name']}"


def test_images_are_the_phase_images(manifests: list[Manifest], spec: Any) -> None:
    expected = {spec.redis.image, spec.gateway.image, spec.nginx.image}
    # The exporters the phase runs itself (PostgreSQL's is StackGres's).
    expected |= {spec.monitoring.redis_exporter_image, spec.monitoring.nginx_exporter_image}
    used = {c["image"] for _, t in pod_templates(manifests) for c in containers(t["spec"])}
    assert used == expected
