"""`sikka-scaling check launch` against a real `local up` of the launch phase: real
numbers from every part, compared with what the parts say themselves; a stopped part is
reported unreachable (never zero) with its exit code."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import psutil
import psycopg
import pytest
from check_helpers import one, readings, run_check, wait_for_fresh_scrapes
from local_helpers import Phase, new_marker, open_client, pg_connect, run_async, wait_for

from scaling.advisor.verdict import Verdict

pytestmark = pytest.mark.integration

HELD_DB = 3
HELD_WS = 4


@pytest.fixture(scope="module")
def phase(launch_phase: Phase) -> Phase:
    """The session's launch phase (conftest.py), left as this module found it."""
    return launch_phase


def _history_lines(phase: Phase) -> int:
    path = Path(phase.run.state.state_dir) / "check-history.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_every_part_measured_with_real_numbers(phase: Phase) -> None:
    """Database connections and WebSockets held by the test show up as such."""

    before = _history_lines(phase)
    primary = phase.summary["postgres"]["primary"]
    held = [pg_connect(phase, primary) for _ in range(HELD_DB)]
    try:
        with pg_connect(phase, primary) as conn:
            max_connections = int(conn.execute("SHOW max_connections").fetchone()[0])  # type: ignore[index]

        async def measured() -> tuple[int, dict]:
            token = phase.token("rider")
            sockets = [
                (await open_client(phase.nginx_ws, f"check-{new_marker()[:8]}", token))[0]
                for _ in range(HELD_WS)
            ]
            try:
                return await asyncio.to_thread(run_check, phase, "--local", "--window", "60s")
            finally:
                for ws in sockets:
                    await ws.close()

        code, doc = run_async(measured(), timeout=120)
    finally:
        for conn in held:
            conn.close()
    print("\n" + json.dumps(doc["readings"], indent=1))
    assert doc["source"] == "direct" and doc["phase"] == "launch"
    assert not doc["unreachable"], doc["unreachable"]
    assert code == doc["exitCode"] and code != Verdict.UNREACHABLE

    cpu = one(doc, "host.cpu")
    assert 0 <= cpu["value"] <= 100 and cpu["level"] in ("optimal", "warning", "critical")
    memory = one(doc, "host.memory")
    assert abs(memory["value"] - psutil.virtual_memory().percent) < 10

    pg = one(doc, "postgres.connections")
    # The held connections and the check's own, of the phase's max_connections.
    assert HELD_DB + 1 <= pg["value"] <= HELD_DB + 10, pg
    assert pg["limit"] == max_connections == phase.spec.postgres.max_connections
    assert pg["percent"] == pytest.approx(100 * pg["value"] / max_connections, abs=0.01)

    node = phase.redis_client("127.0.0.1", int(phase.summary["redis"]["url"].split(":")[2][:-2]))
    info = node.info("memory")
    redis_memory = one(doc, "redis.memory")
    assert redis_memory["limit"] == info["maxmemory"] == phase.spec.redis.memory_per_node_mb * 2**20
    assert redis_memory["value"] == pytest.approx(info["used_memory"], rel=0.5)
    clients = one(doc, "redis.clients")
    assert clients["value"] >= 1 and clients["limit"] == phase.spec.redis.max_clients
    assert one(doc, "redis.evicted_keys")["value"] == 0

    gw = one(doc, "gateway.connections")
    assert gw["value"] == HELD_WS, gw
    assert gw["limit"] == phase.spec.gateway.connections_per_replica
    nginx = one(doc, "nginx.connections")
    assert nginx["value"] >= HELD_WS and nginx["limit"] == phase.spec.nginx.instance_capacity
    for row in doc["readings"]:
        assert row["value"] is not None and row["error"] is None, row
    assert _history_lines(phase) == before + 1


def test_endpoints_document_reaches_the_same_parts(phase: Phase, tmp_path: Path) -> None:
    document = tmp_path / "launch.json"
    document.write_text(json.dumps(phase.summary))
    code, doc = run_check(phase, "--endpoints", str(document), "--no-history")
    _, local_doc = run_check(phase, "--local", "--no-history")
    assert not doc["unreachable"] and code != Verdict.UNREACHABLE

    def parts(d: dict) -> set[tuple[str, str]]:
        return {(r["key"], r["instance"]) for r in d["readings"] if r["tier"] != "host"}

    assert parts(doc) == parts(local_doc)
    assert {k for k, _ in parts(doc)} >= {
        "postgres.connections",
        "redis.memory",
        "gateway.connections",
        "nginx.connections",
    }
    assert doc["evidence"]["historyFile"] is None


