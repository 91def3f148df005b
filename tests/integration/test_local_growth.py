"""Growth phase: 3 Patroni members (etcd x3, HAProxy x2) behind two PgBouncers, Redis
Sentinel, 2 gateways. Failover under load: test_local_failover.py.

The session's growth phase (conftest.py), shared with test_least_privilege.py and
test_local_failover.py: the tests that leave it as they found it first (this module's after
test_least_privilege.py's), then the destructive ones (marked: restarts, kills, failovers;
test_local_failover.py's before this module's), then `down`.
"""

from __future__ import annotations

from pathlib import Path

import local_checks as checks
import psycopg
import pytest
from check_helpers import check_prometheus_agrees_with_direct, readings, run_check
from local_helpers import Phase, pg_connect, pooler_console, url_hosts
from psycopg.conninfo import make_conninfo

from scaling.advisor.verdict import Verdict
from scaling.model import MONITORING_USER

pytestmark = pytest.mark.integration

# Connections held through the first pooler while `sikka-scaling check` runs. Each lands on
# one of the pooler's processes (SO_REUSEPORT hashes the client's port) and the console the
# check asks answers for one process: with n held, the chance that the process asked holds
# none is 2**-n (1 in 16 with 4, which failed a CI run; 1 in 65,536 with 16).
CHECK_HELD = 16


@pytest.fixture(scope="module")
def phase(growth_phase: Phase) -> Phase:
    return growth_phase


def test_topology(phase: Phase) -> None:
    summary = phase.summary
    assert len(summary["gateways"]) == 2
    assert len(summary["postgres"]["replicas"]) == 2 and summary["postgres"]["pooler"]
    assert summary["redis"]["mode"] == "sentinel" and len(summary["redis"]["sentinels"]) == 3
    roles = [p["role"] for p in summary["processes"]]
    assert roles.count("sentinel") == 3 and roles.count("replica") == 4  # 2 pg + 2 redis
    # Two PgBouncers, each pooler.processes (2) processes on its address.
    assert (roles.count("dcs"), roles.count("router"), roles.count("pooler")) == (3, 2, 4)
    assert len(url_hosts(summary["postgres"]["pooler"])) == 2
    assert summary["postgres"]["leader"] == "postgres-0"  # the member that bootstrapped
    checks.check_processes_are_topology_nodes(phase)
    checks.check_all_processes_alive(phase)


def test_prometheus_scrapes_every_exporter(phase: Phase) -> None:
    waited = checks.check_monitoring_targets_up(phase)
    checks.check_monitoring_rules_loaded(phase)
    checks.check_monitoring_values(phase)
    checks.check_monitoring_keeps_secrets(phase)
    print(f"\n[{phase.spec.phase}] every scrape target up {waited:.1f}s after this test began")


def test_prometheus_and_direct_checks_agree(phase: Phase) -> None:
    check_prometheus_agrees_with_direct(phase)


# `sikka-scaling check growth` and `status growth` against this phase: every Patroni member,
# both PgBouncers, the Redis nodes behind their Sentinels, both gateways and Nginx measured
# with real numbers; progress from readiness checks asked of the live phase.
def test_check_measures_every_part_of_growth(phase: Phase) -> None:
    spec = phase.spec
    # Autocommit: the clients stay connected without pinning a server connection each (an
    # open transaction would, and the small pools' share per process would run out).
    held = [
        pg_connect(phase, phase.summary["postgres"]["pooler"], autocommit=True)
        for _ in range(CHECK_HELD)
    ]
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
    assert 0 < sum(r["value"] for r in poolers) <= CHECK_HELD + 2, poolers
    assert len(readings(doc, "pgbouncer.waiting_clients")) == len(poolers)

    nodes = readings(doc, "redis.memory")
    assert len(nodes) == len(phase.summary["redis"]["nodes"])
    assert {r["limit"] for r in nodes} == {spec.redis.memory_per_node_mb * 2**20}
    assert len(readings(doc, "gateway.connections")) == len(phase.summary["gateways"])
    assert readings(doc, "nginx.connections")[0]["value"] >= 0


def test_check_status_progress_is_asked_of_the_live_phase(phase: Phase) -> None:
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


def test_replication_follows_the_topology(phase: Phase) -> None:
    checks.check_patroni_cluster_follows_topology(phase)
    checks.check_redis_replicas_follow_topology(phase)


