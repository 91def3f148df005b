"""redis-benchmark against the phase's Redis and a plain redis-server, side by side: the
same options, rounds alternating which goes first, one ratio (phase / plain) per test.

Interface (what the capacity run uses; another comparison can stand in for it)::

    with plain_server(binary, password) as plain:
        figures = compare_redis(phase_target, plain, requests=..., rounds=3)

The phase's target is its standalone server, the master its Sentinels name, or (cluster)
any node with ``--cluster``. The plain server is ``redis-server`` started here on a free
loopback port with its defaults (no persistence, no replicas), the same password, and
stopped afterwards. redis-benchmark reads no password from the environment, so it gets
``-a`` (a per-run password, on loopback, for the few seconds of a run).
"""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from benchmarks.capacity.stats import ratios, spread

TESTS = ("set", "get")
START_TIMEOUT = 10.0


class RedisBenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class RedisTarget:
    name: str
    host: str
    port: int
    password: str
    cluster: bool = False


def parse_csv(output: str) -> dict[str, float]:
    """``{"SET": requests per second, ...}`` from redis-benchmark --csv."""
    found: dict[str, float] = {}
    for row in csv.reader(io.StringIO(output)):
        if len(row) >= 2 and row[0] != "test":
            with contextlib.suppress(ValueError):
                found[row[0]] = float(row[1])
    if not found:
        raise RedisBenchError(f"no figures in redis-benchmark's output: {output.strip()[-200:]}")
    return found


def run_benchmark(
    target: RedisTarget, tests: Sequence[str], requests: int, clients: int, pipeline: int
) -> dict[str, float]:
    argv = ["redis-benchmark", "-h", target.host, "-p", str(target.port)]
    argv += ["-a", target.password, "-t", ",".join(tests)]
    argv += ["-n", str(requests), "-c", str(clients), "-P", str(pipeline), "--csv"]
    if target.cluster:
        argv.append("--cluster")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RedisBenchError(
            f"redis-benchmark against {target.name} failed ({done.returncode}): "
            + (done.stderr or done.stdout).strip()[-200:]
        )
    return parse_csv(done.stdout)


def sentinel_master(sentinels: Sequence[str], master_name: str, password: str) -> tuple[str, int]:
    """The master the Sentinels name now (``sentinels``: host:port strings)."""
    for address in sentinels:
        host, port = address.rsplit(":", 1)
        client = redis.Redis(host=host, port=int(port), password=password, socket_timeout=5)
        with contextlib.suppress(redis.RedisError), client:
            found = client.execute_command("SENTINEL", "get-master-addr-by-name", master_name)
            if found:
                return str(_text(found[0])), int(found[1])
    raise RedisBenchError(f"no Sentinel of {', '.join(sentinels)} names master {master_name!r}")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def phase_target(summary: dict[str, Any], password: str) -> RedisTarget:
    """The phase's Redis from `local up`'s summary (``redis`` section)."""
    mode = summary["mode"]
    if mode == "sentinel":
        host, port = sentinel_master(summary["sentinels"], summary["master_name"], password)
        return RedisTarget("phase (sentinel master)", host, port, password)
    if mode == "cluster":
        host, port = summary["nodes"][0].rsplit(":", 1)
        return RedisTarget("phase (cluster)", host, int(port), password, cluster=True)
    address = summary["url"].removeprefix("redis://").split("/", 1)[0]
    host, port = address.rsplit(":", 1)
    return RedisTarget("phase (standalone)", host, int(port), password)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def plain_server(binary: str, password: str) -> Iterator[RedisTarget]:
    """A redis-server with its defaults on a free loopback port, for as long as the block
    runs; its configuration (the password included) goes in on stdin."""
    port = _free_port()
    config = f'port {port}\nbind 127.0.0.1\nsave ""\nappendonly no\nrequirepass "{password}"\n'
    path = shutil.which(binary) or binary
    process = subprocess.Popen(
        [path, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        assert process.stdin is not None
        process.stdin.write(config.encode())
        process.stdin.close()
        client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=2)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RedisBenchError(f"{path} did not start on port {port}") from None
                time.sleep(0.1)
        client.close()
        yield RedisTarget("plain redis-server", "127.0.0.1", port, password)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def compare_redis(
    phase: RedisTarget,
    plain: RedisTarget,
    *,
    requests: int,
    clients: int,
    pipeline: int,
    rounds: int,
    tests: Sequence[str] = TESTS,
) -> dict[str, Any]:
    runs: dict[str, dict[str, list[float]]] = {}
    for round_number in range(rounds):
        order = (phase, plain) if round_number % 2 == 0 else (plain, phase)
        for target in order:
            key = "phase" if target is phase else "plain"
            for test, rps in run_benchmark(target, tests, requests, clients, pipeline).items():
                runs.setdefault(test, {"phase": [], "plain": []})[key].append(round(rps, 1))
    result: dict[str, Any] = {
        "target": phase.name,
        "endpoint": f"{phase.host}:{phase.port}",
        "cluster": phase.cluster,
        "requests": requests,
        "clients": clients,
        "pipeline": pipeline,
        "rounds": rounds,
        "tests": {},
    }
    for test, rps_by in runs.items():
        each = [round(r, 3) for r in ratios(rps_by["phase"], rps_by["plain"])]
        result["tests"][test] = {
            "phase_rps": rps_by["phase"],
            "plain_rps": rps_by["plain"],
            "ratios": each,
            "ratio": spread(each),
        }
    return result
