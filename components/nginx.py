"""Nginx: the WebSocket-aware reverse proxy in front of the gateways."""

from __future__ import annotations

from components.tier import TierComponent
from scaling.endpoints import nginx_endpoints
from scaling.model import PhaseSpec


class Nginx(TierComponent):
    tier = "nginx"
    type_token = "sikka:nginx:Nginx"
    url: str
    status_url: str | None

    def describe(self, spec: PhaseSpec) -> dict[str, object]:
        return dict(nginx_endpoints(spec))
