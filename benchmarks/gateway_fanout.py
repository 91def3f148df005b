"""Fan-out cost of the gateway: variants side by side under one trip load, on 127.0.0.1.

    python -m benchmarks.gateway_fanout [--trips 400] [--riders 4] [--seconds 15]
        [--gateways 2] [--rounds 1] [--variants before,after,...] [--baseline-ref REF]
        [--compression deflate|none] [--redis standalone|cluster] [--together]

Starts one ``redis-server`` on a free port (``--redis cluster``: a Redis Cluster of three
primaries without replicas, which the gateways use with sharded pub/sub), then for each
variant (alternating, ``--rounds`` times) starts the gateways and runs the capacity
bench's client on them, connecting to the gateways directly:
:mod:`benchmarks.capacity.connections` opens and counts the connections (one driver and
``--riders`` riders per trip, riders on other gateways than their driver),
:mod:`benchmarks.capacity.trips` runs the trip load on them (one location per second per
driver). It prints, per variant: connections held at the end, fan-out latency
p50/p90/p99/max measured by the clients (driver send -> rider receive, one clock), loss,
error frames, the gateways' CPU (percent of one core and microseconds per delivered frame,
and per update a driver sent, which does not depend on how fast the clients read), memory
(RSS growth per connection) and the client's own CPU (one process: near 100 % means the
client, not the gateway, is the limit).

Variants (``--variants``, comma-separated):

* ``before`` - the gateway at ``--baseline-ref`` (default ``HEAD``), extracted with
  ``git archive``, with its defaults.
* ``after`` - this tree's gateway with its defaults.
* ``after-deflate`` - this tree with ``GATEWAY_COMPRESSION=deflate``.
* ``after-asyncio`` - this tree with ``GATEWAY_EVENT_LOOP=asyncio``.
* ``after-reuseport`` - this tree, one gateway on one port with ``GATEWAY_PROCESSES`` =
  ``--gateways`` (SO_REUSEPORT) instead of ``--gateways`` gateways on their own ports.

The machine is shared: compare the variants of one run with each other (ratios), not with
figures of another run. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks.capacity import connections, plan
from benchmarks.capacity.trips import run_trip_load

ROOT = Path(__file__).resolve().parents[1]
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
CLUSTER_PRIMARIES = 3
OPEN_RATE = 2000.0  # connections started per second
OPEN_CONCURRENCY = 200  # handshakes in flight


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_block(count: int) -> int:
    """The first of ``count`` consecutive free ports (GATEWAY_PROCESSES workers serve
    /metrics on GATEWAY_METRICS_PORT + i), outside the ephemeral range the clients use."""
    for base in range(20000, 32000, 16):
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no block of free ports")


@dataclass
class Variant:
    name: str
    source: Path  # what goes on PYTHONPATH
    env: dict[str, str] = field(default_factory=dict)
    reuseport: bool = False


def extract_baseline(ref: str, into: Path) -> Path:
    """The gateway package as committed at ``ref``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "gateway"],
        check=True,
        capture_output=True,
    ).stdout
    tar_path = into / "baseline.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into / "baseline", filter="data")
    return into / "baseline"


def variants(names: list[str], baseline: Path | None, gateways: int) -> list[Variant]:
    known = {
        "before": lambda: Variant("before", baseline or ROOT),
        "after": lambda: Variant("after", ROOT),
        "after-deflate": lambda: Variant("after-deflate", ROOT, {"GATEWAY_COMPRESSION": "deflate"}),
        "after-asyncio": lambda: Variant("after-asyncio", ROOT, {"GATEWAY_EVENT_LOOP": "asyncio"}),
        "after-reuseport": lambda: Variant(
            "after-reuseport", ROOT, {"GATEWAY_PROCESSES": str(gateways)}, reuseport=True
        ),
    }
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown variants: {', '.join(unknown)} (known: {', '.join(known)})")
    return [known[n]() for n in names]


