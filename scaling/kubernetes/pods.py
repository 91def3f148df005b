"""Pod templates read off the Topology's nodes.

A group of nodes becomes one StatefulSet, Deployment or Job, and so one pod template: the
nodes of a group must agree on everything a template carries (:func:`uniform` refuses them
otherwise). The one thing that differs per pod, its own DNS name, is written relative to
``$(POD_NAME)`` and expanded by the kubelet, so each pod gets exactly the value the
topology gave its node.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from scaling.model import PhaseSpec
from scaling.topology import ConfigFile, HealthCheck, Node, Topology, Volume
from scaling.topology.network import node_name, pod_fqdn

from .manifests import Manifest, ObjectTier, labels, obj, selector_labels
from .security import empty_dir

T = TypeVar("T")

POD_NAME = "$(POD_NAME)"
# Defined first: later variables may refer to it as $(POD_NAME) (dependent variables).
POD_NAME_ENV = {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
# Writable scratch (secrets files, Sentinel's rewritten config): small, and in memory so that
# nothing holding a password touches the node's disk.
TMPFS_SIZE_MI = 8
# Readiness only takes a pod out of its Services, so it reacts within seconds; liveness
# restarts the container and keeps the node's own, slower, timing.
READINESS_PERIOD_SECONDS = 5
READINESS_FAILURES = 3


def uniform(nodes: Sequence[Node], what: str, value: Callable[[Node], T]) -> T:
    """``value`` of the group's nodes, which must all agree on it."""
    first = value(nodes[0])
    for node in nodes[1:]:
        if value(node) != first:
            raise ValueError(
                f"{node.name} differs from {nodes[0].name} in its {what}: the nodes of group "
                f"{node.group!r} share one pod template on Kubernetes"
            )
    return first


def group_nodes(topology: Topology, group: str) -> list[Node]:
    nodes = sorted(topology.group(group), key=lambda n: n.ordinal)
    if not nodes:
        raise KeyError(f"no nodes in group {group!r}")
    return nodes


def statefulset_nodes(topology: Topology, group: str) -> list[Node]:
    """The nodes of a group that becomes a StatefulSet ``<group>``: its pods are named
    ``<group>-<ordinal>``, which must be the nodes' names for their hosts to exist."""
    nodes = group_nodes(topology, group)
    names = [n.name for n in nodes]
    expected = [node_name(group, i) for i in range(len(nodes))]
    if names != expected:
        raise ValueError(f"StatefulSet {group} would run pods {expected}, the topology has {names}")
    return nodes


def plain_env(env: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"name": key, "value": value} for key, value in env.items()]


def statefulset_env(nodes: Sequence[Node], headless: str, namespace: str) -> list[dict[str, Any]]:
    """The group's environment, with a node's own pod DNS name (NODE_HOST) written as
    ``$(POD_NAME).<headless>…``: each pod expands it to what the topology gave its node."""
    own_template = pod_fqdn(POD_NAME, headless, namespace)

    def templated(node: Node) -> dict[str, str]:
        own = pod_fqdn(node.name, headless, namespace)
        return {k: own_template if v == own else v for k, v in node.env.items()}

    env = uniform(nodes, "environment", templated)
    return [POD_NAME_ENV, *plain_env(env)]


def container_ports(node: Node) -> list[dict[str, Any]]:
    return [
        {"name": name, "containerPort": port, "protocol": "TCP"}
        for name, port in node.ports.items()
    ]


def exec_probes(health: HealthCheck) -> dict[str, Any]:
    """readinessProbe and livenessProbe running the node's health command (none without)."""
    if health.command is None:
        return {}
    check = {"exec": {"command": ["sh", "-c", health.command]}}
    return {
        "readinessProbe": {
            **check,
            "timeoutSeconds": health.timeout_seconds,
            "periodSeconds": READINESS_PERIOD_SECONDS,
            "failureThreshold": READINESS_FAILURES,
        },
        "livenessProbe": {
            **check,
            "timeoutSeconds": health.timeout_seconds,
            "initialDelaySeconds": health.start_period_seconds,
            "periodSeconds": health.interval_seconds,
            "failureThreshold": health.retries,
        },
    }


def config_map_data(nodes: Iterable[Node]) -> dict[str, str]:
    """Every file the nodes mount, keyed by the name `render` writes it under."""
    data: dict[str, str] = {}
    for node in nodes:
        for file in node.files:
            if data.setdefault(file.render_name, file.content) != file.content:
                raise ValueError(f"{node.name}: two different contents for {file.render_name}")
    return data


