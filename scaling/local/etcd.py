"""The DCS of the Patroni members: the topology's etcd nodes as local etcd processes.

Each member listens on 127.0.0.1 on a client and a peer port of its own; the flags are the
containers' (scaling.render.etcd), only the addresses and the data folder differ. The members
form their cluster together, so all of them start before any is waited for.
"""

from __future__ import annotations

import httpx

from scaling.local import health
from scaling.local.context import Context
from scaling.local.state import ProcessEntry
from scaling.local.topology import nodes
from scaling.render.endpoints import Endpoint
from scaling.render.etcd import EtcdMember, etcd_arguments

HOST = "127.0.0.1"
START_TIMEOUT = 60.0


def healthy(client: Endpoint) -> bool:
    """etcd's /health: true once the member's cluster has a leader and a quorum."""
    response = httpx.get(f"http://{client}/health", timeout=2)
    return response.status_code == 200 and response.json().get("health") == "true"


def start_etcd(ctx: Context) -> list[Endpoint]:
    """Start every etcd node of the topology and wait until each reports a healthy cluster;
    returns the members' client endpoints (what Patroni connects to)."""
    members = tuple(
        EtcdMember(
            node.name,
            Endpoint(HOST, ctx.ports.take()),
            Endpoint(HOST, ctx.ports.take()),
        )
        for node in nodes(ctx.topology, "postgres", "dcs")
    )
    entries = []
    for node, member in zip(nodes(ctx.topology, "postgres", "dcs"), members, strict=True):
        ctx.begin(node.name, ctx.log_path(node.name))
        data = ctx.state_dir / "etcd" / node.name
        data.mkdir(parents=True, exist_ok=True)
        data.chmod(0o700)  # etcd refuses a data folder others can read
        argv = ["etcd", *etcd_arguments(ctx.spec, member, members, str(data), listen_host=HOST)]
        entries.append(
            ctx.start(
                ProcessEntry(
                    name=node.name,
                    role=node.role,
                    tier=node.tier,
                    argv=argv,
                    log=ctx.log_path(node.name),
                    host=HOST,
                    port=member.client.port,
                    cwd=str(data.parent),
                    stop_timeout=20.0,
                )
            )
        )
        ctx.endpoints[node.name] = member.client
    for entry, member in zip(entries, members, strict=True):
        ctx.begin(f"{entry.name} joins its cluster", entry.log, "waiting for")
        health.wait_until(
            f"{entry.name} reports a healthy cluster",
            lambda client=member.client: healthy(client),  # type: ignore[misc]
            START_TIMEOUT,
            process=entry,
        )
    return [m.client for m in members]
