"""What synchronous replication costs a write: commit latency with ``synchronousMode`` on and
off, measured in one run of the growth phase on 127.0.0.1.

    python -m benchmarks.sync_commit [--rows 400] [--rounds 3]

It starts the growth phase with the local runner (Patroni, etcd, HAProxy, PgBouncer), then
alternates rounds with Patroni's synchronous mode on and off (``PATCH /config`` on the
leader's REST API, waiting until PostgreSQL's ``synchronous_standby_names`` follows), each
round inserting ``--rows`` single-row transactions through the phase's front door (the
PgBouncers, then HAProxy, then the leader), and prints the latency percentiles of each mode
and their ratio. Alternating rounds spread the machine's noise over both modes. It stops the
phase when done, whatever happens.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

from scaling.local.runner import PROJECT_DIR, LocalRun, load_spec, up
from scaling.render.patroni import REST_API_USER

SETTLE_SECONDS = 30.0


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _set_synchronous(run: LocalRun, leader_api: str, primary_url: str, on: bool) -> None:
    response = httpx.patch(
        f"{leader_api}/config",
        json={"synchronous_mode": on},
        auth=(REST_API_USER, run.secrets["patroni-api-password"]),
        timeout=5,
    )
    response.raise_for_status()
    deadline = time.monotonic() + SETTLE_SECONDS
    password = run.secrets["postgres-password"]
    while time.monotonic() < deadline:
        with psycopg.connect(primary_url, password=password, autocommit=True) as conn:
            row = conn.execute("SHOW synchronous_standby_names").fetchone()
        if bool(row and row[0]) == on:
            return
        time.sleep(0.5)
    raise TimeoutError(f"synchronous_standby_names did not follow synchronous_mode={on}")


def _round(url: str, password: str, rows: int, start: int) -> list[float]:
    latencies = []
    # Transaction pooling: a prepared statement would outlive its server connection.
    with psycopg.connect(url, password=password, autocommit=True, prepare_threshold=None) as conn:
        for n in range(start, start + rows):
            began = time.perf_counter()
            conn.execute("INSERT INTO bench_sync (n) VALUES (%s)", (n,))
            latencies.append((time.perf_counter() - began) * 1000)
    return latencies


def measure(run: LocalRun, rows: int, rounds: int) -> dict[str, list[float]]:
    pg = run.summary["postgres"]
    password = run.secrets["postgres-password"]
    leader = next(m for m in pg["members"] if m["name"] == pg["leader"])
    with psycopg.connect(pg["pooler"], password=password, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_sync (n bigint PRIMARY KEY)")
    results: dict[str, list[float]] = {"on": [], "off": []}
    start = 0
    for _ in range(rounds):
        for mode in ("on", "off"):
            _set_synchronous(run, leader["api"], pg["primary"], mode == "on")
            results[mode] += _round(pg["pooler"], password, rows, start)
            start += rows
    return results


def report(results: dict[str, list[float]]) -> str:
    lines = [f"{'mode':<5} {'commits':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"]
    for mode, values in results.items():
        lines.append(
            f"{mode:<5} {len(values):>8} {statistics.median(values):>8.2f} "
            f"{_percentile(values, 0.95):>8.2f} {_percentile(values, 0.99):>8.2f}"
        )
    ratio = statistics.median(results["on"]) / statistics.median(results["off"])
    lines.append(f"synchronous / asynchronous commit latency (p50): {ratio:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=400, help="commits per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each mode")
    args = parser.parse_args(argv)
    spec = load_spec(PROJECT_DIR / "Pulumi.growth.yaml")
    with tempfile.TemporaryDirectory(prefix="sikka-bench-") as folder:
        run = up(spec, stack="bench-sync", state_dir=Path(folder) / "state")
        try:
            results = measure(run, args.rows, args.rounds)
        finally:
            run.down()
    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
