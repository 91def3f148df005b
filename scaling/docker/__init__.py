"""The Topology on a Docker host: physical names, network aliases and start order.

Pure. The Pulumi Docker runtime (components/docker_runtime.py) and docker-compose.yml
(:mod:`scaling.docker.compose`) both read the Topology's nodes through these functions, so
the stack and the compose file cannot drift apart.

Physical names derive from the stack (``sikka-<stack>-<node>``), never from the network:
renaming ``docker.network`` recreates the containers on the new network and leaves every
volume where it was.
"""

from __future__ import annotations

from scaling.topology import Node, Topology, Volume

# Data-holding containers wait this long for a healthy start before `pulumi up` gives up.
WAIT_TIMEOUT_SECONDS = 300


def container_name(topology: Topology, node: Node) -> str:
    return f"{topology.spec.name_prefix}-{node.name}"


def volume_name(topology: Topology, volume: Volume) -> str:
    return f"{topology.spec.name_prefix}-{volume.name}"


def start_after(topology: Topology, node: Node) -> tuple[str, ...]:
    """The nodes that must be up (healthy) before this one starts, in start order.

    A node waits for what it replicates from, monitors, pools or connects to (a service
    resolves to its nodes). Nodes of one data group also wait for the previous member, so
    a change that recreates all of them replaces them one at a time, never together.
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
    if node.stateful and node.ordinal > 0:
        previous = [n for n in topology.group(node.group) if n.ordinal == node.ordinal - 1]
        for member in previous:
            add(member.name)
    return tuple(wanted)
