"""``build_manifests``: the whole phase on Kubernetes, in apply order."""

from __future__ import annotations

from scaling.model import PhaseSpec

from .gateway import gateway_manifests
from .manifests import PART_OF, Manifest, labels, obj
from .network import network_policies
from .nginx import nginx_manifests
from .postgres import operator_manifests, postgres_manifests
from .redis import redis_manifests


def namespace(spec: PhaseSpec) -> Manifest:
    name = spec.kubernetes.namespace
    namespace_labels = {
        **labels(spec, name, "namespace"),
        # Our own pods meet "restricted"; StackGres's pods are the operator's to shape, so the
        # namespace enforces "baseline" and only warns/audits against "restricted".
        "pod-security.kubernetes.io/enforce": "baseline",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
    }
    return obj("namespace", "v1", "Namespace", name, None, namespace_labels)


def build_manifests(spec: PhaseSpec) -> list[Manifest]:
    """Every object of the phase: the Namespace first, then (optionally) the operator's
    namespace, the default-deny policy, and each tier's Secrets, configs, workloads and
    policies. Objects a tier references (Secrets, ConfigMaps, StackGres configs) come before
    the objects referencing them."""
    policies = {policy.tier: policy for policy in network_policies(spec)}
    manifests = [namespace(spec), *operator_manifests(spec), policies.pop("namespace")]
    manifests += [*postgres_manifests(spec), policies.pop("postgres")]
    manifests += [*redis_manifests(spec), policies.pop("redis")]
    manifests += [*gateway_manifests(spec), policies.pop("gateway")]
    manifests += [*nginx_manifests(spec), policies.pop("nginx")]
    assert not policies, f"unplaced NetworkPolicies: {sorted(policies)}"
    keys = [m.key for m in manifests]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise ValueError(f"duplicate Kubernetes objects: {sorted(duplicates)}")
    return manifests


__all__ = ["PART_OF", "build_manifests", "namespace"]
