"""Every file `sikka-scaling render` writes for a stack, as name → content (pure)."""

from __future__ import annotations

from scaling.containers import build_containers
from scaling.model import PhaseSpec, PlatformKind
from scaling.render.compose import render_compose
from scaling.render.env import render_env_file


def render_bundle(spec: PhaseSpec, gateway_build_path: str | None = None) -> dict[str, str]:
    """``gateway_build_path``: the gateway build context relative to the output folder."""
    containers = build_containers(spec)
    files: dict[str, str] = {".env": render_env_file(spec)}
    for tier in containers.values():
        for container in tier:
            for config in container.files:
                previous = files.setdefault(config.render_name, config.content)
                if previous != config.content:
                    raise AssertionError(f"two different files render as {config.render_name}")
    if spec.platform == PlatformKind.DOCKER:
        files["docker-compose.yml"] = render_compose(spec, containers, gateway_build_path)
    else:
        from scaling.kubernetes import build_manifests, to_yaml

        files["manifests.yaml"] = to_yaml(build_manifests(spec))
    return dict(sorted(files.items()))
