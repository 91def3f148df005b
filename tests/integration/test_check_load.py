"""Load applied from the test against a launch phase with a small gateway (10 WebSockets
per replica): held database connections put Postgres in the warning band, WebSockets past
the gateway's threshold are critical at once, and only once the breach has lasted the
(short) window does the check recommend promotion. One spike recommends nothing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from check_helpers import ROOT, one
from local_fixtures import start_phase
from local_helpers import Phase, new_marker, open_client, pg_connect, run_async

from scaling.advisor.verdict import Verdict

pytestmark = pytest.mark.integration

PER_GATEWAY = 10
SETS = [f"gateway.connectionsPerReplica={PER_GATEWAY}", "gateway.maxConnections=8"]
WINDOW = 10  # seconds; samples every ~2.5 s (--watch 1 plus the probes' own second)


@pytest.fixture(scope="module")
def phase(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phase]:
    overrides = {"gateway": {"connectionsPerReplica": PER_GATEWAY, "maxConnections": 8}}
    yield from start_phase("launch", tmp_path_factory, overrides)


def check(phase: Phase, history: Path, *args: str) -> list[tuple[int, dict[str, Any]]]:
    """Run the check (the host left out: the shared machine's CPU is not under test);
    every JSON document it printed, the exit code with the last."""
    sets = [arg for item in SETS for arg in ("--set", item)]
    command = [
        sys.executable, "-m", "scaling.cli", "check", "launch", "--local", "--json",
        "--state-dir", phase.run.state.state_dir, "--no-host", "--window", f"{WINDOW}s",
        "--history", str(history), *sets, *args,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    decoder, text, docs = json.JSONDecoder(), result.stdout.strip(), []
    while text:
        doc, end = decoder.raw_decode(text)
        docs.append(doc)
        text = text[end:].strip()
    assert docs, result.stderr
    assert docs[-1]["exitCode"] == result.returncode
    return [(doc["exitCode"], doc) for doc in docs]


def run_of(doc: dict[str, Any], group: str, key: str) -> dict[str, Any] | None:
    """The run of ``key`` among the document's sustained ``breaches`` or ``pending`` ones."""
    found = [b for b in doc[group] if b["key"] == key]
    return found[0] if found else None


async def _sockets(phase: Phase, count: int) -> list[Any]:
    url = phase.summary["gateways"][0]["url"]  # the gateway itself: its count is under test
    token = phase.token("rider")
    return [(await open_client(url, f"load-{new_marker()[:8]}", token))[0] for _ in range(count)]


def test_warning_then_critical_then_promotion_once_sustained(phase: Phase, tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    primary = phase.summary["postgres"]["primary"]
    limit = phase.spec.postgres.max_connections  # 20 at launch
    held = [pg_connect(phase, primary) for _ in range(int(0.65 * limit) - 1)]
    try:
        ((code, doc),) = check(phase, history)
        pg = one(doc, "postgres.connections")
        assert pg["level"] == "warning", pg
        assert 60 <= pg["percent"] < 80
        assert code == Verdict.WARNING, doc["verdict"]

        async def loaded() -> list[list[tuple[int, dict[str, Any]]]]:
            sockets = await _sockets(phase, 9)  # 90 % of 10
            try:
                first = await asyncio.to_thread(check, phase, history)
                watched = await asyncio.to_thread(
                    check, phase, history, "--watch", "1", "--count", "8"
                )
                return [first, watched]
            finally:
                for ws in sockets:
                    await ws.close()

        first, watched = run_async(loaded(), timeout=150)
    finally:
        for conn in held:
            conn.close()
    ((code, doc),) = first
    gw = one(doc, "gateway.connections")
    assert (gw["value"], gw["limit"], gw["level"]) == (9, PER_GATEWAY, "critical")
    # Critical now, not yet a reason to promote: a warning verdict, the run pending.
    assert code == Verdict.WARNING
    pending = run_of(doc, "pending", "gateway.connections")
    assert pending is not None and not pending["sustained"] and pending["level"] == "critical"
    assert not doc["breaches"] and not doc["recommendations"]["immediate"]

    codes = [c for c, _ in watched]
    print(f"\nwatched exit codes: {codes}")
    code, doc = watched[-1]
    assert code == Verdict.RECOMMEND, [d["pending"] for _, d in watched]
    sustained = run_of(doc, "breaches", "gateway.connections")
    assert sustained is not None and sustained["sustained"] and sustained["seconds"] >= WINDOW
    assert sustained["latest"] == 90 and sustained["thresholdKey"].endswith("connectionsPercent")
    (promote,) = doc["recommendations"]["immediate"]
    print(f"promotion: {json.dumps(promote)}")
    assert promote["title"] == "promote to growth"
    assert promote["commands"] == ["pulumi preview -s growth", "sikka-scaling transition growth"]
    assert any("gateway.connections" in reason for reason in promote["reasons"])
    # Before the window had passed, the same breach was a warning, not yet a recommendation.
    assert codes[0] == Verdict.WARNING and Verdict.RECOMMEND in codes
    assert doc["evidence"]["samples"] >= 4


def test_one_spike_recommends_nothing(phase: Phase, tmp_path: Path) -> None:
    history = tmp_path / "spike.jsonl"
    ((code, _),) = check(phase, history)
    assert code == Verdict.OK

    async def spike() -> list[tuple[int, dict[str, Any]]]:
        sockets = await _sockets(phase, 9)
        try:
            return await asyncio.to_thread(check, phase, history)
        finally:
            for ws in sockets:
                await ws.close()

    ((code, doc),) = run_async(spike(), timeout=60)
    assert code == Verdict.WARNING and one(doc, "gateway.connections")["level"] == "critical"
    after = check(phase, history, "--watch", "1", "--count", "6")
    for code, doc in after:
        assert code != Verdict.RECOMMEND, doc["breaches"]
        assert not doc["recommendations"]["immediate"]
        assert one(doc, "gateway.connections")["level"] == "optimal"
    code, doc = after[-1]
    assert code == Verdict.OK and doc["breaches"] == [] and doc["pending"] == []
    # The spike is in the history that was judged.
    span = doc["evidence"]["to"] - doc["evidence"]["from"]
    assert doc["evidence"]["samples"] >= 4 and span <= 2 * WINDOW
