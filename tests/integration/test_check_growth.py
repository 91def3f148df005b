"""`sikka-scaling check growth` and `status growth` against a real `local up` of the growth
phase: every Patroni member, both PgBouncers, the Redis master and replicas behind their
Sentinels, both gateways and Nginx measured with real numbers; progress from readiness
checks asked of the live phase (replicas streaming, Sentinel quorum, poolers serving)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from check_helpers import readings, run_check
from local_fixtures import SMALL_POOLS, start_phase
from local_helpers import Phase, pg_connect

from scaling.advisor.verdict import Verdict

pytestmark = pytest.mark.integration

HELD = 4


@pytest.fixture(scope="module")
def phase(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phase]:
    yield from start_phase("growth", tmp_path_factory, SMALL_POOLS)


def test_every_part_of_growth_measured(phase: Phase) -> None:
    spec = phase.spec
    held = [pg_connect(phase, phase.summary["postgres"]["pooler"]) for _ in range(HELD)]
    try:
        for conn in held:
            conn.execute("SELECT 1")
        code, doc = run_check(phase, "--local", "--no-history", "--no-host")
    finally:
        for conn in held:
            conn.close()
    assert not doc["unreachable"] and code != Verdict.UNREACHABLE, doc["unreachable"]
    members = readings(doc, "postgres.connections")
    assert len(members) == 1 + spec.postgres.read_replicas
    assert {r["limit"] for r in members} == {spec.postgres.max_connections}
    lag = readings(doc, "postgres.replica_lag_seconds")
    assert len(lag) == spec.postgres.read_replicas and all(r["value"] >= 0 for r in lag)
    behind = readings(doc, "postgres.replica_lag_bytes")  # the primary's view of each replica
    assert len(behind) == spec.postgres.read_replicas and all(r["value"] >= 0 for r in behind)

    poolers = readings(doc, "pgbouncer.clients")
    assert len(poolers) == len(phase.summary["postgres"]["pooler"].split(","))
    assert {r["limit"] for r in poolers} == {spec.pooler.max_client_conn}
    # The held clients sit on the first pooler, spread over its processes (the console
    # answers for one of them): at least one of them shows there, none is invented.
    assert 0 < sum(r["value"] for r in poolers) <= HELD + 2, poolers
    assert len(readings(doc, "pgbouncer.waiting_clients")) == len(poolers)

    nodes = readings(doc, "redis.memory")
    assert len(nodes) == len(phase.summary["redis"]["nodes"])
    assert {r["limit"] for r in nodes} == {spec.redis.memory_per_node_mb * 2**20}
    assert len(readings(doc, "gateway.connections")) == len(phase.summary["gateways"])
    assert readings(doc, "nginx.connections")[0]["value"] >= 0


def test_status_progress_is_asked_of_the_live_phase(phase: Phase) -> None:
    code, status = run_check(phase, "--local", "--no-history", "--no-host", command="status")
    progress = status["phaseProgress"]
    assert set(progress["completedActions"]) >= {
        "postgres primary accepts writes",
        "postgres replicas streaming",
        "pgbouncer serving",
        "redis nodes answer",
        "redis sentinel quorum reachable",
        "gateways serving",
        "nginx serving",
    }, progress
    checks = {c["name"]: c["detail"] for c in progress["checks"]}
    replicas = phase.spec.postgres.read_replicas
    assert checks["postgres replicas streaming"] == f"{replicas} of {replicas} replicas streaming"
    assert "OK" in checks["redis sentinel quorum reachable"]
    assert status["currentPhase"] == "growth" and status["nextPhase"] == "scale"
    assert code == status["verdict"]["exitCode"]
