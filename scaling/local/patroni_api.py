"""What the Patroni members say about their cluster (REST ``GET /cluster``), read-only.

The leader is whoever holds the leader key now, not the member the topology bootstrapped:
`local status` shows it, `local down` stops it last, `local up` waits for it. Reading the
cluster's state needs no password. Any member answers for the whole cluster, so the first
one that answers is asked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx

TIMEOUT = 2.0
LEADER_ROLES = ("leader", "standby_leader")


def fetch_cluster(apis: Iterable[str], timeout: float = TIMEOUT) -> dict[str, Any] | None:
    """``/cluster`` from the first member API (``http://host:port``) that answers, or None."""
    for api in apis:
        try:
            response = httpx.get(f"{api}/cluster", timeout=timeout)
        except httpx.HTTPError:
            continue
        if response.status_code == 200:
            data = response.json()
            if isinstance(data, dict):
                return data
    return None


def members(cluster: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per member: name, role (leader, sync_standby, replica...), state (running,
    streaming...), timeline and lag in bytes (None while unknown)."""
    rows = []
    for member in cluster.get("members", []):
        lag = member.get("lag")
        rows.append(
            {
                "name": member.get("name"),
                "role": member.get("role"),
                "state": member.get("state"),
                "timeline": member.get("timeline"),
                "lag": lag if isinstance(lag, int) else None,
            }
        )
    return rows


def leader(cluster: Mapping[str, Any] | None) -> str | None:
    """The member holding the leader key, if any."""
    for member in (cluster or {}).get("members", []):
        if member.get("role") in LEADER_ROLES:
            return str(member.get("name"))
    return None


def healthy(cluster: Mapping[str, Any] | None, names: Sequence[str]) -> bool:
    """Whether a leader runs and every other one of ``names`` streams from it (a standby
    cluster's leader streams from its source itself)."""
    if cluster is None:
        return False
    rows = {row["name"]: row for row in members(cluster)}
    head = leader(cluster)
    if head is None or head not in names or rows[head]["state"] not in ("running", "streaming"):
        return False
    return all(
        name in rows and rows[name]["state"] == "streaming" for name in names if name != head
    )
