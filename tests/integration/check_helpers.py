"""Running `sikka-scaling check` from outside, as a CI job would: a subprocess, its exit
code and its JSON document."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from local_helpers import Phase, new_marker, open_client, run_async, wait_for

from scaling.metrics.queries import measures
from scaling.model import PhaseSpec

ROOT = Path(__file__).resolve().parents[2]


def run_check(
    phase: Phase, *args: str, stack: str | None = None, timeout: float = 90, command: str = "check"
) -> tuple[int, dict[str, Any]]:
    """`check <stack> --json` (or `status`, `summary`) against the phase's own state folder."""
    argv = [
        sys.executable,
        "-m",
        "scaling.cli",
        command,
        stack or phase.spec.stack or phase.summary["stack"],
        "--state-dir",
        phase.run.state.state_dir,
        "--json",
        *args,
    ]
    result = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.stdout.strip(), f"no document (exit {result.returncode}): {result.stderr}"
    return result.returncode, json.loads(result.stdout)


def readings(document: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [r for r in document["readings"] if r["key"] == key]


def one(document: dict[str, Any], key: str) -> dict[str, Any]:
    found = readings(document, key)
    assert len(found) == 1, f"{key}: {found}"
    return found[0]


# How far the two sources may differ, reading by reading. Each check opens its own
# connection (the direct probe to Postgres, PgBouncer's console, Redis, Nginx's status page)
# and Prometheus's sample is up to one scrape older: connection counts agree within a few.
CONNECTIONS_APART = 3
MEMORY_APART = 0.05  # Redis's used_memory moves with every client's buffers
HOST_MEMORY_POINTS = 3.0  # percentage points: the machine is shared, both read MemAvailable
LAG_APART = 5.0  # seconds
# Rates over different spans (Prometheus's rate() over minutes, the direct probe's second):
# compared by key and instance only.
RATES = {"host.cpu", "gateway.messages_in", "gateway.messages_out"}
APART = {
    "postgres.connections": CONNECTIONS_APART,
    "pgbouncer.clients": CONNECTIONS_APART,
    "pgbouncer.waiting_clients": CONNECTIONS_APART,
    "redis.clients": CONNECTIONS_APART,
    "nginx.connections": CONNECTIONS_APART,
    "postgres.replica_lag_seconds": LAG_APART,
    "host.memory": HOST_MEMORY_POINTS,
    "gateway.connections": 0,
    "gateway.active_trips": 0,
    "redis.evicted_keys": 0,
}


def wait_for_fresh_scrapes(url: str, since: float, timeout: float = 90) -> float:
    """Until Prometheus holds a sample of every target scraped after ``since``, every target
    up; the seconds waited."""

    def scraped() -> bool:
        body = httpx.get(f"{url}/api/v1/query", params={"query": "up"}, timeout=5).json()
        series = body["data"]["result"]
        stamps = httpx.get(
            f"{url}/api/v1/query", params={"query": "timestamp(up)"}, timeout=5
        ).json()["data"]["result"]
        return (
            bool(series)
            and all(float(s["value"][1]) == 1 for s in series)
            and len(stamps) == len(series)
            and min(float(s["value"][1]) for s in stamps) > since
        )

    return wait_for("Prometheus scrapes every target afresh", scraped, timeout, interval=1)


def compare_sources(
    spec: PhaseSpec, prometheus: dict[str, Any], direct: dict[str, Any]
) -> tuple[set[tuple[str, str]], list[str]]:
    """(the (key, instance) pairs both documents hold, every disagreement in words) over the
    keys the Prometheus check has a PromQL measure for; the direct check's own extra keys
    (disk and network rates, slow statements, a primary's view of its replicas) left out."""
    keys = {m.key for m in measures(spec)}
    by_p = {(r["key"], r["instance"]): r for r in prometheus["readings"] if r["key"] in keys}
    by_d = {(r["key"], r["instance"]): r for r in direct["readings"] if r["key"] in keys}
    problems = [f"only Prometheus has {k}" for k in sorted(by_p.keys() - by_d.keys())]
    problems += [f"only the direct check has {k}" for k in sorted(by_d.keys() - by_p.keys())]
    for pair in sorted(by_p.keys() & by_d.keys()):
        p, d = by_p[pair], by_d[pair]
        if p["limit"] != d["limit"]:
            problems.append(f"{pair}: limits {p['limit']} (Prometheus) != {d['limit']} (direct)")
        if p["value"] is None or d["value"] is None:
            problems.append(f"{pair}: unmeasured ({p.get('error')} / {d.get('error')})")
            continue
        key = pair[0]
        if key in RATES:
            continue
        if key == "redis.memory":
            close = abs(p["value"] - d["value"]) <= MEMORY_APART * max(p["value"], d["value"])
        else:
            close = abs(p["value"] - d["value"]) <= APART[key]
        if not close:
            problems.append(f"{pair}: {p['value']} (Prometheus) vs {d['value']} (direct)")
    return by_p.keys() & by_d.keys(), problems


HELD_WS = 3  # WebSockets held on the first gateway while both sources measure


def check_prometheus_agrees_with_direct(phase: Phase) -> None:
    """`check --local` and `check --prometheus <local up's Prometheus>` of the running phase:
    the same (key, instance) pairs for every key Prometheus measures, the same limits, values
    within the tolerances above. WebSockets held on the first gateway give its count a
    value both must see exactly."""
    url = phase.summary["prometheus"]["url"]
    gateway = phase.summary["gateways"][0]

    async def both() -> tuple[dict[str, Any], dict[str, Any], float]:
        token = phase.token("rider")
        sockets = [
            (await open_client(gateway["url"], f"agree-{new_marker()[:8]}", token))[0]
            for _ in range(HELD_WS)
        ]
        try:
            since = time.time()
            waited = await asyncio.to_thread(wait_for_fresh_scrapes, url, since)
            _, direct = await asyncio.to_thread(run_check, phase, "--local", "--no-history")
            _, prom = await asyncio.to_thread(
                run_check, phase, "--prometheus", url, "--window", "30s", "--step", "5s"
            )
            return prom, direct, waited
        finally:
            for ws in sockets:
                await ws.close()

    prom, direct, waited = run_async(both(), timeout=240)
    assert prom["source"] == "prometheus" and direct["source"] == "direct"
    assert not prom["unreachable"] and not direct["unreachable"], (
        prom["unreachable"],
        direct["unreachable"],
    )
    agreed, problems = compare_sources(phase.spec, prom, direct)
    print(
        f"\n[{phase.spec.phase}] scraped afresh after {waited:.1f}s; {len(agreed)} readings "
        f"agree: {sorted({k for k, _ in agreed})}"
    )
    d = {(r["key"], r["instance"]): r for r in direct["readings"]}
    p = {(r["key"], r["instance"]): r for r in prom["readings"]}
    widest: dict[str, float] = {}
    for pair in agreed:
        if p[pair]["value"] is not None and d[pair]["value"] is not None:
            apart = abs(p[pair]["value"] - d[pair]["value"])
            widest[pair[0]] = max(widest.get(pair[0], 0.0), apart)
    print(f"[{phase.spec.phase}] widest gap per key: {dict(sorted(widest.items()))}")
    assert not problems, problems
    # Every part of the phase is among them, named after its node.
    instances = {instance for _, instance in agreed}
    assert {g["id"] for g in phase.summary["gateways"]} <= instances
    first = p[("gateway.connections", gateway["id"])]
    assert first["value"] == HELD_WS, first