def _redis_node(workdir: Path, extra: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    node_dir = workdir / f"redis-{port}"
    node_dir.mkdir()
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(node_dir), "--maxclients", "10000", *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def start_redis(workdir: Path, mode: str) -> tuple[list[subprocess.Popen[bytes]], dict[str, str]]:
    """The Redis processes and the gateways' REDIS_* settings for them."""
    if mode == "standalone":
        proc, port = _redis_node(workdir, [])
        return [proc], {"REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    cluster = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    nodes = [
        _redis_node(workdir, [*cluster, "--cluster-port", str(free_port())])
        for _ in range(CLUSTER_PRIMARIES)
    ]
    procs = [proc for proc, _ in nodes]
    addresses = [f"127.0.0.1:{port}" for _, port in nodes]
    created = subprocess.run(
        [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-yes"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    deadline = time.monotonic() + 30
    while created.returncode == 0 and time.monotonic() < deadline:
        infos = [
            subprocess.run(
                [REDIS_CLI, "-p", str(port), "CLUSTER", "INFO"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout
            for _, port in nodes
        ]
        if all("cluster_state:ok" in info for info in infos):
            return procs, {"REDIS_MODE": "cluster", "REDIS_CLUSTER_NODES": ",".join(addresses)}
        time.sleep(0.2)
    stop(procs)
    raise RuntimeError(f"redis cluster not ready:\n{created.stdout}\n{created.stderr}")


def start_gateways(
    variant: Variant, redis_env: dict[str, str], count: int, per_gateway: int, logdir: Path
) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    procs, ports = [], []
    # Metrics ports: one per process, in one block (GATEWAY_PROCESSES uses base + i).
    metrics_base = free_port_block(count)
    for i in range(1 if variant.reuseport else count):
        port, metrics_port = free_port(), metrics_base + i
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "REDIS_"))}
        env |= {
            "PYTHONPATH": str(variant.source),
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(port),
            "GATEWAY_METRICS_PORT": str(metrics_port),
            "GATEWAY_ID": f"{variant.name}-{i}",
            "GATEWAY_AUTH_MODE": "disabled",
            "GATEWAY_LOG_LEVEL": "WARNING",
            **redis_env,
            "WEBSOCKET_MAX_CONNECTIONS": str(per_gateway),
            **variant.env,
        }
        log = (logdir / f"{variant.name}-{i}.log").open("ab")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "gateway"], env=env, cwd=logdir, stdout=log, stderr=log
            )
        )
        ports.append(port)
    for port in ports:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway on {port} not healthy; see {logdir}")
            time.sleep(0.1)
    return procs, ports


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _tree(pids: list[int]) -> list[psutil.Process]:
    out = []
    for pid in pids:
        try:
            parent = psutil.Process(pid)
            out.append(parent)
            out.extend(parent.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    return out


def _sample(pids: list[int]) -> tuple[float, float, int]:
    """(wall time, CPU seconds, RSS bytes) of the gateway processes and their children."""
    cpu, rss = 0.0, 0
    for proc in _tree(pids):
        try:
            t = proc.cpu_times()
            cpu += t.user + t.system
            rss += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return time.time(), cpu, rss


def gateway_of(index: int, trips: int, gateways: int) -> int:
    """The gateway of connection ``index`` (numbered as plan.members does): trip t's driver
    on gateway t, its k-th rider on t + 1 + k (mod ``gateways``), so that updates cross
    gateways through Redis as they do in production."""
    if index < trips:
        return index % gateways
    rider, trip = divmod(index - trips, trips)
    return (trip + 1 + rider) % gateways


async def trip_load(
    urls: list[str],
    args: argparse.Namespace,
    opened_hook: Callable[[], None] = lambda: None,
    prefix: str = "bench",
) -> dict[str, Any]:
    """Open the trips' connections to the gateways, run the trip load on them, count what
    is held at the end; the figures flattened for the table."""
    count = args.trips * (1 + args.riders)
    opened = await connections.open_connections(
        lambda i: urls[gateway_of(i, args.trips, len(urls))],
        count,
        source_for=lambda i: "127.0.0.1",
        token_for=lambda i: None,  # the gateways run with GATEWAY_AUTH_MODE=disabled
        rate=OPEN_RATE,
        concurrency=OPEN_CONCURRENCY,
        compression=None if args.compression == "none" else args.compression,
    )
    opened_hook()
    try:
        figures = await run_trip_load(
            {i: o.ws for i, o in opened.connections.items()},
            plan.members(count, args.trips),
            [f"{prefix}-{t}" for t in range(args.trips)],
            seconds=args.seconds,
        )
        counts = connections.tally(opened)
    finally:
        await connections.close_all(opened)
    latency = figures["latency_ms"]
    return {
        "window_start": figures["window"][0],
        "window_end": figures["window"][1],
        "seconds": args.seconds,
        "connections_opened": counts["opened"],
        "connections_held": counts["held"],
        "connections_refused": counts["refused"],
        "connection_errors": counts["errors"],
        "errors_by": counts["errors_by"],
        "published": figures["sent"],
        "expected_deliveries": figures["expected"],
        "delivered": figures["received"],
        "loss": figures["loss"] / figures["expected"] if figures["expected"] else None,
        "error_frames": sum(figures["error_frames"].values()),
        "error_samples": sorted(figures["error_frames"]),
        "deliveries_per_second": figures["deliveries_per_second"],
        "p50_ms": latency["p50"],
        "p90_ms": latency["p90"],
        "p99_ms": latency["p99"],
        "max_ms": latency["max"],
        "client_cpu_percent": figures["client_cpu_percent"],
    }


def start_profilers(
    pids: list[int], name: str, args: argparse.Namespace
) -> list[subprocess.Popen[bytes]]:
    """py-spy on every gateway process (workers included) and on this client from the
    moment the connections are open: the subscriptions and the trip load's sending window."""
    if args.py_spy is None:
        return []
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    args.py_spy.mkdir(parents=True, exist_ok=True)
    profilers = []
    for proc in [*_tree(pids), psutil.Process()]:
        if proc.pid in pids and proc.children():
            continue  # a supervisor (GATEWAY_PROCESSES): its workers are profiled
        role = "client" if proc.pid == os.getpid() else "gateway"
        output = args.py_spy / f"{name}-r{args.round}-{role}-{proc.pid}.txt"
        command = [
            spy, "record", "--pid", str(proc.pid), "--duration", str(args.seconds + 3),
            "--rate", "200", "--format", "raw", "--nonblocking", "--output", str(output),
        ]  # fmt: skip
        profilers.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    return profilers


async def measure(
    variant: Variant, redis_env: dict[str, str], args: argparse.Namespace, logdir: Path
) -> dict[str, Any]:
    connections = args.trips * (1 + args.riders)
    per_gateway = (connections // args.gateways) + args.trips + 100
    if variant.reuseport:
        per_gateway = connections + 100
    procs, ports = start_gateways(variant, redis_env, args.gateways, per_gateway, logdir)
    try:
        pids = [p.pid for p in procs]
        await asyncio.sleep(1.0)
        idle = _sample(pids)
        samples: list[tuple[float, float, int]] = []

        async def sampler() -> None:
            while True:
                samples.append(_sample(pids))
                await asyncio.sleep(0.5)

        sampling = asyncio.create_task(sampler())
        profilers: list[subprocess.Popen[bytes]] = []

        def profile() -> None:
            profilers.extend(start_profilers(pids, variant.name, args))

        urls = [f"ws://127.0.0.1:{p}/" for p in ports]
        # Trips of their own: variants measured together share the Redis.
        result = await trip_load(urls, args, profile, prefix=variant.name)
        sampling.cancel()
        for profiler in profilers:
            profiler.wait()
        window = [s for s in samples if result["window_start"] <= s[0] <= result["window_end"]]
        if len(window) >= 2:
            (t0, c0, _), (t1, c1, _) = window[0], window[-1]
            cpu_share = (c1 - c0) / (t1 - t0)
            result["gateway_cpu_percent"] = round(100 * cpu_share, 1)
            per_second = result["deliveries_per_second"] or 0
            result["cpu_us_per_delivery"] = (
                round(1e6 * cpu_share / per_second, 1) if per_second else None
            )
            published = result["published"] / result["seconds"]
            result["cpu_us_per_update"] = (
                round(1e6 * cpu_share / published, 1) if published else None
            )
            peak_rss = max(s[2] for s in window)
            held = result["connections_opened"]
            result["rss_mb"] = round(peak_rss / 2**20, 1)
            result["kb_per_connection"] = (
                round((peak_rss - idle[2]) / 1024 / held, 1) if held else None
            )
        result["gateway_processes"] = len(_tree(pids))
        return result
    finally:
        stop(procs)


async def together(
    chosen: list[Variant], redis_env: dict[str, str], args: argparse.Namespace, logdir: Path
) -> list[dict[str, Any]]:
    """Every variant at the same time, each with its own gateways and trips, driven by
    this one client: on a shared machine they see the same load, so their CPU per frame
    compares without the drift between one run and the next. (The gateways start one
    variant after the other: start_gateways blocks until they answer.)"""
    return list(await asyncio.gather(*(measure(v, redis_env, args, logdir) for v in chosen)))


COLUMNS = (
    ("connections_opened", "opened"),
    ("connections_held", "held"),
    ("connection_errors", "conn err"),
    ("p50_ms", "p50 ms"),
    ("p90_ms", "p90 ms"),
    ("p99_ms", "p99 ms"),
    ("max_ms", "max ms"),
    ("loss", "loss"),
    ("error_frames", "err frames"),
    ("deliveries_per_second", "deliv/s"),
    ("gateway_cpu_percent", "gw CPU %"),
    ("cpu_us_per_delivery", "gw us/deliv"),
    ("cpu_us_per_update", "gw us/update"),
    ("kb_per_connection", "KB/conn"),
    ("client_cpu_percent", "client CPU %"),
)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if value < 0.01 else f"{value:.1f}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trips", type=int, default=400)
    parser.add_argument("--riders", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument(
        "--compression",
        choices=("deflate", "none"),
        default="deflate",
        help="what the clients offer (browsers offer deflate); the gateway decides",
    )
    parser.add_argument(
        "--redis",
        choices=("standalone", "cluster"),
        default="standalone",
        help="one redis-server, or a cluster of three primaries (sharded pub/sub)",
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--together",
        action="store_true",
        help="run the variants at the same time (each with --trips trips of its own) "
        "instead of one after the other",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        help="profile every gateway process with py-spy (sampling) during the trip load; "
        "collapsed stacks go to DIR/<variant>-r<round>-<pid>.txt",
    )
    parser.add_argument("--variants", default="before,after")
    parser.add_argument("--baseline-ref", default="HEAD")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()

    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    with tempfile.TemporaryDirectory(prefix="gw-fanout-") as tmp:
        work = Path(tmp)
        baseline = extract_baseline(args.baseline_ref, work) if "before" in names else None
        chosen = variants(names, baseline, args.gateways)
        redis, redis_env = start_redis(work, args.redis)
        results: dict[str, list[dict[str, Any]]] = {v.name: [] for v in chosen}
        try:
            shown = [k for k, _ in COLUMNS] + ["error_samples", "published"]
            for round_no in range(args.rounds):
                args.round = round_no + 1
                if args.together:
                    print(f"round {round_no + 1}: {', '.join(names)} at once ...", flush=True)
                    outcomes = connections.run_client(together(chosen, redis_env, args, work))
                else:
                    outcomes = []
                    for variant in chosen:
                        print(f"round {round_no + 1}: {variant.name} ...", flush=True)
                        outcomes.append(
                            connections.run_client(measure(variant, redis_env, args, work))
                        )
                for variant, outcome in zip(chosen, outcomes, strict=True):
                    results[variant.name].append(outcome)
                    print(
                        f"    {variant.name}",
                        json.dumps({k: outcome.get(k) for k in shown}),
                        flush=True,
                    )
        finally:
            stop(redis)
            for log in work.glob("*.log"):
                text = log.read_text(errors="replace")
                if "Traceback" in text or "ERROR" in text:
                    print(f"--- {log.name} (last lines)\n" + "\n".join(text.splitlines()[-15:]))

    print()
    print(
        f"{args.trips} trips x ({args.riders} riders + 1 driver) = "
        f"{args.trips * (1 + args.riders)} connections over {args.gateways} gateway processes, "
        f"1 location/s per driver for {args.seconds} s, one client process offering "
        f"compression {args.compression}, redis {args.redis}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
        f"Python {platform.python_version()}"
    )
    header = ["variant", "round"] + [label for _, label in COLUMNS]
    print(" | ".join(header))
    for name, runs in results.items():
        for i, outcome in enumerate(runs):
            print(" | ".join([name, str(i + 1)] + [_fmt(outcome.get(k)) for k, _ in COLUMNS]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
