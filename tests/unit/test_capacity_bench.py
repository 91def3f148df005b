"""The capacity bench's decisions (benchmarks/capacity): what a run opens and from where,
how figures become verdicts, and the README table of the committed certificates."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.capacity import certificate, plan
from benchmarks.capacity.redisbench import parse_csv
from benchmarks.capacity.run import pgbench_figures
from benchmarks.capacity.stats import percentile, ratios, spread
from scaling.model import Phase
from scaling.stackconfig import parse

README = Path(__file__).resolve().parents[2] / "README.md"


def spec_of(phase: str) -> Any:
    return parse({"sikka:phase": phase}, stack=phase)


@pytest.mark.parametrize(
    ("phase", "connections", "trips", "addresses"),
    [("launch", 500, 250, 16), ("growth", 2000, 1000, 16), ("scale", 10_000, 2000, 20)],
)
def test_defaults_are_the_phase_promises(
    phase: str, connections: int, trips: int, addresses: int
) -> None:
    the_plan = plan.make_plan(spec_of(phase), phase)
    assert the_plan.connections == the_plan.promised_connections == connections
    assert the_plan.trips == trips and the_plan.full_size
    assert len(the_plan.source_addresses) == addresses
    spec = spec_of(phase)
    # Each address stays within half the accept gate's limit and within the upgrade burst.
    assert the_plan.per_address * 2 <= spec.nginx.per_client_connections
    assert the_plan.per_address <= the_plan.upgrade_burst
    assert the_plan.per_address * len(the_plan.source_addresses) >= connections
    # Trips within the table's range.
    assert spec.capacity.trips.min <= trips <= (spec.capacity.trips.max or trips)


def test_source_addresses_are_distinct_and_never_the_phases_own() -> None:
    found = [plan.source_address(i) for i in range(2000)]
    assert len(set(found)) == 2000
    assert "127.0.0.1" not in found
    assert not [a for a in found if a.startswith("127.0.1.")]
    assert all(0 < int(a.rsplit(".", 1)[1]) < 255 for a in found)


def test_every_trip_has_one_driver_and_its_share_of_riders() -> None:
    members = plan.members(23, 5)
    assert [m.index for m in members] == list(range(23))
    drivers = [m for m in members if m.driver]
    assert sorted(m.trip for m in drivers) == [0, 1, 2, 3, 4]
    riders = [m.trip for m in members if not m.driver]
    assert sorted({riders.count(t) for t in range(5)}) == [3, 4]  # 18 riders over 5 trips


def test_small_runs_and_bad_options() -> None:
    small = plan.make_plan(spec_of("launch"), "launch", connections=20, trips=4, seconds=5)
    assert not small.full_size and small.riders == 16
    with pytest.raises(plan.PlanError, match="--trips"):
        plan.make_plan(spec_of("launch"), "launch", connections=20, trips=11)
    with pytest.raises(plan.PlanError, match="--connections"):
        plan.make_plan(spec_of("launch"), "launch", connections=1)
    with pytest.raises(plan.PlanError, match="--seconds"):
        plan.make_plan(spec_of("launch"), "launch", seconds=0)


def test_statistics() -> None:
    assert percentile(list(range(1, 101)), 0.99) == 99
    assert percentile(list(range(1, 101)), 0.5) == 50
    assert percentile([], 0.5) is None
    assert spread([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0}
    assert ratios([1.0, 2.0, 3.0], [2.0, 0.0, 3.0]) == [0.5, 1.0]


def test_redis_benchmark_csv_is_parsed() -> None:
    csv = '"test","rps","avg_latency_ms"\n"SET","81234.5","0.3"\n"GET","90000.0","0.2"\n'
    assert parse_csv(csv) == {"SET": 81234.5, "GET": 90000.0}


def test_the_pooler_comparison_becomes_the_certificates_pgbench_part() -> None:
    compared = {
        "clients": 400,
        "direct_clients": 40,
        "seconds": 10,
        "rounds": 3,
        "threads": 2,
        "scale": 10,
        "baselines": ["direct"],
        "hosts": {"direct": 1, "pooler": 2},
        "workloads": {
            "select-only": {
                "tps": {"direct": [100.0, 0.0, 200.04], "pooler": [90.0, 50.0, 100.0]},
                "login_seconds": {"direct": [0.1, 0.2, 0.1], "pooler": [1.2345, 3.0, 2.0]},
                "failed": {"direct": 1, "pooler": 2},
            }
        },
    }
    figures = pgbench_figures(compared)
    assert figures["pooler_clients"] == 400
    assert figures["pooler_addresses"] == 2
    assert figures["failed_transactions"] == 3
    workload = figures["workloads"]["select-only"]
    assert workload["direct_tps"] == [100.0, 0.0, 200.0]
    assert workload["pooler_connect_ms"] == [1234, 3000, 2000]
    # The round whose direct run did nothing gives no ratio.
    assert workload["ratios"] == [0.9, 0.5]
    assert workload["ratio"] == spread([0.9, 0.5])
    # What the certificate reads from it.
    cert = sample_certificate()
    cert["pgbench"] = figures
    assert "select-only 0.70x" in certificate.readme_table([cert])
    markdown = certificate.render_markdown(cert)
    assert "| select-only | 100 / 0 / 200 | 90 / 50 / 100 | 0.70x (0.50-0.90) |" in markdown
    assert "400 clients through the pooler (spread evenly over its 2 addresses)" in markdown


def sample_certificate() -> dict[str, Any]:
    """A certificate as run.assemble builds it, with every promise kept."""
    cert: dict[str, Any] = {
        "stack": "growth",
        "phase": "growth",
        "date": "2026-01-01T00:00:00+00:00",
        "parameters": plan.make_plan(spec_of("growth"), "growth").as_dict(),
        "machine": {
            "cpu": "cpu",
            "cores": 2,
            "memory_mb": 1024,
            "kernel": "6",
            "os": "Linux",
            "open_files": {"soft": 1, "hard": 2},
            "load_average": [0.1, 0.1, 0.1],
        },
        "versions": {"nginx": "1", "project_commit": "abc"},
        "connections": {
            "promised": 2000,
            "attempted": 2000,
            "opened": 2000,
            "held": 2000,
            "refused": 0,
            "errors": 0,
            "refused_by": {},
            "errors_by": {},
            "open_seconds": 10.0,
            "per_gateway": {"gateway-0": 1000, "gateway-1": 1000},
        },
        "trips": {
            "trips": 1000,
            "drivers": 1000,
            "riders": 1000,
            "riders_subscribed": 1000,
            "seconds": 60,
            "sent": 60000,
            "send_failures": 0,
            "publish_errors": 0,
            "error_frames": {},
            "expected": 60000,
            "received": 60000,
            "loss": 0,
            "latency_ms": {"p50": 2.0, "p99": 20.0, "max": 40.0, "samples": 60000},
            "client_cpu_percent": 50.0,
        },
        "pgbench": {
            "direct_clients": 40,
            "pooler_clients": 400,
            "seconds": 10,
            "rounds": 3,
            "scale": 10,
            "failed_transactions": 0,
            "workloads": {
                "select-only": {
                    "direct_tps": [100.0, 100.0, 100.0],
                    "pooler_tps": [90.0, 95.0, 80.0],
                    "ratios": [0.9, 0.95, 0.8],
                    "ratio": spread([0.9, 0.95, 0.8]),
                }
            },
        },
        "redis": {
            "target": "phase (sentinel master)",
            "endpoint": "127.0.0.1:1",
            "cluster": False,
            "requests": 1,
            "clients": 1,
            "pipeline": 16,
            "rounds": 3,
            "tests": {
                "SET": {
                    "phase_rps": [1.0],
                    "plain_rps": [2.0],
                    "ratios": [0.5],
                    "ratio": spread([0.5]),
                }
            },
        },
        "notes": [],
    }
    cert["verdicts"] = certificate.verdicts(cert)
    cert["overall"] = certificate.overall(cert["verdicts"])
    return cert


def results(cert: dict[str, Any]) -> list[str]:
    return [v["result"] for v in certificate.verdicts(cert)]


def test_verdicts_follow_the_figures() -> None:
    cert = sample_certificate()
    assert results(cert) == ["pass"] * 4
    assert certificate.overall(certificate.verdicts(cert)) == "pass"

    held = copy.deepcopy(cert)
    held["connections"].update(held=1999, refused=1, refused_by={"close 1013": 1})
    assert results(held)[0] == "FAIL"

    slow = copy.deepcopy(cert)
    slow["trips"]["latency_ms"]["p99"] = 50.1
    assert results(slow)[1] == "FAIL"

    lost = copy.deepcopy(cert)
    lost["trips"].update(received=59_999, loss=1)
    assert results(lost)[2] == "FAIL"
    unsubscribed = copy.deepcopy(cert)
    unsubscribed["trips"]["riders_subscribed"] = 999
    assert results(unsubscribed)[2] == "FAIL"

    pooler = copy.deepcopy(cert)
    pooler["pgbench"]["workloads"]["select-only"]["ratio"]["median"] = 0.84
    assert results(pooler)[3] == "FAIL"
    assert certificate.overall(certificate.verdicts(pooler)) == "FAIL"

    no_pooler = copy.deepcopy(cert)
    no_pooler["pgbench"] = {"skipped": "no pooler"}
    assert results(no_pooler)[3] == "n/a"

    small = copy.deepcopy(cert)
    small["parameters"]["full_size"] = False
    small["connections"].update(attempted=20, held=20)
    assert results(small)[:3] == ["not at full size"] * 3
    small["connections"]["held"] = 19
    assert results(small)[0] == "FAIL"


def test_markdown_quotes_the_figures() -> None:
    text = certificate.render_markdown(sample_certificate())
    assert "| 2,000 | 0 | 0 | gateway-0: 1,000, gateway-1: 1,000 |" in text
    assert "0.90x (0.80-0.95)" in text
    assert "Capacity certificate: growth" in text


def test_readme_quotes_the_committed_certificates() -> None:
    certs = certificate.load_certificates()
    assert certs, "no certificate committed in benchmarks/certificates"
    for cert in certs:
        computed = [(v["promise"], v["result"]) for v in certificate.verdicts(cert)]
        stored = [(v["promise"], v["result"]) for v in cert["verdicts"]]
        assert stored == computed, "verdicts were edited by hand"
        assert cert["overall"] == certificate.overall(cert["verdicts"])
        assert Phase(cert["phase"])
    text = README.read_text()
    assert certificate.with_readme_table(text, certs) == text, (
        "regenerate: python -m benchmarks.capacity.readme README.md"
    )


def test_committed_markdown_is_rendered_from_its_json() -> None:
    for path in sorted(certificate.CERTIFICATES.glob("*.json")):
        cert = json.loads(path.read_text())
        assert path.with_suffix(".md").read_text() == certificate.render_markdown(cert)


def test_bad_bench_options_are_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from scaling.cli import main

    state = tmp_path / "state"
    argv = ["bench", "launch", "--connections", "20", "--trips", "11", "--state-dir", str(state)]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "bench launch: --trips: between 1 and 10 for 20 connections" in err
    assert not state.exists() and not (tmp_path / "out").exists()


def test_the_client_opens_counts_and_times_the_trip_load() -> None:
    """The one trip-load client (the bench's, and gateway_fanout's) against two stand-in
    gateways on 127.0.0.1 that share their subscriptions as Redis would: every connection
    is counted on the gateway that welcomed it, each trip's riders get every location their
    driver sent, and the latencies are one per receipt."""
    from websockets.asyncio.server import ServerConnection, serve

    from benchmarks.capacity import connections
    from benchmarks.capacity.trips import run_trip_load
    from benchmarks.gateway_fanout import gateway_of

    trips, riders = 3, 2
    count = trips * (1 + riders)
    subscribers: dict[str, set[ServerConnection]] = {}

    def gateway(name: str) -> Any:
        async def handler(ws: ServerConnection) -> None:
            await ws.send(json.dumps({"type": "welcome", "gateway": name}))
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] == "subscribe":
                    subscribers.setdefault(message["trip_id"], set()).add(ws)
                    await ws.send(json.dumps({"type": "subscribed"}))
                elif message["type"] == "location":
                    for rider in subscribers.get(message["trip_id"], set()):
                        await rider.send(raw)

        return handler

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], list[str | None]]:
        async with (
            serve(gateway("a"), "127.0.0.1", 0) as a,
            serve(gateway("b"), "127.0.0.1", 0) as b,
        ):
            urls = [f"ws://127.0.0.1:{s.sockets[0].getsockname()[1]}/" for s in (a, b)]
            opened = await connections.open_connections(
                lambda i: urls[gateway_of(i, trips, 2)],
                count,
                source_for=lambda i: "127.0.0.1",
                token_for=lambda i: None,
                rate=1000,
                concurrency=10,
                compression="deflate",
            )
            extensions = [
                o.ws.response.headers.get("Sec-WebSocket-Extensions")
                for o in opened.connections.values()
                if o.ws.response is not None
            ]
            try:
                figures = await run_trip_load(
                    {i: o.ws for i, o in opened.connections.items()},
                    plan.members(count, trips),
                    [f"trip-{t}" for t in range(trips)],
                    seconds=2,
                )
                counts = connections.tally(opened)
            finally:
                await connections.close_all(opened)
        return counts, figures, extensions

    # A loop of its own: asyncio.run would unset the current loop the Pulumi tests rely on.
    loop = asyncio.new_event_loop()
    try:
        counts, figures, extensions = loop.run_until_complete(scenario())
    finally:
        loop.close()
    # drivers of trips 0, 1, 2 on a, b, a; rider k of trip t on (t + 1 + k) % 2: a, b
    # for each trip, so every trip's updates cross gateways
    assert counts["held"] == counts["attempted"] == count
    assert counts["per_gateway"] == {"a": 5, "b": 4}
    for trip in range(trips):
        riding = [m.index for m in plan.members(count, trips) if m.trip == trip and not m.driver]
        assert {gateway_of(i, trips, 2) for i in riding} == {0, 1}
    assert len(extensions) == count
    assert all(e is not None and "permessage-deflate" in e for e in extensions)
    assert figures["riders_subscribed"] == trips * riders
    assert figures["sent"] == trips * 2
    assert figures["expected"] == figures["received"] == trips * 2 * riders
    assert figures["loss"] == 0
    latency = figures["latency_ms"]
    assert latency["samples"] == figures["received"]
    assert 0 <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert figures["window"][0] <= figures["window"][1]
