"""Shared helpers for the Kubernetes builder tests: scale (its stack file) plus growth and launch moved
onto Kubernetes, and helpers to walk the objects built from them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scaling.kubernetes import Manifest
from scaling.model import PhaseSpec
from scaling.stackconfig import load_stack_file, parse

REPO = Path(__file__).resolve().parents[3]
# The CRDs live beside the checkout (../shared/crds), never inside it; a git worktree of the
# checkout may sit a level or two further down, so the nearest such folder above counts.
CRD_DIR = next(
    (
        parent / "shared" / "crds"
        for parent in REPO.parents
        if (parent / "shared" / "crds").is_dir()
    ),
    REPO.parent / "shared" / "crds",
)


def scale_spec() -> PhaseSpec:
    return load_stack_file(REPO / "Pulumi.scale.yaml")


def on_kubernetes(phase: str, **overrides: Any) -> PhaseSpec:
    values = {"sikka:phase": phase, "sikka:platform": "kubernetes", **overrides}
    return parse(values, stack=phase)


SPECS = {
    "scale": scale_spec,
    "growth": lambda: on_kubernetes("growth"),
    "launch": lambda: on_kubernetes("launch"),
}


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [m for m in manifests if m.kind == kind and m.name == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m.kind == kind]


POD_KINDS = ("Deployment", "StatefulSet", "Job", "DaemonSet")


def pod_templates(manifests: list[Manifest]) -> Iterator[tuple[Manifest, dict[str, Any]]]:
    for m in manifests:
        if m.kind in POD_KINDS:
            yield m, m.body["spec"]["template"]


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}
