"""Postgres: one instance (launch), primary + streaming replicas + PgBouncer (growth), or a
Citus sharded cluster through StackGres (scale, Kubernetes)."""

from __future__ import annotations

from components.tier import TierComponent
from scaling.endpoints import postgres_endpoints
from scaling.model import PhaseSpec


class Postgres(TierComponent):
    tier = "postgres"
    type_token = "sikka:postgres:Postgres"
    primary_endpoint: str
    replica_endpoints: list[str]
    pooler_endpoint: str | None

    def describe(self, spec: PhaseSpec) -> dict[str, object]:
        return dict(postgres_endpoints(spec))
