"""Platform: composes Postgres, Redis, WebSocketGateway and Nginx for one phase."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker

from components.docker_runtime import DockerRuntime
from components.gateway import WebSocketGateway
from components.nginx import Nginx
from components.postgres import Postgres
from components.redis import Redis
from components.secrets import PhaseSecrets
from components.tier import Runtime, TierArgs
from scaling.containers import Container, Tier, build_containers
from scaling.endpoints import connection_uris
from scaling.model import PhaseSpec, PlatformKind
from scaling.render.env import required_secrets

PROJECT_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class PlatformArgs:
    spec: PhaseSpec


class Platform(pulumi.ComponentResource):
    """Creates the phase's secrets, its private network (Docker) or namespace (Kubernetes),
    and the four tiers on it, in dependency order.

    Exposes the tier components and the connection URIs; URIs carrying a password are
    Pulumi secrets.
    """

    postgres: Postgres
    redis: Redis
    gateway: WebSocketGateway
    nginx: Nginx
    connection_uris: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: PlatformArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sikka:platform:Platform", name, None, opts)
        spec = args.spec
        # The pure description is built first: if it fails, nothing has been registered.
        if spec.platform == PlatformKind.KUBERNETES:
            from scaling.kubernetes import build_manifests

            description: object = build_manifests(spec)
        else:
            description = build_containers(spec)
        child = pulumi.ResourceOptions(parent=self)
        secrets = PhaseSecrets(f"{name}-secrets", required_secrets(spec), opts=child)
        runtime = self._runtime(name, spec, description, secrets, child)
        tier_args = TierArgs(spec=spec, runtime=runtime)
        self.postgres = Postgres(f"{name}-postgres", tier_args, opts=child)
        self.redis = Redis(f"{name}-redis", tier_args, opts=child)
        self.gateway = WebSocketGateway(
            f"{name}-gateway",
            tier_args,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.postgres, self.redis]),
        )
        self.nginx = Nginx(
            f"{name}-nginx",
            tier_args,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.gateway]),
        )
        # URIs carrying a password exist only as Pulumi secrets.
        self.connection_uris = {
            name: pulumi.Output.secret(pulumi.Output.concat(before, secrets.values[secret], after))
            for name, (before, secret, after) in connection_uris(spec).items()
        }
        self.register_outputs({"connection_uris": self.connection_uris})

    def _runtime(
        self,
        name: str,
        spec: PhaseSpec,
        description: object,
        secrets: PhaseSecrets,
        child: pulumi.ResourceOptions,
    ) -> Runtime:
        if spec.platform == PlatformKind.KUBERNETES:
            from components.kubernetes_runtime import KubernetesRuntime

            k8s_runtime = KubernetesRuntime(spec, description, secrets.values)  # type: ignore[arg-type]
            k8s_runtime.register_foundation(name, self)
            return k8s_runtime
        network_name = f"{spec.docker.network}-{spec.phase.value}"
        network = docker.Network(
            f"{name}-network",
            name=network_name,
            ipam_configs=[docker.NetworkIpamConfigArgs(subnet=spec.docker.subnet)],
            opts=child,
        )
        gateway = spec.gateway
        builds = (
            {gateway.image: str(PROJECT_DIR / gateway.build_context)}
            if gateway.build_context
            else {}
        )
        return DockerContainers(
            DockerRuntime(network, network_name, secrets.values, builds),
            description,  # type: ignore[arg-type]
        )


class DockerContainers:
    """Runtime adapter: the Docker side of :class:`components.tier.Runtime`."""

    def __init__(
        self, docker_runtime: DockerRuntime, containers: dict[Tier, list[Container]]
    ) -> None:
        self.docker = docker_runtime
        self.containers = containers

    def register_tier(self, tier: str, prefix: str, parent: pulumi.Resource) -> list[str]:
        registered = []
        for container in self.containers[tier]:  # type: ignore[index]
            self.docker.container(prefix, container, parent)
            registered.append(container.name)
        return registered
