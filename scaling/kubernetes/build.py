"""``build_manifests``: the whole phase on Kubernetes, in apply order, as a view of the
phase's Topology (names, hosts, roles, files, scripts and sizes are all the topology's)."""

from __future__ import annotations

from scaling.model import PhaseSpec
from scaling.topology import Topology, build_topology

from .gateway import gateway_manifests
from .guards import guard_manifests
from .logical import logical_manifests
from .manifests import PART_OF, Manifest, labels, obj
from .monitoring import monitoring_manifests
from .network import network_policies
from .nginx import nginx_manifests
from .postgres import operator_manifests, postgres_manifests
from .redis import redis_manifests


def namespace(spec: PhaseSpec) -> Manifest:
    name = spec.namespace
    namespace_labels = {
        **labels(spec, name, "namespace"),
        # Our own pods meet "restricted"; StackGres's pods are the operator's to shape, so the
        # namespace enforces "baseline" and only warns/audits against "restricted".
        "pod-security.kubernetes.io/enforce": "baseline",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
    }
    # Deleting a namespace deletes every volume claim in it.
    return obj("namespace", "v1", "Namespace", name, None, namespace_labels, holds_data=True)


def build_manifests(spec: PhaseSpec) -> list[Manifest]:
    """Every object of the phase (see :func:`topology_manifests`)."""
    return topology_manifests(build_topology(spec))


def topology_manifests(topology: Topology) -> list[Manifest]:
    """Every object of the topology's phase: the Namespace first, then (optionally) the
    operator's namespace, the default-deny policy, and each tier's Secrets, configs,
    workloads and policies. Objects a tier references (Secrets, ConfigMaps, StackGres
    configs) come before the objects referencing them."""
    spec = topology.spec
    policies = {policy.tier: policy for policy in network_policies(topology)}
    manifests = [namespace(spec), *operator_manifests(spec), policies.pop("namespace")]
    # A Citus target following a plain source: its transition's scripts and Job; a
    # standby's cut-over: its guard Job.
    manifests += [*postgres_manifests(topology), *logical_manifests(spec)]
    manifests += guard_manifests(spec)
    manifests.append(policies.pop("postgres"))
    manifests += [*redis_manifests(topology), policies.pop("redis")]
    manifests += [*gateway_manifests(topology), policies.pop("gateway")]
    manifests += [*nginx_manifests(topology), policies.pop("nginx")]
    manifests += [*monitoring_manifests(topology), policies.pop("monitoring")]
    assert not policies, f"unplaced NetworkPolicies: {sorted(policies)}"
    keys = [m.key for m in manifests]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise ValueError(f"duplicate Kubernetes objects: {sorted(duplicates)}")
    return manifests


__all__ = ["PART_OF", "build_manifests", "namespace", "topology_manifests"]
