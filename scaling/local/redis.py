"""Redis tier: the topology's Redis nodes (standalone, master + replicas + Sentinels, or a
Redis Cluster) as processes on 127.0.0.1.

Names, roles, who replicates whom and which master the Sentinels monitor all come from the
topology; a Redis Cluster is formed (or grown) by the topology's own cluster script, run
against the local endpoints.

A transition's target (``ctx.follow``, scaling.local.follow): its master (or standalone node)
starts as a replica of the source's master and its replicas chain from it; its Sentinels are
written and recorded but started only at promotion (scaling.transition.local_data),
since a Sentinel would fail over a master that reports itself a replica. A Redis Cluster
target starts empty.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import redis

from scaling.local import health, procs
from scaling.local.context import Context
from scaling.local.credentials import write_private
from scaling.local.state import ProcessEntry
from scaling.local.topology import REDIS_DATA_ROLES, monitored, nodes, replicas_of
from scaling.model import PhaseSpec
from scaling.render.endpoints import Endpoint
from scaling.render.limits import open_files
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
from scaling.render.redis_start import cluster_script
from scaling.topology import Node

START_TIMEOUT = 20.0
CONVERGE_TIMEOUT = 30.0
# The cluster script waits for every node, creates or grows the cluster and rebalances.
CLUSTER_SCRIPT_TIMEOUT = 180.0


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


def binaries(spec: PhaseSpec) -> tuple[str, str]:
    """The spec's engine (valkey-* for the default image) when installed, else redis-*."""
    server, cli = spec.redis.binaries
    if shutil.which(server) and shutil.which(cli):
        return server, cli
    return "redis-server", "redis-cli"


def _note_engine(ctx: Context) -> None:
    server, _ = ctx.spec.redis.binaries
    if binaries(ctx.spec)[0] != server:
        ctx.notes.append(
            f"redis: {server} is not installed here; running redis-server instead "
            "(same configuration, protocol-compatible)."
        )


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


def data_nodes(ctx: Context) -> list[Node]:
    return nodes(ctx.topology, "redis", *REDIS_DATA_ROLES)


def _private_folder(ctx: Context, node: Node) -> Path:
    folder = ctx.state_dir / "redis" / node.name
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


def start_data_node(ctx: Context, node: Node) -> ProcessEntry:
    """Start one data node; a replica under Sentinel starts replicating its replica_of (a
    cluster replica is joined to its master by the cluster script instead)."""
    ctx.begin(node.name, ctx.log_path(node.name))
    port = ctx.ports.take(cluster_bus="cluster-bus" in node.ports)
    endpoint = Endpoint("127.0.0.1", port)
    folder = _private_folder(ctx, node)
    data = folder / "data"
    data.mkdir(exist_ok=True)
    secrets_file = folder / "secrets.conf"
    write_private(secrets_file, render_redis_secrets(ctx.secrets["redis-password"]))
    conf = folder / "redis.conf"
    layout = RedisLayout(
        bind="127.0.0.1", port=port, data_dir=str(data), secrets_file=str(secrets_file)
    )
    conf.write_text(render_redis_conf(ctx.spec, layout))
    master = ctx.endpoint(node.replica_of) if node.role == "replica" and node.replica_of else None
    if node.role in ("master", "standalone") and ctx.follow and ctx.follow.redis_master:
        master = ctx.follow.redis_master  # a transition's target replicates the source
    args = redis_node_args(ctx.spec, announce=endpoint, master=master)
    entry = ctx.start(
        ProcessEntry(
            name=node.name,
            role=node.role,
            tier=node.tier,
            argv=[binaries(ctx.spec)[0], str(conf), *args],
            log=ctx.log_path(node.name),
            host=endpoint.host,
            port=port,
            cwd=str(folder),
        )
    )
    ctx.endpoints[node.name] = endpoint
    return entry


def wait_ping(ctx: Context, entry: ProcessEntry) -> None:
    password = ctx.secrets["redis-password"]
    endpoint = ctx.endpoints[entry.name]
    ctx.part, ctx.part_log = entry.name, entry.log
    health.wait_until(
        f"{entry.name} answers PING",
        lambda: health.redis_ping(endpoint.host, endpoint.port, password),
        START_TIMEOUT,
        process=entry,
    )


