"""The shape every tier component shares: register the tier's objects on the runtime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import pulumi

from scaling.containers import Tier
from scaling.model import PhaseSpec


class Runtime(Protocol):
    """Docker or Kubernetes: turns the pure description of a tier into resources."""

    def register_tier(self, tier: Tier, prefix: str, parent: pulumi.Resource) -> list[str]:
        """Registers the tier's objects as children of ``parent``; returns their names."""
        ...


@dataclass(frozen=True)
class TierArgs:
    spec: PhaseSpec
    runtime: Runtime


class TierComponent(pulumi.ComponentResource):
    tier: ClassVar[Tier]
    type_token: ClassVar[str]

    workloads: list[str]

    def __init__(self, name: str, args: TierArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(self.type_token, name, None, opts)
        self.workloads = args.runtime.register_tier(self.tier, name, self)
        outputs = self.describe(args.spec)
        for key, value in outputs.items():
            setattr(self, key, value)
        self.register_outputs({"workloads": self.workloads, **outputs})

    def describe(self, spec: PhaseSpec) -> dict[str, object]:
        """The component's outputs besides its workloads (endpoints, counts)."""
        return {}
