"""Platform: composes Postgres, Redis, WebSocketGateway, Nginx and Monitoring for one phase."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi

from components.config import StackConfigError
from components.deployed import inherited_before, previous_outputs, shape_of
from components.gateway import WebSocketGateway
from components.monitoring import Monitoring
from components.nginx import Nginx
from components.postgres import Postgres
from components.redis import Redis
from components.secrets import PhaseSecrets
from components.tier import Runtime, TierArgs
from components.transition import SourceStack
from scaling.exports import connection_uris, transition_source
from scaling.model import PhaseSpec, PlatformKind
from scaling.promotion import INHERITED_EXPORT, INHERITED_SECRETS, SECRETS_EXPORT
from scaling.render.env import required_secrets
from scaling.safety import SHAPE_EXPORT, deployed_shape, refusals
from scaling.stackconfig import stack_file_name
from scaling.topology import Topology, build_topology

PROJECT_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class PlatformArgs:
    spec: PhaseSpec


class Platform(pulumi.ComponentResource):
    """Creates the phase's secrets, its private network (Docker) or namespace (Kubernetes),
    and the four tiers on it, in dependency order, all from one Topology.

    Before registering anything it compares the phase with what the stack last deployed and
    refuses changes that would lose data (scaling.safety), naming the key. Exposes the tier
    components, the connection URIs (Pulumi secrets) and ``deployed_shape``, which the stack
    exports for the next run's comparison.
    """

    postgres: Postgres
    redis: Redis
    gateway: WebSocketGateway
    nginx: Nginx
    monitoring: Monitoring
    connection_uris: dict[str, pulumi.Output[str]]
    deployed_shape: dict[str, Any]
    transition: dict[str, Any]
    transition_secrets: pulumi.Output[dict[str, str]]
    inherited: list[str]

    def __init__(self, name: str, args: PlatformArgs, opts: pulumi.ResourceOptions | None = None):
        spec = args.spec
        # The pure description comes first: if it fails, nothing has been registered.
        topology = build_topology(spec)
        manifests = self._manifests(topology)
        before = previous_outputs((SHAPE_EXPORT, INHERITED_EXPORT, SECRETS_EXPORT))
        # After a transition (sikka:promoteFrom removed) the database came with the data.
        kept = inherited_before(before)
        if kept and spec.promotion is None:
            spec = spec.model_copy(update={"data_from_source": True})
            topology = dataclasses.replace(topology, spec=spec)
            manifests = self._manifests(topology)
        self.deployed_shape = deployed_shape(topology)
        problems = refusals(shape_of(before), self.deployed_shape)
        if problems:
            raise StackConfigError(stack_file_name(spec.stack), problems)

        super().__init__("sikka:platform:Platform", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        needed = required_secrets(spec)
        # A transition's target reads its source stack's outputs: the addresses it follows,
        # and the passwords it inherits (the replicated data holds the source's roles).
        source = SourceStack(spec, spec.promotion, self) if spec.promotion else None
        # After the transition (sikka:promoteFrom removed) the stack keeps what it inherited,
        # from its own last update's outputs: no password rotates.
        inherited: dict[str, pulumi.Output[str]] = {
            secret: source.secret(secret)
            if source is not None
            else pulumi.Output.secret(kept[secret])
            for secret in INHERITED_SECRETS
            if secret in needed and (source is not None or secret in kept)
        }
        secrets = PhaseSecrets(f"{name}-secrets", needed, opts=child, inherited=inherited)
        self.inherited = sorted(secrets.inherited)
        runtime = self._runtime(name, topology, manifests, secrets, source)
        tier_args = TierArgs(topology=topology, runtime=runtime)
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
        # Last: it reads every other tier, and a failing exporter never holds them up.
        self.monitoring = Monitoring(
            f"{name}-monitoring",
            tier_args,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.nginx]),
        )
        # URIs carrying a password exist only as Pulumi secrets.
        self.connection_uris = {
            key: pulumi.Output.secret(pulumi.Output.concat(before, secrets.values[secret], after))
            for key, (before, secret, after) in connection_uris(topology).items()
        }
        # What a later transition's target reads from this stack (scaling.promotion).
        self.transition = transition_source(topology)
        self.transition_secrets = pulumi.Output.secret(
            pulumi.Output.all(
                **{s: secrets.values[s] for s in INHERITED_SECRETS if s in secrets.values}
            )
        )
        self.register_outputs(
            {"connection_uris": self.connection_uris, "deployed_shape": self.deployed_shape}
        )

    @staticmethod
    def _manifests(topology: Topology) -> Any:
        if topology.spec.platform != PlatformKind.KUBERNETES:
            return None
        from scaling.kubernetes import topology_manifests

        return topology_manifests(topology)

    def _runtime(
        self,
        name: str,
        topology: Topology,
        manifests: Any,
        secrets: PhaseSecrets,
        source: SourceStack | None,
    ) -> Runtime:
        spec = topology.spec
        if manifests is not None:
            from components.kubernetes_runtime import KubernetesRuntime

            k8s_runtime = KubernetesRuntime(spec, manifests, secrets.values, source)
            k8s_runtime.register_foundation(name, self)
            return k8s_runtime
        from components.docker_runtime import DockerRuntime

        return DockerRuntime(topology, secrets.values, PROJECT_DIR, name, self, source)
