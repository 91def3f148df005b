"""The Topology on a Docker host: physical names, network aliases and start order.

Pure. The Pulumi Docker runtime (components/docker_runtime.py) and docker-compose.yml
(:mod:`scaling.docker.compose`) both read the Topology's nodes through these functions, so
the stack and the compose file cannot drift apart.

Physical names derive from the stack (``sikka-<stack>-<node>``), never from the network:
renaming ``docker.network`` recreates the containers on the new network and leaves every
volume where it was.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from scaling.promotion import following
from scaling.topology import HealthCheck, Node, Topology, Volume

# Data-holding containers wait this long for a healthy start before `pulumi up` gives up.
WAIT_TIMEOUT_SECONDS = 300


def container_name(topology: Topology, node: Node) -> str:
    return f"{topology.spec.name_prefix}-{node.name}"


def volume_name(topology: Topology, volume: Volume) -> str:
    return f"{topology.spec.name_prefix}-{volume.name}"


def held_back(topology: Topology, node: Node) -> bool:
    """Whether the node runs no container yet: a transition's target (sikka:promoteFrom,
    before the cut-over) starts no Sentinel, as a Sentinel would fail over a master that
    reports itself a replica (of the source's master). The cut-over creates them, once the
    master runs on its own (Kubernetes holds their StatefulSet at 0 replicas instead)."""
    return node.role == "sentinel" and following(topology.spec.promotion)


def start_after(topology: Topology, node: Node) -> tuple[str, ...]:
    """The nodes that must be up (healthy) before this one starts, in start order.

    A node waits for what it replicates from, monitors, pools or connects to (a service
    resolves to its nodes). Nodes of one data group also wait for the previous member, so
    a change that recreates all of them replaces them one at a time, never together.

    Except the members of the DCS (etcd): a member is healthy only once a majority of the
    cluster runs, so waiting for the previous one would never end; they start together.
    """
    wanted: list[str] = []

    def add(name: str) -> None:
        if name != node.name and name not in wanted:
            wanted.append(name)

    for edge in topology.edges_from(node.name):
        if topology.has_service(edge.target):
            for target in topology.service(edge.target).targets:
                add(target)
        elif topology.has_node(edge.target):
            add(edge.target)
        else:  # a group name ("redis"): every node of it
            for member in topology.group(edge.target):
                add(member.name)
    if node.stateful and node.ordinal > 0 and node.role != "dcs":
        previous = [n for n in topology.group(node.group) if n.ordinal == node.ordinal - 1]
        for member in previous:
            add(member.name)
    return tuple(wanted)


def start_order(topology: Topology, nodes: list[Node]) -> list[Node]:
    """``nodes`` (one tier's) in their order, but each after those of them it starts after
    (a Redis master after the cut-over's guard appended to its tier)."""
    names = {n.name for n in nodes}
    placed: list[Node] = []
    done: set[str] = set()
    waiting = list(nodes)
    while waiting:
        for node in waiting:
            wanted = set(start_after(topology, node)) & names
            if wanted <= done:
                break
        else:  # a cycle: the order given (never produced by the topology)
            node = waiting[0]
        waiting.remove(node)
        placed.append(node)
        done.add(node.name)
    return placed


def health_test(check: HealthCheck) -> list[str]:
    """The Docker HEALTHCHECK test of a node's check (``check.command`` must be set): through
    the image's shell, or the command's words run directly when the image has no shell."""
    assert check.command is not None
    if check.shell:
        return ["CMD-SHELL", check.command]
    return ["CMD", *shlex.split(check.command)]


@dataclass(frozen=True)
class ImageBuild:
    """An image built from a folder of the project rather than pulled."""

    context: str  # relative to the project folder
    args: Mapping[str, str] = field(default_factory=dict)  # Dockerfile build arguments


def image_builds(topology: Topology) -> dict[str, ImageBuild]:
    """Image reference → how to build it, for the images the nodes run that the stack builds:
    the gateway's, and the Patroni members' (FROM ``postgres.image``, passed as the build
    argument POSTGRES_IMAGE, so the members run the phase's PostgreSQL). An image whose
    build context is null is pulled. The stack and docker-compose.yml both build from this.
    """
    spec = topology.spec
    wanted: dict[str, ImageBuild] = {}
    if spec.gateway.build_context:
        wanted[spec.gateway.image] = ImageBuild(spec.gateway.build_context)
    if spec.postgres.patroni_build_context:
        wanted[spec.postgres.patroni_image] = ImageBuild(
            spec.postgres.patroni_build_context, {"POSTGRES_IMAGE": spec.postgres.image}
        )
    running = {node.image for node in topology.nodes}
    return {image: build for image, build in wanted.items() if image in running}
