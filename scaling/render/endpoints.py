"""Where each service listens: container names on Docker, pod DNS on Kubernetes,
loopback addresses in the local runner. Renderers take these instead of hard-coding hosts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"
