"""The Manifest record, shared metadata helpers and the multi-document YAML writer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from scaling.model import PhaseSpec
from scaling.topology import Tier

# Which part of the phase an object belongs to: a tier of the Topology, or the foundation
# every tier stands on (the namespace, the operator).
ObjectTier = Tier | Literal["namespace", "operator"]

PART_OF = "sikka-scaling"


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object, exactly as it is applied (and written by `render`)."""

    tier: ObjectTier
    api_version: str
    kind: str
    name: str
    namespace: str | None
    body: dict[str, Any]
    # Deleting the object deletes data (the namespace takes everything in it; StackGres
    # clusters and StatefulSets own their volumes): the Pulumi layer protects these and
    # retains them on delete.
    holds_data: bool = False

    @property
    def key(self) -> str:
        """A unique, stable resource name for Pulumi: `<kind>/<namespace>/<name>`."""
        return f"{self.kind}/{self.namespace or '-'}/{self.name}"


# pulumi-kubernetes replaces a Job that failed on the previous `pulumi up` (a refused
# cut-over runs again on the next one); without it Pulumi would only wait for it again.
REPLACE_UNREADY = {"pulumi.com/replaceUnready": "true"}


def selector_labels(name: str) -> dict[str, str]:
    """Labels a workload selects its pods by. Selectors are immutable, so the phase (which
    changes when a stack is promoted) is deliberately left out."""
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}


def labels(spec: PhaseSpec, name: str, component: str) -> dict[str, str]:
    return {
        **selector_labels(name),
        "app.kubernetes.io/component": component,
        "sikka.io/phase": spec.phase.value,
    }


def component_selector(component: str) -> dict[str, Any]:
    """A label selector matching every pod of one tier (used by NetworkPolicies)."""
    return {
        "matchLabels": {
            "app.kubernetes.io/part-of": PART_OF,
            "app.kubernetes.io/component": component,
        }
    }


def obj(
    tier: ObjectTier,
    api_version: str,
    kind: str,
    name: str,
    namespace: str | None,
    obj_labels: Mapping[str, str],
    *,
    holds_data: bool = False,
    **fields: Any,
) -> Manifest:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["labels"] = dict(obj_labels)
    body: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": metadata}
    body.update(fields)
    return Manifest(tier, api_version, kind, name, namespace, body, holds_data)


def to_yaml(manifests: Iterable[Manifest]) -> str:
    """Multi-document YAML (`kubectl apply -f` ready), keys in construction order."""
    return yaml.safe_dump_all(
        [m.body for m in manifests], sort_keys=False, default_flow_style=False, width=100
    )
