"""The shape every tier component shares: register the tier's nodes on the runtime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import pulumi

from scaling.topology import Tier, Topology


class Runtime(Protocol):
    """Docker or Kubernetes: turns the Topology's nodes of a tier into resources."""

    def register_tier(self, tier: Tier, prefix: str, parent: pulumi.Resource) -> list[str]:
        """Registers the tier's objects as children of ``parent``; returns their names."""
        ...


@dataclass(frozen=True)
class TierArgs:
    topology: Topology
    runtime: Runtime


class TierComponent(pulumi.ComponentResource):
    tier: ClassVar[Tier]
    type_token: ClassVar[str]

    workloads: list[str]
    endpoints: dict[str, Any]

    def __init__(self, name: str, args: TierArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(self.type_token, name, None, opts)
        self.workloads = args.runtime.register_tier(self.tier, name, self)
        outputs = self.describe(args.topology)
        self.endpoints = outputs
        for key, value in outputs.items():
            setattr(self, key, value)
        self.register_outputs({"workloads": self.workloads, **outputs})

    @staticmethod
    def describe(topology: Topology) -> dict[str, Any]:
        """The tier's endpoints as the stack exports them (scaling.exports)."""
        raise NotImplementedError
