"""`sikka-scaling bench` at a tiny size on the launch phase: the certificate's structure and
that its counts add up (no timing is asserted: speed is what the certificate reports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.capacity import certificate

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VERDICTS = {certificate.PASS, certificate.FAIL, certificate.NOT_FULL, certificate.NOT_APPLICABLE}


def test_a_tiny_bench_writes_a_coherent_certificate(tmp_path: Path) -> None:
    out, state = tmp_path / "out", tmp_path / "state"
    argv = [sys.executable, "-m", "scaling.cli", "bench", "launch", "--connections", "20"]
    argv += ["--trips", "4", "--seconds", "5", "--rounds", "1", "--redis-requests", "5000"]
    argv += ["--out", str(out), "--state-dir", str(state)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    cert = json.loads((out / "launch.json").read_text())
    assert (out / "launch.md").read_text() == certificate.render_markdown(cert)
    # The phase is stopped and its state removed.
    assert not state.exists()

    conns, trips = cert["connections"], cert["trips"]
    assert conns["attempted"] == 20 and conns["promised"] == 500
    assert conns["held"] + conns["refused"] + conns["errors"] == conns["attempted"]
    assert conns["refused"] == sum(conns["refused_by"].values())
    assert conns["errors"] == sum(conns["errors_by"].values())
    assert sum(conns["per_gateway"].values()) == conns["opened"] >= conns["held"]

    assert (trips["trips"], trips["drivers"], trips["riders"]) == (4, 4, 16)
    assert trips["riders_subscribed"] <= trips["riders"]
    assert trips["sent"] + trips["send_failures"] <= trips["drivers"] * trips["seconds"]
    assert trips["expected"] <= trips["sent"] * trips["riders_subscribed"]
    assert trips["received"] <= trips["expected"]
    assert trips["loss"] == trips["expected"] - trips["received"]
    assert trips["latency_ms"]["samples"] == trips["received"]
    if trips["received"]:
        assert 0 <= trips["latency_ms"]["p50"] <= trips["latency_ms"]["p99"]
        assert trips["latency_ms"]["p99"] <= trips["latency_ms"]["max"]

    # Launch has no pooler: pgbench is skipped, and the certificate says why.
    assert "no pooler" in cert["pgbench"]["skipped"]
    redis = cert["redis"]
    assert "error" not in redis, redis
    assert set(redis["tests"]) == {"SET", "GET"}
    for test in redis["tests"].values():
        assert len(test["phase_rps"]) == len(test["plain_rps"]) == len(test["ratios"]) == 1
        assert test["ratio"]["min"] == test["ratio"]["median"] == test["ratios"][0] > 0

    # Computed verdicts: a tiny run is never certified as the phase's promise.
    assert cert["verdicts"] == certificate.verdicts(cert)
    assert {v["result"] for v in cert["verdicts"]} <= VERDICTS
    assert cert["parameters"]["full_size"] is False
    assert certificate.PASS not in {v["result"] for v in cert["verdicts"]}
    assert cert["machine"]["cores"] >= 1 and cert["versions"]["python"]
    assert cert["versions"]["nginx"] and cert["versions"]["redis"]
