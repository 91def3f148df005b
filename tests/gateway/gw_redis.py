"""Real redis-server / redis-sentinel processes for the gateway tests.

Every process listens on 127.0.0.1 only, on a free port, in its own temp dir,
with ``requirepass``. All processes started here are recorded so the conftest
can stop them even when a test or a fixture fails halfway.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from scaling.local.ports import PortAllocator

PASSWORD = "gw-test-secret"
MASTER_NAME = "trips-master"

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_SENTINEL = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"

_ports = PortAllocator()
_live: list[RedisProc] = []


def free_port() -> int:
    """A port nobody listens on now, below the ephemeral range and claimed machine-wide
    (scaling.local.ports: parallel test workers never pick the same), never handed out twice
    in this run."""
    return _ports.take()


@dataclass
class RedisProc:
    name: str
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def tail_log(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def cli(port: int, *args: str, timeout: float = 10.0) -> str:
    """Run redis-cli against 127.0.0.1:port; the password goes via env, not argv."""
    env = dict(os.environ, REDISCLI_AUTH=PASSWORD)
    out = subprocess.run(
        [REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return out.stdout.strip() + out.stderr.strip()


def _wait_ping(rp: RedisProc, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not rp.alive():
            raise RuntimeError(f"{rp.name} exited early:\n{rp.tail_log()}")
        if cli(rp.port, "PING", timeout=2) == "PONG":
            return
        time.sleep(0.05)
    raise RuntimeError(f"{rp.name} did not answer PING:\n{rp.tail_log()}")


def start(
    name: str, root: Path, lines: Iterable[str], *, sentinel: bool = False, port: int | None = None
) -> RedisProc:
    port = port or free_port()
    workdir = root / name
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "redis.log"
    conf = workdir / ("sentinel.conf" if sentinel else "redis.conf")
    base = [
        f"port {port}",
        "bind 127.0.0.1",
        "protected-mode yes",
        f"dir {workdir}",
        f"logfile {log}",
        "daemonize no",
        f"requirepass {PASSWORD}",
    ]
    if not sentinel:
        # No disk persistence; ship the first full sync immediately (the
        # default 5 s diskless delay would leave fresh replicas unsynced and
        # therefore not eligible for promotion).
        base += [
            "save ''",
            "appendonly no",
            "repl-diskless-sync-delay 0",
            f"masterauth {PASSWORD}",
        ]
    conf.write_text("\n".join([*base, *lines]) + "\n")
    binary = REDIS_SENTINEL if sentinel else REDIS_SERVER
    proc = subprocess.Popen(
        [binary, str(conf)],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C on pytest must not race our cleanup
    )
    rp = RedisProc(name, port, workdir, proc, log)
    _live.append(rp)
    _wait_ping(rp)
    return rp


def stop_all() -> None:
    while _live:
        _live.pop().stop()


def wait_for(predicate_desc: str, predicate: object, timeout: float, interval: float = 0.1) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {predicate_desc}")


# --------------------------------------------------------------- topologies


@dataclass
class SentinelSetup:
    master: RedisProc
    replica: RedisProc
    sentinels: list[RedisProc]

    @property
    def sentinel_env(self) -> str:
        return ",".join(s.address for s in self.sentinels)

    def master_port(self) -> int | None:
        out = cli(self.sentinels[0].port, "SENTINEL", "get-master-addr-by-name", MASTER_NAME)
        parts = out.split()
        return int(parts[1]) if len(parts) == 2 and parts[1].isdigit() else None

    def stop(self) -> None:
        for rp in [*self.sentinels, self.replica, self.master]:
            rp.stop()


def start_sentinel_setup(root: Path) -> SentinelSetup:
    master = start("master", root, [])
    replica = start("replica", root, [f"replicaof 127.0.0.1 {master.port}"])
    wait_for(
        "replica link up",
        lambda: "master_link_status:up" in cli(replica.port, "INFO", "replication"),
        10,
    )
    sentinels = []
    for i in range(3):
        sentinels.append(
            start(
                f"sentinel{i}",
                root,
                [
                    f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} 2",
                    f"sentinel auth-pass {MASTER_NAME} {PASSWORD}",
                    # Aggressive timings so the failover test stays short.
                    f"sentinel down-after-milliseconds {MASTER_NAME} 1000",
                    f"sentinel failover-timeout {MASTER_NAME} 5000",
                    f"sentinel parallel-syncs {MASTER_NAME} 1",
                ],
                sentinel=True,
            )
        )
    setup = SentinelSetup(master, replica, sentinels)

    def converged() -> bool:
        for s in sentinels:
            info = cli(s.port, "SENTINEL", "master", MASTER_NAME).split("\n")
            fields = dict(zip(info[::2], info[1::2], strict=False))
            if fields.get("num-slaves") != "1" or fields.get("num-other-sentinels") != "2":
                return False
        return True

    wait_for("sentinels to discover replica and each other", converged, 20, 0.2)
    return setup


@dataclass
class ClusterSetup:
    nodes: list[RedisProc]

    @property
    def nodes_env(self) -> str:
        return ",".join(n.address for n in self.nodes[:3])

    def roles(self) -> dict[int, str]:
        """port -> "master" / "slave", as each live node reports itself (ROLE)."""
        return {n.port: cli(n.port, "ROLE").split("\n")[0] for n in self.nodes if n.alive()}


def start_cluster(root: Path, size: int = 6) -> ClusterSetup:
    nodes = []
    for i in range(size):
        bus = free_port()
        nodes.append(
            start(
                f"node{i}",
                root,
                [
                    "cluster-enabled yes",
                    "cluster-config-file nodes.conf",
                    "cluster-node-timeout 1500",
                    # Explicit bus port: the default (port + 10000) may be
                    # taken or out of range for an ephemeral port.
                    f"cluster-port {bus}",
                ],
            )
        )
    out = subprocess.run(
        [
            REDIS_CLI,
            "--cluster",
            "create",
            *[n.address for n in nodes],
            "--cluster-replicas",
            "1",
            "--cluster-yes",
        ],
        env=dict(os.environ, REDISCLI_AUTH=PASSWORD),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"cluster create failed:\n{out.stdout}\n{out.stderr}")
    wait_for(
        "cluster_state:ok on every node",
        lambda: all("cluster_state:ok" in cli(n.port, "CLUSTER", "INFO") for n in nodes),
        30,
        0.2,
    )

    def replicas_synced() -> bool:
        infos = [cli(n.port, "INFO", "replication") for n in nodes]
        replicas = [i for i in infos if "role:slave" in i]
        return len(replicas) == size // 2 and all("master_link_status:up" in i for i in replicas)

    # A replica that never completed its first sync cannot be promoted.
    wait_for("every replica in sync with its primary", replicas_synced, 30, 0.2)
    return ClusterSetup(nodes)