def config_volumes(
    files: Sequence[ConfigFile], config_map: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(mounts, volumes): each directory holding config files is one read-only volume of
    the ConfigMap projecting exactly those files to their topology paths."""
    by_dir: dict[str, list[ConfigFile]] = {}
    for file in files:
        by_dir.setdefault(posixpath.dirname(file.path), []).append(file)
    mounts, volumes = [], []
    for index, (directory, group) in enumerate(by_dir.items()):
        name = "config" if len(by_dir) == 1 else f"config-{index}"
        items = [{"key": f.render_name, "path": posixpath.basename(f.path)} for f in group]
        volumes.append({"name": name, "configMap": {"name": config_map, "items": items}})
        mounts.append({"name": name, "mountPath": directory, "readOnly": True})
    return mounts, volumes


def _slug(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")[:63] or "scratch"


def tmpfs_volumes(paths: Sequence[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(mounts, volumes): the node's tmpfs paths as in-memory emptyDirs."""
    mounts = [{"name": _slug(path), "mountPath": path} for path in paths]
    volumes = [empty_dir(_slug(path), size_mi=TMPFS_SIZE_MI, memory=True) for path in paths]
    return mounts, volumes


def claim_name(node: Node, volume: Volume) -> str:
    """Topology volumes are ``<node>-<name>``; the claim template is ``<name>``, so each PVC
    is ``<name>-<pod>`` (``data-redis-0``), the same node by node as the topology's."""
    prefix = f"{node.name}-"
    if not volume.name.startswith(prefix):
        raise ValueError(f"{node.name}: volume {volume.name!r} is not named after its node")
    return volume.name.removeprefix(prefix)


def volume_claims(
    spec: PhaseSpec, nodes: Sequence[Node]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(mounts, volumeClaimTemplates) from the nodes' volumes, sized as the topology says."""
    volumes = uniform(
        nodes,
        "volumes",
        lambda n: tuple((claim_name(n, v), v.path, v.size_gb) for v in n.volumes),
    )
    mounts, claims = [], []
    for name, path, size_gb in volumes:
        claim: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": f"{size_gb}Gi"}},
        }
        if spec.kubernetes.storage_class:
            claim["storageClassName"] = spec.kubernetes.storage_class
        claims.append({"metadata": {"name": name}, "spec": claim})
        mounts.append({"name": name, "mountPath": path})
    return mounts, claims


def uid(node: Node, default: int) -> int:
    """The node's numeric user, else the image's (Kubernetes needs a number to enforce
    runAsNonRoot)."""
    return int(node.user) if node.user is not None else default


def command_fields(node: Node) -> dict[str, list[str]]:
    """``entrypoint`` replaces the image's ENTRYPOINT (Kubernetes ``command``); ``command``
    its CMD (``args``)."""
    fields: dict[str, list[str]] = {}
    if node.entrypoint is not None:
        fields["command"] = list(node.entrypoint)
    if node.command:
        fields["args"] = list(node.command)
    return fields


def spread_affinity(name: str) -> dict[str, Any]:
    # Prefer one Kubernetes node per pod, so a node loss takes out one replica at most.
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": selector_labels(name)},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        }
    }


def statefulset(
    spec: PhaseSpec,
    tier: ObjectTier,
    name: str,
    service: str,
    replicas: int,
    pod: dict[str, Any],
    annotations: dict[str, str],
    claims: list[dict[str, Any]],
) -> Manifest:
    body_spec: dict[str, Any] = {
        "serviceName": service,
        "replicas": replicas,
        # Start scripts (Sentinel discovery, the cluster Job) cope with any start order.
        "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": selector_labels(name)},
        "template": {
            "metadata": {"labels": labels(spec, name, tier), "annotations": annotations},
            "spec": pod,
        },
    }
    if claims:
        body_spec["volumeClaimTemplates"] = claims
        # Data outlives its pods: neither deleting the set nor scaling it down deletes a
        # volume (a scaled-up set finds its old data again).
        body_spec["persistentVolumeClaimRetentionPolicy"] = {
            "whenDeleted": "Retain",
            "whenScaled": "Retain",
        }
    return obj(
        tier,
        "apps/v1",
        "StatefulSet",
        name,
        spec.namespace,
        labels(spec, name, tier),
        holds_data=bool(claims),
        spec=body_spec,
    )