def test_stopped_redis_is_unreachable_not_zero(phase: Phase) -> None:
    entry = phase.run.entry("redis-0")
    assert entry.pid is not None
    process = psutil.Process(entry.pid)
    process.kill()
    process.wait(10)
    try:
        code, doc = run_check(phase, "--local", "--window", "60s")
        assert code == Verdict.UNREACHABLE == doc["exitCode"], doc["verdict"]
        (redis_row,) = readings(doc, "redis.memory")
        assert redis_row["value"] is None and redis_row["level"] == "unreachable"
        assert "Connection" in redis_row["error"] or "refused" in redis_row["error"].lower()
        assert f"redis {redis_row['instance']}" in doc["unreachable"]
        # The rest is still measured.
        assert one(doc, "postgres.connections")["value"] is not None
        assert one(doc, "nginx.connections")["value"] is not None
        # Progress is asked of the live system: Redis is now a critical pending action.
        code, status = run_check(phase, "--local", "--no-history", command="status")
        progress = status["phaseProgress"]
        assert "redis nodes answer" in progress["criticalActions"], progress
        assert "postgres primary accepts writes" in progress["completedActions"]
        assert code == Verdict.UNREACHABLE == status["verdict"]["exitCode"]
    finally:
        phase.run.start_process("redis-0")
        node = phase.redis_client("127.0.0.1", entry.port or 0)
        wait_for("redis-0 answers again", lambda: bool(node.ping()), 30)
    code, doc = run_check(phase, "--local", "--no-history")
    assert not doc["unreachable"] and code != Verdict.UNREACHABLE


def test_stopped_gateway_is_unreachable(phase: Phase) -> None:
    entry = phase.run.entry("gateway-0")
    assert entry.pid is not None
    process = psutil.Process(entry.pid)
    process.kill()
    process.wait(10)
    try:
        code, doc = run_check(phase, "--local", "--no-history")
        assert code == Verdict.UNREACHABLE
        (row,) = readings(doc, "gateway.connections")
        assert row["value"] is None and row["error"]
    finally:
        phase.run.start_process("gateway-0")
        with contextlib.suppress(psycopg.Error):
            pass
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        code, doc = run_check(phase, "--local", "--no-history")
        if not doc["unreachable"]:
            break
        time.sleep(1)
    assert not doc["unreachable"], doc["unreachable"]


def test_status_and_summary_documents(phase: Phase) -> None:
    # The parts stopped above are back: Prometheus has scraped them again before the
    # readiness check asks it.
    wait_for_fresh_scrapes(phase.summary["prometheus"]["url"], time.time())
    code, status = run_check(phase, "--local", "--no-history", "--no-host", command="status")
    assert (status["currentPhase"], status["nextPhase"]) == ("launch", "growth")
    capacity = status["currentCapacity"]
    assert capacity["maxConcurrentUsers"] == phase.spec.gateway.max_connections
    assert capacity["concurrentUsers"] == 0 and capacity["utilizationPercentage"] == 0
    progress = status["phaseProgress"]
    assert set(progress["completedActions"]) >= {
        "postgres primary accepts writes",
        "redis nodes answer",
        "gateways serving",
        "nginx serving",
    }
    # `local up` runs Prometheus beside the phase: its targets are asked too, and all up.
    assert "monitoring scrapes every target" in progress["completedActions"]
    assert progress["pendingActions"] == [] and progress["criticalActions"] == []
    done, total = len(progress["completedActions"]), len(progress["checks"])
    assert progress["progressPercentage"] == round(100 * done / total, 1)
    database = status["infrastructure"]["database"]
    assert database["configuredMax"] == phase.spec.postgres.max_connections
    assert database["current"] >= 1
    assert set(status["recommendations"]) == {"immediate", "shortTerm", "longTerm"}
    assert status["timeline"]["estimatedTimeToNextPhase"] == "unknown"  # no history, no trend
    assert code == status["verdict"]["exitCode"]

    code, summary = run_check(phase, "--local", "--no-history", "--no-host", command="summary")
    assert (
        summary["currentPhase"] == "launch"
        and summary["progressPercentage"] == (progress["progressPercentage"])
    )
    assert code == summary["exitCode"]


def test_single_part_flags_probe_only_those_parts(
    phase: Phase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No local state needed: the parts named by flags, passwords from the clients' usual
    environment variables."""
    redis_port = phase.summary["redis"]["url"].rsplit(":", 1)[1].split("/")[0]
    primary = phase.summary["postgres"]["primary"].split("@", 1)[1].split("/")[0]
    monkeypatch.setenv("REDISCLI_AUTH", phase.redis_password)
    monkeypatch.setenv("PGPASSWORD", phase.superuser_password)
    code, doc = run_check(
        phase,
        "--redis", f"127.0.0.1:{redis_port}",
        "--postgres", primary,
        "--nginx-status", phase.summary["nginx"]["status_url"],
        "--no-host",
        "--no-history",
    )  # fmt: skip
    assert {r["tier"] for r in doc["readings"]} == {"redis", "postgres", "nginx"}
    assert not doc["unreachable"] and code != Verdict.UNREACHABLE
    assert one(doc, "redis.memory")["value"] > 0
    assert one(doc, "postgres.connections")["value"] >= 1
    # A wrong password is the part's own refusal, reported as unreachable.
    monkeypatch.setenv("REDISCLI_AUTH", "wrong")
    code, doc = run_check(
        phase, "--redis", f"127.0.0.1:{redis_port}", "--no-host", "--no-history"
    )  # fmt: skip
    assert code == Verdict.UNREACHABLE
    assert "invalid username-password" in one(doc, "redis.memory")["error"].lower()
