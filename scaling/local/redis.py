"""Redis tier: standalone, master + replicas + Sentinels, or a 3+3 Redis Cluster."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import Any

import redis

from scaling.local import health, procs
from scaling.local.context import Context
from scaling.local.credentials import write_private
from scaling.local.state import ProcessEntry
from scaling.model import PhaseSpec
from scaling.render.endpoints import Endpoint
from scaling.render.gateway_env import redis_client_env
from scaling.render.redis import (
    RedisLayout,
    SentinelLayout,
    redis_node_args,
    render_redis_conf,
    render_redis_secrets,
    render_sentinel_auth,
    render_sentinel_conf,
    sentinel_node_args,
)

START_TIMEOUT = 20.0
CONVERGE_TIMEOUT = 30.0


@dataclass
class RedisEndpoints:
    mode: str
    nodes: list[Endpoint] = field(default_factory=list)
    sentinels: list[Endpoint] = field(default_factory=list)
    master_name: str | None = None

    def summary(self) -> dict[str, Any]:
        if self.mode == "sentinel":
            return {
                "mode": "sentinel",
                "sentinels": [str(s) for s in self.sentinels],
                "master_name": self.master_name,
                "nodes": [str(n) for n in self.nodes],
            }
        if self.mode == "cluster":
            return {"mode": "cluster", "nodes": [str(n) for n in self.nodes]}
        return {"mode": "standalone", "url": f"redis://{self.nodes[0]}/0"}

    def gateway_env(self, spec: PhaseSpec) -> dict[str, str]:
        return redis_client_env(spec, nodes=self.nodes, sentinels=self.sentinels)


def binaries(ctx: Context) -> tuple[str, str]:
    """The spec's engine (valkey-* for the default image) when installed, else redis-*."""
    server, cli = ctx.spec.redis.binaries
    if shutil.which(server) and shutil.which(cli):
        return server, cli
    if server != "redis-server":
        ctx.notes.append(
            f"redis: {server} is not installed here; running redis-server instead "
            "(same configuration, protocol-compatible)."
        )
    return "redis-server", "redis-cli"


def client(ctx: Context, endpoint: Endpoint, **kwargs: Any) -> redis.Redis:
    return redis.Redis(
        host=endpoint.host,
        port=endpoint.port,
        password=ctx.secrets["redis-password"],
        socket_timeout=3,
        socket_connect_timeout=2,
        decode_responses=True,
        **kwargs,
    )


def _query(ctx: Context, endpoint: Endpoint, *args: Any) -> Any:
    conn = client(ctx, endpoint)
    try:
        return conn.execute_command(*args)
    finally:
        conn.close()


def _start_node(
    ctx: Context, server: str, index: int, port: int, role: str, master: Endpoint | None
) -> tuple[ProcessEntry, Endpoint]:
    name = f"redis-{index}"
    endpoint = Endpoint("127.0.0.1", port)
    folder = ctx.state_dir / "redis" / name
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    secrets_file = folder / "secrets.conf"
    write_private(secrets_file, render_redis_secrets(ctx.secrets["redis-password"]))
    conf = folder / "redis.conf"
    layout = RedisLayout(
        bind="127.0.0.1", port=port, data_dir=str(data), secrets_file=str(secrets_file)
    )
    conf.write_text(render_redis_conf(ctx.spec, layout))
    args = redis_node_args(ctx.spec, announce=endpoint, master=master)
    entry = ctx.start(
        ProcessEntry(
            name=name,
            role=role,
            tier="redis",
            argv=[server, str(conf), *args],
            log=ctx.log_path(name),
            host=endpoint.host,
            port=port,
            cwd=str(folder),
        )
    )
    return entry, endpoint


def _wait_ping(ctx: Context, entry: ProcessEntry, endpoint: Endpoint) -> None:
    password = ctx.secrets["redis-password"]
    health.wait_until(
        f"{entry.name} answers PING",
        lambda: health.redis_ping(endpoint.host, endpoint.port, password),
        START_TIMEOUT,
        process=entry,
    )


def _start_sentinel(
    ctx: Context, server: str, index: int, master: Endpoint
) -> tuple[ProcessEntry, Endpoint]:
    name = f"sentinel-{index}"
    endpoint = Endpoint("127.0.0.1", ctx.ports.take())
    folder = ctx.state_dir / "redis" / name
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    password = ctx.secrets["redis-password"]
    layout = SentinelLayout(bind="127.0.0.1", port=endpoint.port, data_dir=str(folder))
    # Sentinel rewrites its own file, so it gets a private writable copy: the rendered
    # template + auth-pass (to reach the data nodes) + requirepass (the gateway
    # authenticates to Sentinels with the data nodes' password).
    write_private(
        folder / "sentinel.conf",
        render_sentinel_conf(ctx.spec, layout, master) + render_sentinel_auth(ctx.spec, password),
    )
    entry = ctx.start(
        ProcessEntry(
            name=name,
            role="sentinel",
            tier="redis",
            argv=[
                server,
                str(folder / "sentinel.conf"),
                "--sentinel",
                *sentinel_node_args(endpoint),
            ],
            log=ctx.log_path(name),
            host=endpoint.host,
            port=endpoint.port,
            cwd=str(folder),
        )
    )
    return entry, endpoint


