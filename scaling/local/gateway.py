"""Gateway tier: the topology's gateway nodes as the reference WebSocket gateway
(`python -m gateway`), each told where Redis listens here (and given the Redis password
only: gateways never use the database)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scaling.local import health
from scaling.local.context import Context, python_executable
from scaling.local.redis import RedisEndpoints
from scaling.local.state import ProcessEntry
from scaling.local.topology import nodes
from scaling.render.endpoints import Endpoint
from scaling.render.gateway_env import gateway_env, redis_client_env
from scaling.topology import Node

# A gateway drains its clients for up to this long on SIGTERM; locally there is no rolling
# deploy to protect, so `down` should not wait the production drain (30 s by default).
MAX_LOCAL_DRAIN_SECONDS = 5
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class GatewayInstance:
    id: str
    endpoint: Endpoint
    # The first worker's /metrics; worker i (gateway.processes > 1) serves it on port + i.
    metrics: Endpoint
    processes: int = 1

    @property
    def worker_metrics(self) -> list[Endpoint]:
        """Every worker's /metrics listener (each counts only its own traffic)."""
        return [Endpoint(self.metrics.host, self.metrics.port + i) for i in range(self.processes)]

    def summary(self) -> dict[str, Any]:
        base = f"{self.endpoint.host}:{self.endpoint.port}"
        urls = [f"http://{m.host}:{m.port}/metrics" for m in self.worker_metrics]
        return {
            "id": self.id,
            "url": f"ws://{base}/",
            "health_url": f"http://{base}/healthz",
            "live_url": f"http://{base}/livez",
            "metrics_url": urls[0],
            "worker_metrics_urls": urls,
        }


def local_gateways(ctx: Context) -> list[Node]:
    """Every gateway of the topology: gateway.replicas of them (4 at scale), each holding
    its connectionsPerReplica, so that the phase's promised WebSockets fit locally too."""
    return nodes(ctx.topology, "gateway", "gateway")


def _environment(
    ctx: Context, node: Node, port: int, metrics_port: int, redis: RedisEndpoints
) -> dict[str, str]:
    """The shared gateway environment, fed with the local endpoints of what it connects to."""
    spec = ctx.spec
    return {
        "GATEWAY_HOST": "127.0.0.1",
        **gateway_env(
            spec,
            gateway_id=node.name,
            port=port,
            drain_seconds=drain_seconds(ctx),
            metrics_port=metrics_port,
        ),
        **redis_client_env(spec, nodes=redis.nodes, sentinels=redis.sentinels),
    }


def drain_seconds(ctx: Context) -> int:
    return min(ctx.spec.gateway.drain_seconds, MAX_LOCAL_DRAIN_SECONDS)


def _start_gateway(
    ctx: Context, node: Node, redis: RedisEndpoints, project_dir: str
) -> tuple[ProcessEntry, GatewayInstance]:
    port = ctx.ports.take()
    # One /metrics port per worker: metrics_port + i (gateway/__main__.py).
    metrics_port = ctx.ports.take(count=ctx.spec.gateway.processes)
    entry = ctx.start(
        ProcessEntry(
            name=node.name,
            role=node.role,
            tier=node.tier,
            argv=[python_executable(), "-m", "gateway"],
            log=ctx.log_path(node.name),
            port=port,
            env={
                **_environment(ctx, node, port, metrics_port, redis),
                "PYTHONPATH": project_dir,
                "PYTHONUNBUFFERED": "1",
            },
            # The same secret references as the topology's gateway node.
            secret_env=dict(node.secret_env),
            cwd=project_dir,
            stop_timeout=drain_seconds(ctx) + 5.0,
        )
    )
    ctx.endpoints[node.name] = Endpoint("127.0.0.1", port)
    metrics = Endpoint("127.0.0.1", metrics_port)
    instance = GatewayInstance(
        node.name, ctx.endpoints[node.name], metrics, ctx.spec.gateway.processes
    )
    return entry, instance


def start_gateways(ctx: Context, redis: RedisEndpoints, project_dir: str) -> list[GatewayInstance]:
    instances = [_start_gateway(ctx, node, redis, project_dir) for node in local_gateways(ctx)]
    # A transition's target under Sentinel: the gateways find the master through Sentinels
    # that start only at promotion, so they can only be alive (/livez) until then.
    probe = "live_url" if ctx.follow is not None and redis.mode == "sentinel" else "health_url"
    for entry, instance in instances:
        ctx.part, ctx.part_log = entry.name, entry.log
        url = instance.summary()[probe]
        health.wait_until(
            f"{entry.name} {url} answers 200",
            lambda u=url: health.http_ok(u),  # type: ignore[misc]
            START_TIMEOUT,
            process=entry,
        )
    return [instance for _, instance in instances]
