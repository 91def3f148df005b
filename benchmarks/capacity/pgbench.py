"""pgbench through the pooler and directly, side by side: rounds alternate which goes
first, and each round gives one ratio per workload (pooler TPS / direct TPS).

Interface (what the capacity run uses; another comparison can stand in for it)::

    figures = compare_pgbench(direct, pooler, password=..., seconds=5, rounds=3)

``direct`` and ``pooler`` are :class:`PgTarget` (a libpq URL without password and the
clients pgbench opens there). The password reaches pgbench in ``PGPASSWORD``, never on its
command line. TPS are pgbench's "without initial connection time".
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.capacity.stats import ratios, spread
from scaling.local.procs import pg_bin

WORKLOADS = ("select-only", "tpcb-like")
SCALE = 10
_TPS = re.compile(r"tps = ([0-9.]+) \(without initial connection time\)")
_FAILED = re.compile(r"number of failed transactions: (\d+)")
_CONNECT = re.compile(r"initial connection time = ([0-9.]+) ms")


class PgbenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class PgTarget:
    name: str
    url: str
    clients: int


def _env(password: str) -> dict[str, str]:
    return {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}


def _run(argv: list[str], password: str, timeout: float) -> str:
    done = subprocess.run(
        argv, env=_env(password), capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode not in (0, 2) or (done.returncode == 2 and "tps =" not in done.stdout):
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise PgbenchError(f"{argv[0]} {argv[1]} failed ({done.returncode}): {' / '.join(tail)}")
    return done.stdout


def initialise(url: str, password: str, scale: int = SCALE) -> None:
    """Create pgbench's tables (scale ``scale``) once, before any round."""
    _run([pg_bin("pgbench"), "-i", "-q", "-s", str(scale), url], password, timeout=300)


@dataclass(frozen=True)
class PgRun:
    tps: float  # without the initial connection time
    failed: int  # failed transactions
    connect_ms: float | None  # how long its clients took to log in


def parse_run(output: str) -> PgRun:
    """One pgbench run's figures from its output."""
    found = _TPS.search(output)
    failed = _FAILED.search(output)
    connect = _CONNECT.search(output)
    failures = int(failed.group(1)) if failed else 0
    connect_ms = float(connect.group(1)) if connect else None
    if not found and "actually processed: 0\n" in output:
        # Nothing done within the run (its clients still logging in at the end, say): a
        # TPS of 0, with the login time that explains it.
        return PgRun(0.0, failures, connect_ms)
    if not found:
        raise PgbenchError(f"no TPS in pgbench's output: {output.strip()[-200:]}")
    return PgRun(float(found.group(1)), failures, connect_ms)


def run_once(target: PgTarget, password: str, workload: str, seconds: int) -> PgRun:
    threads = str(min(2, target.clients))
    argv = [pg_bin("pgbench"), "-n", "-b", workload, "-c", str(target.clients), "-j", threads]
    argv += ["-T", str(seconds), target.url]
    return parse_run(_run(argv, password, timeout=seconds + 120))


def compare_pgbench(
    direct: PgTarget,
    pooler: PgTarget,
    *,
    password: str,
    seconds: int,
    rounds: int,
    workloads: Sequence[str] = WORKLOADS,
) -> dict[str, Any]:
    initialise(direct.url, password)
    runs: dict[str, dict[str, list[PgRun]]] = {w: {"direct": [], "pooler": []} for w in workloads}
    for round_number in range(rounds):
        order = (direct, pooler) if round_number % 2 == 0 else (pooler, direct)
        for workload in workloads:
            for target in order:
                runs[workload][target.name].append(run_once(target, password, workload, seconds))
    every = [r for by in runs.values() for done in by.values() for r in done]
    result: dict[str, Any] = {
        "direct_clients": direct.clients,
        "pooler_clients": pooler.clients,
        "seconds": seconds,
        "rounds": rounds,
        "scale": SCALE,
        "failed_transactions": sum(r.failed for r in every),
        "workloads": {},
    }
    for workload, by in runs.items():
        direct_tps = [round(r.tps, 1) for r in by["direct"]]
        pooler_tps = [round(r.tps, 1) for r in by["pooler"]]
        each = [round(r, 3) for r in ratios(pooler_tps, direct_tps)]
        result["workloads"][workload] = {
            "direct_tps": direct_tps,
            "pooler_tps": pooler_tps,
            # How long the run's clients took to log in (pgbench's "initial connection
            # time"); a run spent logging in does no transaction.
            "direct_connect_ms": [_ms(r.connect_ms) for r in by["direct"]],
            "pooler_connect_ms": [_ms(r.connect_ms) for r in by["pooler"]],
            "ratios": each,
            "ratio": spread(each),
        }
    return result


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value)
