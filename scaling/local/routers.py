"""The topology's HAProxy routers: writes to the Patroni leader, reads to healthy replicas.

The routers share one read-write and one read-only port, each on its own loopback address
127.0.2.(ordinal + 1), so that PgBouncer reaches all of them through one comma-separated
host list with one port, as a network alias does on Docker. The configuration is the
containers' (scaling.render.haproxy) with local addresses; ``haproxy -c`` must accept it.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling.local import health
from scaling.local.context import Context
from scaling.local.patroni import PatroniMember
from scaling.local.state import ProcessEntry
from scaling.local.topology import nodes
from scaling.render.endpoints import Endpoint
from scaling.render.haproxy import Member, RouterLayout, render_haproxy_cfg
from scaling.topology import Node
from scaling.topology.postgres import READ_WRITE, REPLICAS

START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Routers:
    read_write: list[Endpoint]
    read_only: list[Endpoint]


def router_host(ordinal: int) -> str:
    return f"127.0.2.{ordinal + 1}"


def router_layout(
    host: str, ports: tuple[int, int, int], members: list[PatroniMember]
) -> RouterLayout:
    """(read-write, read-only, stats) ports on ``host``; each member is checked on its own
    REST API, which answers /primary on the leader alone."""
    read_write, read_only, stats = ports
    return RouterLayout(
        read_write=Endpoint(host, read_write),
        read_only=Endpoint(host, read_only),
        stats=Endpoint(host, stats),
        members=tuple(Member(m.name, m.postgres, m.api.port) for m in members),
    )


def _proxied(ctx: Context, router: Node, members: list[PatroniMember]) -> list[PatroniMember]:
    """The members the router's "proxies-to" edges name."""
    targets = {edge.target for edge in ctx.topology.edges_from(router.name, "proxies-to")}
    return [m for m in members if m.name in targets]


def start_routers(ctx: Context, members: list[PatroniMember]) -> Routers:
    routers = nodes(ctx.topology, "postgres", "router")
    hosts = tuple(router_host(n.ordinal) for n in routers)
    ports = (ctx.ports.take(hosts), ctx.ports.take(hosts), ctx.ports.take(hosts))
    started = Routers([], [])
    for node in routers:
        ctx.begin(node.name, ctx.log_path(node.name))
        layout = router_layout(router_host(node.ordinal), ports, _proxied(ctx, node, members))
        folder = ctx.pg_dir(ctx.pg_root / node.name, 0o755)
        config = folder / "haproxy.cfg"
        config.write_text(render_haproxy_cfg(ctx.spec, layout))
        ctx.chown_pg(config)
        ctx.run_tool(
            ["haproxy", "-c", "-q", "-f", str(config)],
            user=ctx.pg_user,
            log=ctx.log_path(node.name),
        )
        entry = ctx.start(
            ProcessEntry(
                name=node.name,
                role=node.role,
                tier=node.tier,
                # Master-worker in the foreground: SIGTERM to the master stops its workers.
                argv=["haproxy", "-W", "-db", "-f", str(config)],
                log=ctx.log_path(node.name),
                host=layout.read_write.host,
                port=layout.read_write.port,
                user=ctx.pg_user,
                cwd=str(folder),
            )
        )
        ctx.endpoints[node.name] = layout.read_write
        started.read_write.append(layout.read_write)
        started.read_only.append(layout.read_only)
        health.wait_until(
            f"{node.name} answers on {layout.stats}",
            lambda stats=layout.stats: health.http_ok(f"http://{stats}/healthz"),  # type: ignore[misc]
            START_TIMEOUT,
            process=entry,
        )
    # PgBouncer reaches the routers through the services they serve, each on its own port.
    ctx.service_endpoints[READ_WRITE] = started.read_write
    ctx.service_endpoints[REPLICAS] = started.read_only
    return started