def _start_sentinel(ctx: Context, sentinel: Node) -> ProcessEntry:
    ctx.begin(sentinel.name, ctx.log_path(sentinel.name))
    return ctx.start(_sentinel_entry(ctx, sentinel))


def _sentinel_entry(ctx: Context, sentinel: Node) -> ProcessEntry:
    """Write a Sentinel's configuration and say how to start it (not started yet)."""
    endpoint = Endpoint("127.0.0.1", ctx.ports.take())
    folder = _private_folder(ctx, sentinel)
    password = ctx.secrets["redis-password"]
    layout = SentinelLayout(bind="127.0.0.1", port=endpoint.port, data_dir=str(folder))
    master = ctx.endpoint(monitored(ctx.topology, sentinel))
    # Sentinel rewrites its own file, so it gets a private writable copy: the rendered
    # template + auth-pass (to reach the data nodes) + requirepass (the gateway
    # authenticates to Sentinels with the data nodes' password).
    write_private(
        folder / "sentinel.conf",
        render_sentinel_conf(ctx.spec, layout, master) + render_sentinel_auth(ctx.spec, password),
    )
    entry = ProcessEntry(
        name=sentinel.name,
        role=sentinel.role,
        tier=sentinel.tier,
        argv=[
            binaries(ctx.spec)[0],
            str(folder / "sentinel.conf"),
            "--sentinel",
            *sentinel_node_args(endpoint),
        ],
        log=ctx.log_path(sentinel.name),
        host=endpoint.host,
        port=endpoint.port,
        cwd=str(folder),
    )
    ctx.endpoints[sentinel.name] = endpoint
    return entry


def sentinel_view(ctx: Context, sentinel: Endpoint) -> dict[str, str]:
    raw = _query(ctx, sentinel, "SENTINEL", "MASTER", ctx.spec.redis.master_name)
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    return {str(raw[i]): str(raw[i + 1]) for i in range(0, len(raw), 2)}


def start_redis(ctx: Context) -> RedisEndpoints:
    """Every Redis node of the topology, replication in place and verified."""
    _note_engine(ctx)
    data = data_nodes(ctx)
    for entry in [start_data_node(ctx, node) for node in data]:
        wait_ping(ctx, entry)
    result = RedisEndpoints(mode=ctx.spec.redis.mode, nodes=[ctx.endpoints[n.name] for n in data])
    _wait_replicas_online(ctx, [n for n in data if n.role == "master"])
    sentinels = nodes(ctx.topology, "redis", "sentinel")
    if sentinels and ctx.follow is not None:
        _record_sentinels(ctx, sentinels)
        result.sentinels = [ctx.endpoints[s.name] for s in sentinels]
        result.master_name = ctx.spec.redis.master_name
    elif sentinels:
        _start_sentinels(ctx, sentinels)
        result.sentinels = [ctx.endpoints[s.name] for s in sentinels]
        result.master_name = ctx.spec.redis.master_name
    if nodes(ctx.topology, "redis", "cluster-init"):
        run_cluster_script(ctx)
        wait_cluster_ready(ctx)
    return result


def _wait_replicas_online(ctx: Context, masters: list[Node]) -> None:
    """Each master has every replica the topology gives it online."""
    for master in masters:
        wanted = len(replicas_of(ctx.topology, master.name))
        if not wanted:
            continue
        ctx.begin(f"{master.name} replication", ctx.log_path(master.name), "waiting for")
        endpoint = ctx.endpoints[master.name]
        health.wait_until(
            f"{wanted} replica(s) of {master.name} in sync",
            partial(_has_replicas_online, ctx, endpoint, wanted),
            CONVERGE_TIMEOUT,
            interval=0.3,
        )


def _record_sentinels(ctx: Context, sentinels: list[Node]) -> None:
    """A transition's target: the Sentinels recorded (configuration written, port taken)
    but not started; the promotion starts them (scaling.transition.local_data)."""
    for sentinel in sentinels:
        ctx.begin(sentinel.name, ctx.log_path(sentinel.name), "preparing")
        entry = _sentinel_entry(ctx, sentinel)
        if entry.open_files is None:
            need = open_files(ctx.spec, entry.tier, entry.role)
            entry.open_files = need.files if need else None
        ctx.state.processes.append(entry)
    ctx.state.save()
    ctx.notes.append(
        "redis: started as a replica of the source's master; the Sentinels start at promotion"
    )