def test_secret_files_are_private(phase: Phase) -> None:
    state = Path(phase.run.state.state_dir)
    private = [
        Path(phase.summary["secrets_file"]),
        Path(str(phase.run.entry("pgbouncer-0").cwd)) / "userlist.txt",
        Path(str(phase.run.entry("postgres-0").cwd)) / "pgpass",
        state / "redis" / "redis-0" / "secrets.conf",
        state / "redis" / "redis-sentinel-0" / "sentinel.conf",
        Path(phase.summary["gateway_auth"]["key_file"]),
    ]
    for path in private:
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert phase.password not in (state / "state.json").read_text()
    assert phase.run.secrets["gateway-jwt-secret"] not in (state / "state.json").read_text()
    # Patroni reads its passwords from its environment: none is in a member's files.
    for member in ("postgres-0", "postgres-1", "postgres-2"):
        folder = Path(str(phase.run.entry(member).cwd))
        for written in (folder / "patroni.yml", folder / "roles.sh"):
            text = written.read_text()
            assert not [name for name, value in phase.run.secrets.items() if value in text]


def test_pooler_holds_postgresqls_own_verifier_and_passes_scram_through(phase: Phase) -> None:
    """PgBouncer's auth file holds the application role's and the monitoring role's SCRAM
    verifiers exactly as the leader stores them (salt included), never a password; a client
    logging in with the password reaches PostgreSQL through it (SCRAM pass-through needs that
    very verifier), and the exporters' login reaches the console."""
    pg = phase.summary["postgres"]
    leader = next(m["url"] for m in pg["members"] if m["name"] == pg["leader"])
    with psycopg.connect(
        make_conninfo(leader, user="postgres"), password=phase.superuser_password
    ) as conn:
        row = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (phase.spec.postgres.user,)
        ).fetchone()
        monitor = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (MONITORING_USER,)
        ).fetchone()
    assert row is not None and monitor is not None
    stored = row[0]
    assert stored == phase.run.secrets["postgres-password-scram"]
    # The monitoring role's verifier likewise: the leader stores the one the auth file holds.
    assert monitor[0] == phase.run.secrets["monitoring-password-scram"]
    secrets = phase.run.secrets
    for entry in phase.run.state.processes:
        if entry.role != "pooler":
            continue
        userlist = (Path(str(entry.cwd)) / "userlist.txt").read_text()
        assert f'"{phase.spec.postgres.user}" "{stored}"' in userlist
        assert f'"{MONITORING_USER}" "{monitor[0]}"' in userlist
        assert secrets["pgbouncer-admin-password-scram"] in userlist
        for password in ("postgres-password", "pgbouncer-admin-password", "monitoring-password"):
            assert secrets[password] not in userlist, password
    # The exporters' login, with its password, is checked against that verifier.
    with pooler_console(phase, MONITORING_USER, secrets["monitoring-password"]) as console:
        assert console.execute("SHOW POOLS").fetchall()
    for host, port in url_hosts(pg["pooler"]):
        url = (
            f"postgresql://{phase.spec.postgres.user}@{host}:{port}/{phase.spec.postgres.database}"
        )
        with pg_connect(phase, url) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (phase.spec.postgres.user,)


def test_row_written_on_primary_reaches_every_replica(phase: Phase) -> None:
    checks.check_row_reaches_replicas(phase)


def test_pgbouncer_serves_ten_times_its_pool(phase: Phase) -> None:
    checks.check_pgbouncer_serves_10x_pool(phase)


def test_redis_memory_and_policy(phase: Phase) -> None:
    checks.check_redis_memory_policy(phase)


def test_location_reaches_a_subscriber_on_another_gateway(phase: Phase) -> None:
    checks.check_fanout_across_gateways(phase)


def test_sticky_and_status_listener(phase: Phase) -> None:
    checks.check_sticky_and_status(phase)


def test_gateways_demand_tokens(phase: Phase) -> None:
    checks.check_gateway_auth_through_nginx(phase)


@pytest.mark.destructive
def test_replica_restart_catches_up(phase: Phase) -> None:
    checks.check_replica_restart_catches_up(phase)


@pytest.mark.destructive
def test_killed_gateway_clients_resume_elsewhere(phase: Phase) -> None:
    checks.check_gateway_killed_clients_resume(phase)


@pytest.mark.destructive
def test_sentinel_failover_keeps_acknowledged_writes(phase: Phase) -> None:
    checks.check_sentinel_failover(phase)


@pytest.mark.ends_phase
def test_down_leaves_nothing(phase: Phase) -> None:
    checks.check_down_leaves_nothing(phase)
