"""docker-compose.yml: the Topology's nodes as compose services, for `docker compose up`.

The same nodes, names, start order and stop policies the Docker stack registers. Config
files are bind-mounted from the files `sikka-scaling render` writes beside it.

Each service is named as the stack names its container (``sikka-<stack>-<node>``, also its
``container_name``); the node's own name (``postgres-0``) and its services' names are its
aliases on the phase's network. Compose gives a service's name to every network it joins,
and on a transition's network (scaling.promotion), shared by two phases, only container
names are unambiguous: the stack joins it without aliases, and so does compose.

A transition as the stack renders it: the source (``sikka:promoteTo``) creates the network
its target follows it over; the target (``sikka:promoteFrom``) joins it as an external
network, runs no Sentinel while following, and at the cut-over
(``sikka:promoteCutover``) runs the guards (scaling.render.cutover) before its Redis master
is replaced: that master waits for the Redis guard to complete successfully. The source's
hosts and network come from its ``transition`` output (:func:`scaling.exports.transition_source`
of its stack file), given as ``source``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

import yaml

from scaling.docker import (
    ImageBuild,
    container_name,
    health_test,
    held_back,
    image_builds,
    start_after,
    volume_name,
)
from scaling.promotion import fill_tokens, tokens_in
from scaling.render.env import SECRET_VARIABLES
from scaling.topology import Node, Topology

PRIVATE = "private"
TRANSITION = "transition"  # a source's own (sikka:promoteTo)
SOURCE_TRANSITION = "source-transition"  # a target's: the source's, external


def _build(build: ImageBuild, project_path: str) -> dict[str, Any]:
    section: dict[str, Any] = {
        "context": posixpath.normpath(posixpath.join(project_path, build.context))
    }
    if build.args:
        section["args"] = {key: value.replace("$", "$$") for key, value in build.args.items()}
    return section


def _service(
    topology: Topology, node: Node, builds: dict[str, ImageBuild], project_path: str | None
) -> dict[str, Any]:
    service: dict[str, Any] = {
        "image": node.image,
        "container_name": container_name(topology, node),
        "hostname": node.name,
    }
    if node.image in builds and project_path is not None:
        service["build"] = _build(builds[node.image], project_path)
    if node.user:
        service["user"] = node.user
    if node.entrypoint:
        service["entrypoint"] = _escape(list(node.entrypoint))
    if node.command:
        service["command"] = _escape(list(node.command))
    env: dict[str, str] = {key: value.replace("$", "$$") for key, value in node.env.items()}
    for variable, secret in node.secret_env.items():
        source = SECRET_VARIABLES[secret]
        env[variable] = f"${{{source}:?export {source} (a secret) before docker compose up}}"
    if env:
        service["environment"] = env
    mounts = [f"{volume.name}:{volume.path}" for volume in node.volumes]
    mounts += [f"./{f.render_name}:{f.path}:ro" for f in node.files]
    if mounts:
        service["volumes"] = mounts
    if node.tmpfs:
        service["tmpfs"] = [f"{path}:mode=1777" for path in node.tmpfs]
    if node.published:
        service["ports"] = [f"{host}:{port}" for host, port in node.published.items()]
    hc = node.health
    if hc.command is not None:
        service["healthcheck"] = {
            "test": _escape(health_test(hc)),
            "interval": f"{hc.interval_seconds}s",
            "timeout": f"{hc.timeout_seconds}s",
            "retries": hc.retries,
            "start_period": f"{hc.start_period_seconds}s",
        }
    after = [topology.node(name) for name in start_after(topology, node)]
    if after:
        service["depends_on"] = {
            container_name(topology, other): {"condition": _condition(other)} for other in after
        }
    aliases = [node.name, *topology.aliases(node.name)]
    service["networks"] = {PRIVATE: {"aliases": aliases}}
    for network in node.extra_networks:
        own = network == topology.spec.docker_transition_network
        service["networks"][TRANSITION if own else SOURCE_TRANSITION] = None
    service["stop_signal"] = node.stop.signal
    service["stop_grace_period"] = f"{node.stop.grace_seconds}s"
    if node.memory_mb:
        service["mem_limit"] = f"{node.memory_mb}m"
    if node.open_files:
        # Every socket is a descriptor: the open files its settings need (render/limits.py).
        service["ulimits"] = {"nofile": {"soft": node.open_files, "hard": node.open_files}}
    if not node.one_shot:
        service["restart"] = "unless-stopped"
    return service


def _condition(node: Node) -> str:
    """What a dependent waits for: a one-shot's success, a checked node's health."""
    if node.one_shot:
        return "service_completed_successfully"
    return "service_healthy" if node.health.command else "service_started"


def _escape(parts: list[str]) -> list[str]:
    """Compose interpolates $VAR itself; shell variables meant for the container need $$."""
    return [part.replace("$", "$$") for part in parts]


def render_compose(
    topology: Topology, project_path: str | None = None, source: Mapping[str, Any] | None = None
) -> str:
    """``project_path``: where the project folder is, relative to the compose file. Given
    it, compose builds the images the stack builds (the gateway's, the Patroni members'),
    from the same folders with the same build arguments; without it, it pulls them.

    ``source``: a transition target's source, its ``transition`` output (its hosts and
    network; ValueError when it lacks one the file needs). Without it the source's
    placeholders (``@@source.postgres.host@@``) stay in the file."""
    spec = topology.spec
    builds = image_builds(topology)
    nodes = [node for node in topology.nodes if not held_back(topology, node)]
    services = {
        container_name(topology, node): _service(topology, node, builds, project_path)
        for node in nodes
    }
    volumes = {
        volume.name: {"name": volume_name(topology, volume)}
        for node in nodes
        for volume in node.volumes
    }
    networks: dict[str, Any] = {
        PRIVATE: {
            "name": spec.docker_network,
            "ipam": {"config": [{"subnet": str(spec.docker_subnet)}]},
        }
    }
    joined = {network for node in nodes for network in node.extra_networks}
    if spec.docker_transition_network in joined:
        networks[TRANSITION] = {
            "name": spec.docker_transition_network,
            "ipam": {"config": [{"subnet": str(spec.docker_transition_subnet)}]},
        }
    others = sorted(joined - {spec.docker_transition_network})
    if others:
        assert len(others) == 1, f"a phase follows one source: {others}"
        # Created by the source's own stack or compose file: never created nor removed here.
        networks[SOURCE_TRANSITION] = {"name": others[0], "external": True}
    document = {"name": spec.name_prefix, "services": services, "networks": networks}
    document["volumes"] = volumes
    if tokens_in(document):
        document = fill_source(document, source, spec.stack)
    header = (
        f"# Generated by sikka-scaling for the {spec.phase.value} phase; do not edit by hand.\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False, width=1000)


def fill_source(value: Any, source: Mapping[str, Any] | None, stack: str) -> Any:
    """``value`` with the transition source's tokens filled from its ``transition`` output
    (left as they are without it: `sikka-scaling render` refuses that case itself)."""
    if source is None:
        return value
    try:
        return fill_tokens(value, source)
    except KeyError as error:
        raise ValueError(f"Pulumi.{stack}.yaml: sikka:promoteFrom: {error.args[0]}") from None
