"""The PostgreSQL part of `local up`'s summary: where clients connect, without passwords.

Every door with several hosts behind it (the routers, the PgBouncers) is one libpq multi-host
URL, ``postgresql://user@h1:p,h2:p/db``: a client tries the hosts in order, so when one
pooler dies it connects through the next, as a client behind a Service would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scaling.local import patroni_api
from scaling.local.patroni import PatroniMember
from scaling.local.postgres import PostgresEndpoints
from scaling.model import PhaseSpec
from scaling.render.endpoints import Endpoint
from scaling.render.pgbouncer import read_only_database


def url(user: str, hosts: Sequence[Endpoint], database: str) -> str:
    """A libpq URL over every host, in order."""
    if not hosts:
        raise ValueError("a URL needs at least one host")
    return f"postgresql://{user}@{','.join(str(h) for h in hosts)}/{database}"


def members_summary(
    user: str, database: str, members: Sequence[PatroniMember]
) -> list[dict[str, str]]:
    return [
        {"name": m.name, "url": url(user, [m.postgres], database), "api": m.api_url}
        for m in members
    ]


def postgres_summary(
    spec: PhaseSpec, found: PostgresEndpoints, cluster: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``cluster``: Patroni's /cluster when `up` finished (who leads then; `local status`
    says who leads now)."""
    pg = spec.postgres
    members = members_summary(pg.user, pg.database, found.members)
    leader = patroni_api.leader(cluster)
    pooler = url(pg.user, found.poolers, pg.database) if found.poolers else None
    return {
        "mode": "replicated" if found.members else "single",
        "spec_mode": pg.mode,
        "primary": url(pg.user, found.primary, pg.database),
        "read_only": url(pg.user, found.read_only, pg.database) if found.read_only else None,
        # The members that were replicas when `up` finished, directly.
        "replicas": [m["url"] for m in members if m["name"] != leader],
        "leader": leader,
        "members": members,
        "pooler": pooler,
        "pooler_read_only": url(pg.user, found.poolers, read_only_database(spec))
        if found.poolers and found.read_only
        else None,
    }