def sentinel_view(ctx: Context, sentinel: Endpoint) -> dict[str, str]:
    raw = _query(ctx, sentinel, "SENTINEL", "MASTER", ctx.spec.redis.master_name)
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    return {str(raw[i]): str(raw[i + 1]) for i in range(0, len(raw), 2)}


def start_redis(ctx: Context) -> RedisEndpoints:
    spec = ctx.spec
    server, cli = binaries(ctx)
    mode = spec.redis.mode
    result = RedisEndpoints(mode=mode)
    if mode == "standalone":
        ctx.begin("redis-0")
        entry, endpoint = _start_node(ctx, server, 0, ctx.ports.take(), "standalone", None)
        _wait_ping(ctx, entry, endpoint)
        result.nodes.append(endpoint)
        return result

    if mode == "sentinel":
        ctx.begin("redis-0")
        entry, master = _start_node(ctx, server, 0, ctx.ports.take(), "master", None)
        _wait_ping(ctx, entry, master)
        result.nodes.append(master)
        for index in range(1, spec.redis.replicas + 1):
            entry, endpoint = _start_node(ctx, server, index, ctx.ports.take(), "replica", master)
            _wait_ping(ctx, entry, endpoint)
            result.nodes.append(endpoint)
        ctx.begin("redis replication", ctx.log_path("redis-0"), "waiting for")
        health.wait_until(
            f"{spec.redis.replicas} redis replicas in sync",
            lambda: _replicas_online(ctx, master) == spec.redis.replicas,
            CONVERGE_TIMEOUT,
        )
        result.master_name = spec.redis.master_name
        for index in range(1, spec.redis.sentinels + 1):
            entry, endpoint = _start_sentinel(ctx, server, index, master)
            _wait_ping(ctx, entry, endpoint)
            result.sentinels.append(endpoint)
        ctx.begin("sentinel convergence", ctx.log_path("sentinel-1"), "waiting for")
        health.wait_until(
            "every sentinel sees the master, its replicas and the other sentinels",
            lambda: all(
                _sentinel_converged(ctx, s, len(result.sentinels)) for s in result.sentinels
            ),
            CONVERGE_TIMEOUT,
            interval=0.5,
        )
        return result

    # Redis Cluster: every node is a master until `--cluster create` pairs them.
    nodes = []
    for index in range(spec.redis.cluster_nodes):
        ctx.begin(f"redis-{index}")
        port = ctx.ports.take(cluster_bus=True)
        entry, endpoint = _start_node(ctx, server, index, port, "cluster-node", None)
        nodes.append((entry, endpoint))
    for entry, endpoint in nodes:
        _wait_ping(ctx, entry, endpoint)
        result.nodes.append(endpoint)
    ctx.begin("the redis cluster", ctx.log_path("redis-0"), "creating")
    procs.run_tool(
        [
            cli,
            "--cluster",
            "create",
            *(str(n) for n in result.nodes),
            "--cluster-replicas",
            str(spec.redis.replicas_per_master),
            "--cluster-yes",
        ],
        env={"REDISCLI_AUTH": ctx.secrets["redis-password"]},
        timeout=60,
    )
    health.wait_until(
        "every cluster node reports cluster_state:ok",
        lambda: all(_cluster_ok(ctx, n, len(result.nodes)) for n in result.nodes),
        CONVERGE_TIMEOUT,
        interval=0.5,
    )
    # With min-replicas-to-write, a master refuses writes until its replica is in sync:
    # the cluster is only usable once every master has its replicas online.
    health.wait_until(
        f"every cluster master has {spec.redis.replicas_per_master} replica(s) online",
        lambda: all(
            _replicas_online(ctx, n) >= spec.redis.replicas_per_master
            for n in result.nodes
            if _role(ctx, n) == "master"
        ),
        CONVERGE_TIMEOUT,
        interval=0.3,
    )
    return result


def _role(ctx: Context, node: Endpoint) -> str:
    with client(ctx, node) as conn:
        return str(conn.info("replication").get("role", ""))


def _replicas_online(ctx: Context, master: Endpoint) -> int:
    with client(ctx, master) as conn:
        info = conn.info("replication")
    return sum(
        1
        for key, value in info.items()
        if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
    )


def _sentinel_converged(ctx: Context, sentinel: Endpoint, sentinels: int) -> bool:
    view = sentinel_view(ctx, sentinel)
    return (
        int(view.get("num-slaves", 0)) == ctx.spec.redis.replicas
        and int(view.get("num-other-sentinels", 0)) == sentinels - 1
        and "s_down" not in view.get("flags", "")
    )


def _cluster_ok(ctx: Context, node: Endpoint, size: int) -> bool:
    info = str(_query(ctx, node, "CLUSTER", "INFO"))
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    return (
        fields.get("cluster_state", "").strip() == "ok"
        and int(fields.get("cluster_known_nodes", "0")) == size
    )
