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


def parse_tps(output: str) -> tuple[float, int]:
    """(TPS without the initial connection time, failed transactions) of one pgbench run."""
    found = _TPS.search(output)
    failed = _FAILED.search(output)
    if not found and "actually processed: 0\n" in output:
        # Nothing done within the run (e.g. its clients still logging in): 0, not a gap.
        return 0.0, int(failed.group(1)) if failed else 0
    if not found:
        raise PgbenchError(f"no TPS in pgbench's output: {output.strip()[-200:]}")
    return float(found.group(1)), int(failed.group(1)) if failed else 0


def tps(target: PgTarget, password: str, workload: str, seconds: int) -> tuple[float, int]:
    threads = str(min(2, target.clients))
    argv = [pg_bin("pgbench"), "-n", "-b", workload, "-c", str(target.clients), "-j", threads]
    argv += ["-T", str(seconds), target.url]
    return parse_tps(_run(argv, password, timeout=seconds + 120))


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
    runs: dict[str, dict[str, list[float]]] = {w: {"direct": [], "pooler": []} for w in workloads}
    failed = 0
    for round_number in range(rounds):
        order = (direct, pooler) if round_number % 2 == 0 else (pooler, direct)
        for workload in workloads:
            for target in order:
                value, failures = tps(target, password, workload, seconds)
                runs[workload][target.name].append(round(value, 1))
                failed += failures
    result: dict[str, Any] = {
        "direct_clients": direct.clients,
        "pooler_clients": pooler.clients,
        "seconds": seconds,
        "rounds": rounds,
        "scale": SCALE,
        "failed_transactions": failed,
        "workloads": {},
    }
    for workload, tps_by in runs.items():
        each = [round(r, 3) for r in ratios(tps_by["pooler"], tps_by["direct"])]
        result["workloads"][workload] = {
            "direct_tps": tps_by["direct"],
            "pooler_tps": tps_by["pooler"],
            "ratios": each,
            "ratio": spread(each),
        }
    return result
