"""Registers the Topology's nodes as pulumi-docker resources (the Docker view)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi
import pulumi_docker as docker

from components.images import built_image
from components.transition import SourceStack, filled
from scaling.docker import (
    WAIT_TIMEOUT_SECONDS,
    container_name,
    health_test,
    held_back,
    image_builds,
    start_after,
    start_order,
    volume_name,
)
from scaling.topology import Node, Topology


class DockerRuntime:
    """The Docker side of :class:`components.tier.Runtime`: one private network, the images,
    a named volume per node volume and a container per node."""

    def __init__(
        self,
        topology: Topology,
        secrets: Mapping[str, pulumi.Output[str]],
        project_dir: Path,
        prefix: str,
        parent: pulumi.Resource,
        source: SourceStack | None = None,
    ) -> None:
        spec = topology.spec
        self.topology = topology
        # A transition's source stack (sikka:promoteFrom): fills the nodes' source tokens.
        self.source = source
        self.secrets = secrets
        self.project_dir = project_dir  # where the build contexts are
        self.builds = image_builds(topology)
        self._images: dict[str, pulumi.Output[str]] = {}
        self.containers: dict[str, docker.Container] = {}
        # A cut-over guard's container, once it succeeded (see gate()).
        self.gates: dict[str, pulumi.Output[docker.Container]] = {}
        self.network = docker.Network(
            f"{prefix}-network",
            name=spec.docker_network,
            ipam_configs=[docker.NetworkIpamConfigArgs(subnet=str(spec.docker_subnet))],
            opts=pulumi.ResourceOptions(parent=parent),
        )
        # A transition's source (sikka:promoteTo): the network its read-write door and Redis
        # master share with the target's PostgreSQL members and Redis master, nothing else.
        self.transition_network: docker.Network | None = None
        if spec.promote_to is not None:
            self.transition_network = docker.Network(
                f"{prefix}-transition-network",
                name=spec.docker_transition_network,
                ipam_configs=[
                    docker.NetworkIpamConfigArgs(subnet=str(spec.docker_transition_subnet))
                ],
                opts=pulumi.ResourceOptions(parent=parent),
            )

    def _networks(self, node: Node) -> list[docker.ContainerNetworksAdvancedArgs]:
        """The phase's network (the node's name and service aliases), then the transition's
        networks the node joins without any alias: there the two phases' names (postgres-0,
        ...) would be ambiguous, so only container names, unique on the host, are used."""
        networks = [
            docker.ContainerNetworksAdvancedArgs(
                name=self.network.name,
                aliases=[node.name, *self.topology.aliases(node.name)],
            )
        ]
        for network in node.extra_networks:
            own = self.transition_network
            if own is not None and network == self.topology.spec.docker_transition_network:
                name: pulumi.Input[str] = own.name
            else:
                name = filled(self.source, network, node.name)
            networks.append(docker.ContainerNetworksAdvancedArgs(name=name, aliases=[]))
        return networks

    def image(self, reference: str, parent: pulumi.Resource) -> pulumi.Output[str]:
        """The id of the image to run: built from a project folder when one is given (so a
        rebuild rolls the containers), else pulled."""
        if reference not in self._images:
            safe = reference.replace("/", "-").replace(":", "-").replace("@", "-")
            build = self.builds.get(reference)
            if build is not None:
                self._images[reference] = built_image(
                    f"image-{safe}",
                    reference,
                    str(self.project_dir / build.context),
                    parent,
                    build.args,
                )
            else:
                pulled = docker.RemoteImage(
                    f"image-{safe}",
                    name=reference,
                    keep_locally=True,
                    opts=pulumi.ResourceOptions(parent=parent),
                )
                self._images[reference] = pulled.image_id
        return self._images[reference]

    def register_tier(self, tier: str, prefix: str, parent: pulumi.Resource) -> list[str]:
        registered = []
        for node in start_order(self.topology, self.topology.tier(tier)):  # type: ignore[arg-type]
            if held_back(self.topology, node):
                continue
            self.container(prefix, node, parent)
            registered.append(node.name)
        return registered

    def _envs(self, node: Node) -> pulumi.Input[list[str]]:
        """The plain variables, then the secret ones (the whole list a secret Output when
        any is), in one Output.all over the secrets alone: a plain string needs no Output,
        nor a list without secrets."""
        plain = [f"{key}={value}" for key, value in node.env.items()]
        if not node.secret_env:
            return plain
        variables = list(node.secret_env)

        def joined(values: list[str]) -> list[str]:
            return [*plain, *(f"{v}={x}" for v, x in zip(variables, values, strict=True))]

        return pulumi.Output.all(*(self.secrets[n] for n in node.secret_env.values())).apply(joined)

    def _volumes(
        self, prefix: str, node: Node, parent: pulumi.Resource
    ) -> list[docker.ContainerVolumeArgs]:
        mounts = []
        for volume in node.volumes:
            resource = docker.Volume(
                f"{prefix}-{volume.name}",
                # From the stack and the node alone: no other setting renames a volume.
                name=volume_name(self.topology, volume),
                labels=[docker.VolumeLabelArgs(label="sikka.io/node", value=node.name)],
                opts=pulumi.ResourceOptions(
                    parent=parent,
                    protect=self.topology.spec.protect_data,
                    retain_on_delete=True,
                ),
            )
            mounts.append(
                docker.ContainerVolumeArgs(volume_name=resource.name, container_path=volume.path)
            )
        return mounts

    def container(self, prefix: str, node: Node, parent: pulumi.Resource) -> docker.Container:
        health = node.health
        after = [n for n in start_after(self.topology, node) if n in self.containers]
        # A cut-over guard that failed holds back what waits for it (its gate raises).
        depends: list[pulumi.Input[pulumi.Resource]] = [
            self.gates.get(n, self.containers[n]) for n in after
        ]
        guard = node.role == "promoter"
        resource = docker.Container(
            f"{prefix}-{node.name}",
            name=container_name(self.topology, node),
            hostname=node.name,
            image=self.image(node.image, parent),
            entrypoints=filled(self.source, list(node.entrypoint), node.name)
            if node.entrypoint
            else None,
            command=filled(self.source, list(node.command), node.name) if node.command else None,
            user=node.user,
            envs=self._envs(node),
            uploads=[
                docker.ContainerUploadArgs(
                    file=f.path,
                    content=filled(self.source, f.content, node.name),
                    permissions="0444",
                )
                for f in node.files
            ],
            volumes=self._volumes(prefix, node, parent),
            tmpfs={path: "mode=1777" for path in node.tmpfs} or None,
            ports=[
                docker.ContainerPortArgs(internal=internal, external=external)
                for external, internal in node.published.items()
            ],
            networks_advanced=self._networks(node),
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=health_test(health),
                interval=f"{health.interval_seconds}s",
                timeout=f"{health.timeout_seconds}s",
                retries=health.retries,
                start_period=f"{health.start_period_seconds}s",
            )
            if health.command
            else None,
            memory=node.memory_mb,
            ulimits=open_files_ulimits(node.open_files),
            # A replaced or destroyed container is stopped the way its server shuts down
            # cleanly (Postgres: fast shutdown; Redis: SHUTDOWN SAVE; nginx: graceful quit).
            stop_signal=node.stop.signal,
            stop_timeout=node.stop.grace_seconds,
            destroy_grace_seconds=node.stop.grace_seconds,
            restart="no" if node.one_shot else "unless-stopped",
            must_run=not node.one_shot,
            # A cut-over guard runs to its end within `pulumi up`, its output kept (it prints
            # nothing secret): what waits for it starts only once it succeeded.
            attach=True if guard else None,
            logs=True if guard else None,
            # Dependents start only once this one reports healthy.
            wait=not node.one_shot and health.command is not None,
            wait_timeout=WAIT_TIMEOUT_SECONDS,
            labels=[
                docker.ContainerLabelArgs(label="sikka.io/stack", value=self.topology.spec.stack),
                docker.ContainerLabelArgs(label="sikka.io/tier", value=node.tier),
                docker.ContainerLabelArgs(label="sikka.io/role", value=node.role),
            ],
            opts=pulumi.ResourceOptions(
                parent=parent,
                depends_on=depends,
                # The name is fixed: the old container must be gone before its successor
                # starts (and, with the volume, the old server must have stopped cleanly).
                delete_before_replace=True,
            ),
        )
        self.containers[node.name] = resource
        if guard:
            self.gates[node.name] = gate(resource, node.name)
        return resource


def gate(resource: docker.Container, name: str) -> pulumi.Output[docker.Container]:
    """``resource`` once its one-shot run has exited 0; otherwise an error that fails
    `pulumi up` with the run's own output (why it refused), before anything that waits for
    it is touched. Unknown in a preview: nothing has run."""

    def check(args: list[Any]) -> docker.Container:
        code, logs, urn = args
        if code not in (None, 0):
            tail = "\n".join(str(logs or "").strip().splitlines()[-15:])
            raise pulumi.RunError(
                f"{name} exited {code}; nothing that waits for it was changed:\n{tail}\n"
                f"Once the cause is fixed, run it again: pulumi up --replace '{urn}'"
            )
        return resource

    return pulumi.Output.all(resource.exit_code, resource.container_logs, resource.urn).apply(check)


def open_files_ulimits(files: int | None) -> list[docker.ContainerUlimitArgs] | None:
    """The open files a node's settings need (scaling/render/limits.py) as its nofile."""
    if not files:
        return None
    return [docker.ContainerUlimitArgs(name="nofile", soft=files, hard=files)]
