"""Registers the pure Container descriptions as pulumi-docker resources."""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
import pulumi_docker as docker

from scaling.containers import Container


class DockerRuntime:
    """What every Docker-backed component shares: the private network, the pulled images,
    the secrets. Holds no state of its own beyond the resources it created."""

    def __init__(
        self,
        network: docker.Network,
        network_name: str,
        secrets: Mapping[str, pulumi.Output[str]],
        builds: Mapping[str, str] | None = None,
    ) -> None:
        self.network = network
        self.builds = dict(builds or {})  # image reference → build context
        # Container and volume names are prefixed with the per-stack network name so that
        # two stacks can share one Docker host.
        self.network_name = network_name
        self.secrets = secrets
        self._images: dict[str, pulumi.Output[str]] = {}
        self.containers: dict[str, docker.Container] = {}

    def image(self, reference: str, parent: pulumi.Resource) -> pulumi.Output[str]:
        """The image to run: built from a project folder when one is given, else pulled."""
        if reference not in self._images:
            safe = reference.replace("/", "-").replace(":", "-").replace("@", "-")
            opts = pulumi.ResourceOptions(parent=parent)
            context = self.builds.get(reference)
            if context is not None:
                built = docker.Image(
                    f"image-{safe}",
                    image_name=reference,
                    build=docker.DockerBuildArgs(context=context),
                    skip_push=True,
                    opts=opts,
                )
                self._images[reference] = built.image_name
            else:
                pulled = docker.RemoteImage(
                    f"image-{safe}", name=reference, keep_locally=True, opts=opts
                )
                self._images[reference] = pulled.image_id
        return self._images[reference]

    def _envs(self, container: Container) -> pulumi.Output[list[str]]:
        plain = [f"{key}={value}" for key, value in container.env.items()]
        secret = [
            pulumi.Output.concat(variable, "=", self.secrets[name])
            for variable, name in container.secret_env.items()
        ]
        return pulumi.Output.all(*plain, *secret).apply(list)

    def container(
        self, prefix: str, container: Container, parent: pulumi.Resource
    ) -> docker.Container:
        image = self.image(container.image, parent)
        volumes = []
        for volume_name, path in container.volumes.items():
            volume = docker.Volume(
                f"{prefix}-{volume_name}",
                name=f"{self.network_name}-{volume_name}",
                opts=pulumi.ResourceOptions(parent=parent, retain_on_delete=True),
            )
            volumes.append(docker.ContainerVolumeArgs(volume_name=volume.name, container_path=path))
        hc = container.healthcheck
        depends = [
            self.containers[name] for name in container.depends_on if name in self.containers
        ]
        one_shot = container.role == "cluster-init"
        resource = docker.Container(
            f"{prefix}-{container.name}",
            name=f"{self.network_name}-{container.name}",
            hostname=container.name,
            image=image,
            entrypoints=list(container.entrypoint) if container.entrypoint else None,
            command=list(container.command) if container.command else None,
            user=container.user,
            envs=self._envs(container),
            uploads=[
                docker.ContainerUploadArgs(file=f.path, content=f.content, permissions="0444")
                for f in container.files
            ],
            volumes=volumes,
            tmpfs={path: "mode=1777" for path in container.tmpfs} or None,
            ports=[
                docker.ContainerPortArgs(internal=internal, external=external)
                for external, internal in container.published.items()
            ],
            networks_advanced=[
                docker.ContainerNetworksAdvancedArgs(
                    name=self.network.name, aliases=[container.name, *container.aliases]
                )
            ],
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=list(hc.test),
                interval=f"{hc.interval_seconds}s",
                timeout=f"{hc.timeout_seconds}s",
                retries=hc.retries,
                start_period=f"{hc.start_period_seconds}s",
            ),
            memory=container.memory_mb,
            restart="no" if one_shot else "unless-stopped",
            must_run=not one_shot,
            # Dependents start only once this one reports healthy.
            wait=not one_shot,
            wait_timeout=180,
            labels=[
                docker.ContainerLabelArgs(label="sikka.io/tier", value=container.tier),
                docker.ContainerLabelArgs(label="sikka.io/role", value=container.role),
            ],
            opts=pulumi.ResourceOptions(parent=parent, depends_on=depends),
        )
        self.containers[container.name] = resource
        return resource
