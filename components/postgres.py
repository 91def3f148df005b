"""Postgres: one instance (launch), primary + streaming replicas + PgBouncer (growth), or a
Citus sharded cluster through StackGres (scale, Kubernetes)."""

from __future__ import annotations

from typing import Any

from components.tier import TierComponent
from scaling.exports import postgres_endpoints


class Postgres(TierComponent):
    tier = "postgres"
    type_token = "sikka:postgres:Postgres"
    describe = staticmethod(postgres_endpoints)
    primary_endpoint: str
    replica_endpoints: list[str]
    pooler_endpoint: str | None
    failover: dict[str, Any]  # scaling.exports.postgres_failover