def unstarted_sentinels(processes: list[ProcessEntry]) -> list[ProcessEntry]:
    """The Sentinels a transition's target recorded but has not started."""
    return [p for p in processes if p.role == "sentinel" and p.pid is None]


def _start_sentinels(ctx: Context, sentinels: list[Node]) -> None:
    for entry in [_start_sentinel(ctx, sentinel) for sentinel in sentinels]:
        wait_ping(ctx, entry)
    ctx.begin("sentinel convergence", ctx.log_path(sentinels[0].name), "waiting for")
    health.wait_until(
        "every sentinel sees its master, the master's replicas and the other sentinels",
        lambda: all(_sentinel_converged(ctx, s, len(sentinels)) for s in sentinels),
        CONVERGE_TIMEOUT,
        interval=0.5,
    )


def engine_path(ctx: Context) -> str:
    """PATH for the topology's shell scripts, which call the spec's engine by name
    (valkey-cli): where only redis-* is installed, a link in the state dir answers to it."""
    path = procs.base_env()["PATH"]
    _, wanted = ctx.spec.redis.binaries
    _, installed = binaries(ctx.spec)
    if wanted == installed:
        return path
    folder = ctx.state_dir / "bin"
    folder.mkdir(exist_ok=True)
    link = folder / wanted
    if not link.is_symlink():
        link.symlink_to(shutil.which(installed) or installed)
    return f"{folder}{os.pathsep}{path}"


def cluster_layout(ctx: Context) -> tuple[list[Endpoint], dict[str, str]]:
    """The topology's cluster layout on the local endpoints: the masters in order, and
    each replica ("host:port") → its master's."""
    data = data_nodes(ctx)
    masters = [ctx.endpoints[n.name] for n in data if n.role == "cluster-master"]
    replicas = {
        str(ctx.endpoints[n.name]): str(ctx.endpoints[n.replica_of])
        for n in data
        if n.role == "cluster-replica" and n.replica_of
    }
    return masters, replicas


def run_cluster_script(ctx: Context) -> str:
    """Run the topology's cluster script (form, or join new nodes and rebalance) against
    the local nodes, as its one-shot node does on Docker and Kubernetes; returns its output."""
    init = nodes(ctx.topology, "redis", "cluster-init")[0]
    masters, replicas = cluster_layout(ctx)
    ctx.begin(init.name, ctx.log_path(init.name), "running")
    result = ctx.run_tool(
        ["sh", "-c", cluster_script(ctx.spec, masters, replicas)],
        env={"REDIS_PASSWORD": ctx.secrets["redis-password"], "PATH": engine_path(ctx)},
        timeout=CLUSTER_SCRIPT_TIMEOUT,
        log=ctx.log_path(init.name),
    )
    return result.stdout


def wait_cluster_ready(ctx: Context) -> None:
    """Every node reports cluster_state:ok and knows every other; every master has its
    replicas online (with min-replicas-to-write it refuses writes until then)."""
    data = data_nodes(ctx)
    endpoints = [ctx.endpoints[n.name] for n in data]
    ctx.begin("the redis cluster", ctx.log_path(data[0].name), "waiting for")
    health.wait_until(
        "every cluster node reports cluster_state:ok",
        lambda: all(_cluster_ok(ctx, e, len(endpoints)) for e in endpoints),
        CONVERGE_TIMEOUT,
        interval=0.5,
    )
    _wait_replicas_online(ctx, [n for n in data if n.role == "cluster-master"])


def _has_replicas_online(ctx: Context, master: Endpoint, wanted: int) -> bool:
    return _replicas_online(ctx, master) >= wanted


def _replicas_online(ctx: Context, master: Endpoint) -> int:
    with client(ctx, master) as conn:
        info = conn.info("replication")
    return sum(
        1
        for key, value in info.items()
        if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
    )


def _sentinel_converged(ctx: Context, sentinel: Node, sentinels: int) -> bool:
    view = sentinel_view(ctx, ctx.endpoints[sentinel.name])
    replicas = len(replicas_of(ctx.topology, monitored(ctx.topology, sentinel)))
    return (
        int(view.get("num-slaves", 0)) == replicas
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
