"""Every file `sikka-scaling render` writes for a stack, as name → content (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scaling.docker.compose import fill_source, render_compose
from scaling.kubernetes import build_manifests, to_yaml
from scaling.model import PhaseSpec, PlatformKind
from scaling.promotion import tokens_in
from scaling.render.alerts import render_alert_rules
from scaling.render.env import render_env_file
from scaling.topology import build_topology


def _add(files: dict[str, str], name: str, content: str) -> None:
    previous = files.setdefault(name, content)
    if previous != content:
        raise AssertionError(f"two different files render as {name}")


def render_bundle(
    spec: PhaseSpec, project_path: str | None = None, source: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """``project_path``: the project folder relative to the output folder (where
    docker-compose.yml finds the build contexts of the images the stack builds).
    ``source``: a transition target's source, its ``transition`` output (its hosts and
    network, written into the target's files).

    Docker stacks: docker-compose.yml and the config files its containers mount. Kubernetes
    stacks: manifests.yaml and, for reading, the config files its ConfigMaps carry.
    """
    files: dict[str, str] = {".env": render_env_file(spec), "alerts.yml": render_alert_rules(spec)}
    if spec.platform == PlatformKind.DOCKER:
        topology = build_topology(spec)
        for node in topology.nodes:
            for config in node.files:
                content = config.content
                if tokens_in(content):
                    content = fill_source(content, source, spec.stack)
                _add(files, config.render_name, content)
        files["docker-compose.yml"] = render_compose(topology, project_path, source)
    else:
        manifests = build_manifests(spec)
        for manifest in manifests:
            if manifest.kind == "ConfigMap":
                for name, content in manifest.body.get("data", {}).items():
                    _add(files, name, content)
        files["manifests.yaml"] = to_yaml(manifests)
    return dict(sorted(files.items()))
