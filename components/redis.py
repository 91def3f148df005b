"""Redis: standalone (launch), master + replicas + Sentinels (growth), Redis Cluster (scale)."""

from __future__ import annotations

from components.tier import TierComponent
from scaling.endpoints import redis_endpoints
from scaling.model import PhaseSpec


class Redis(TierComponent):
    tier = "redis"
    type_token = "sikka:redis:Redis"
    redis_mode: str

    def describe(self, spec: PhaseSpec) -> dict[str, object]:
        return dict(redis_endpoints(spec))
