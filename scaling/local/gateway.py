"""Gateway tier: the reference WebSocket gateway (`python -m gateway`), N instances."""

from __future__ import annotations

from dataclasses import dataclass

from scaling.local import health
from scaling.local.context import Context, python_executable
from scaling.local.postgres import PostgresEndpoints
from scaling.local.redis import RedisEndpoints
from scaling.local.state import ProcessEntry
from scaling.render.endpoints import Endpoint
from scaling.render.gateway_env import database_env, gateway_env

# Local gateways are capped whatever the spec's replicas: each is a Python process and a
# laptop (or a 2-core CI runner) gains nothing from a dozen of them.
MAX_LOCAL_GATEWAYS = 3
# A gateway drains its clients for up to this long on SIGTERM; locally there is no rolling
# deploy to protect, so `down` should not wait the production drain (30 s by default).
MAX_LOCAL_DRAIN_SECONDS = 5
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class GatewayInstance:
    id: str
    endpoint: Endpoint

    def summary(self) -> dict[str, str]:
        base = f"{self.endpoint.host}:{self.endpoint.port}"
        return {
            "id": self.id,
            "url": f"ws://{base}/",
            "health_url": f"http://{base}/healthz",
            "metrics_url": f"http://{base}/metrics",
        }


def local_gateway_count(ctx: Context) -> int:
    wanted = ctx.spec.gateway.replicas
    count = min(wanted, MAX_LOCAL_GATEWAYS)
    if count < wanted:
        ctx.notes.append(
            f"gateway: the spec asks for {wanted} replicas; the local runner starts "
            f"{count} (capped at {MAX_LOCAL_GATEWAYS})."
        )
    return count


def start_gateways(
    ctx: Context, redis: RedisEndpoints, postgres: PostgresEndpoints, project_dir: str
) -> list[GatewayInstance]:
    spec = ctx.spec
    drain = min(spec.gateway.drain_seconds, MAX_LOCAL_DRAIN_SECONDS)
    instances: list[tuple[ProcessEntry, GatewayInstance]] = []
    for index in range(1, local_gateway_count(ctx) + 1):
        name = f"gateway-{index}"
        port = ctx.ports.take()
        entry = ctx.start(
            ProcessEntry(
                name=name,
                role="gateway",
                tier="gateway",
                argv=[python_executable(), "-m", "gateway"],
                log=ctx.log_path(name),
                port=port,
                env={
                    "GATEWAY_HOST": "127.0.0.1",
                    **gateway_env(spec, gateway_id=name, port=port, drain_seconds=drain),
                    "PYTHONPATH": project_dir,
                    "PYTHONUNBUFFERED": "1",
                    **redis.gateway_env(spec),
                    **database_env(
                        spec,
                        target=postgres.pooler or postgres.primary,
                        read_pool=bool(postgres.pooler and postgres.replicas),
                    ),
                },
                secret_env={
                    "REDIS_PASSWORD": "redis-password",
                    "DATABASE_PASSWORD": "postgres-password",
                },
                cwd=project_dir,
                stop_timeout=drain + 5.0,
            )
        )
        instances.append((entry, GatewayInstance(name, Endpoint("127.0.0.1", port))))
    for entry, instance in instances:
        ctx.part, ctx.part_log = entry.name, entry.log
        url = instance.summary()["health_url"]
        health.wait_until(
            f"{entry.name} /healthz answers 200",
            lambda u=url: health.http_ok(u),  # type: ignore[misc]
            START_TIMEOUT,
            process=entry,
        )
    return [instance for _, instance in instances]
