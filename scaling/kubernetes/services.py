"""Services: the topology's own (one Kubernetes Service each, under the topology's name) and
the governing headless Service that gives each StatefulSet pod its DNS name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scaling.topology import Node, Service, Topology
from scaling.topology.network import headless_service

from .manifests import Manifest, labels, obj, selector_labels


def target_group(topology: Topology, service: Service) -> str:
    """The group a Service selects. A Service selects pods by label, so it fronts a whole
    group: a topology Service over part of one (or over several) has no Kubernetes form."""
    groups = {topology.node(target).group for target in service.targets}
    if len(groups) != 1:
        raise ValueError(f"Service {service.name} targets {sorted(groups) or 'no'} groups")
    group = groups.pop()
    if set(service.targets) != {n.name for n in topology.group(group)}:
        raise ValueError(f"Service {service.name} targets part of group {group}")
    return group


def target_port(node: Node, port: int) -> str:
    """The node's port of the Service's number, else its first (main) one: Nginx listens on
    an unprivileged port behind the Service's port 80."""
    for name, number in node.ports.items():
        if number == port:
            return name
    return next(iter(node.ports))


def service_manifest(
    topology: Topology, service: Service, *, service_type: str = "ClusterIP", **extra: Any
) -> Manifest:
    """A topology Service. One named ``<group>-headless`` resolves to every ready pod of
    the group (Nginx re-resolves the gateways through it); the others get a cluster IP."""
    spec = topology.spec
    group = target_group(topology, service)
    node = topology.node(service.targets[0])
    port_name = target_port(node, service.port)
    body: dict[str, Any] = (
        {"clusterIP": "None"} if service.name == headless_service(group) else {"type": service_type}
    )
    body |= {
        "selector": selector_labels(group),
        "ports": [
            {"name": port_name, "port": service.port, "targetPort": port_name, "protocol": "TCP"}
        ],
        **extra,
    }
    return obj(
        service.tier,
        "v1",
        "Service",
        service.name,
        spec.namespace,
        labels(spec, service.name, service.tier),
        spec=body,
    )


def governing_service(topology: Topology, nodes: Sequence[Node]) -> Manifest:
    """The headless Service named in a StatefulSet's ``serviceName``: every pod of the group
    gets ``<pod>.<group>-headless.<namespace>.svc`` on every port of the node."""
    spec = topology.spec
    group = nodes[0].group
    name = headless_service(group)
    ports = [
        {"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}
        for port_name, port in nodes[0].ports.items()
    ]
    return obj(
        nodes[0].tier,
        "v1",
        "Service",
        name,
        spec.namespace,
        labels(spec, name, nodes[0].tier),
        spec={
            "clusterIP": "None",
            # Peers must resolve each other before they are ready (replication, cluster meet).
            "publishNotReadyAddresses": True,
            "selector": selector_labels(group),
            "ports": ports,
        },
    )


def tier_services(topology: Topology, tier: str, **options: Any) -> list[Manifest]:
    return [service_manifest(topology, s, **options) for s in topology.services if s.tier == tier]
