"""Nginx: the WebSocket-aware reverse proxy in front of the gateways."""

from __future__ import annotations

from components.tier import TierComponent
from scaling.exports import nginx_endpoints


class Nginx(TierComponent):
    tier = "nginx"
    type_token = "sikka:nginx:Nginx"
    describe = staticmethod(nginx_endpoints)
    url: str
    status_url: str | None
