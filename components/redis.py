"""Redis: standalone (launch), master + replicas + Sentinels (growth), Redis Cluster (scale)."""

from __future__ import annotations

from components.tier import TierComponent
from scaling.exports import redis_endpoints


class Redis(TierComponent):
    tier = "redis"
    type_token = "sikka:redis:Redis"
    describe = staticmethod(redis_endpoints)
    redis_mode: str
