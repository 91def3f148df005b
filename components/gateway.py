"""WebSocketGateway: the gateway replicas (autoscaled by an HPA on Kubernetes)."""

from __future__ import annotations

from components.tier import TierComponent
from scaling.exports import gateway_endpoints


class WebSocketGateway(TierComponent):
    tier = "gateway"
    type_token = "sikka:gateway:WebSocketGateway"
    describe = staticmethod(gateway_endpoints)
    min_replicas: int
    max_replicas: int
