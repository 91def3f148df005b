"""WebSocketGateway: the gateway replicas (autoscaled by an HPA on Kubernetes)."""

from __future__ import annotations

from components.tier import TierComponent
from scaling.endpoints import gateway_endpoints
from scaling.model import PhaseSpec


class WebSocketGateway(TierComponent):
    tier = "gateway"
    type_token = "sikka:gateway:WebSocketGateway"
    min_replicas: int
    max_replicas: int

    def describe(self, spec: PhaseSpec) -> dict[str, object]:
        return dict(gateway_endpoints(spec))
