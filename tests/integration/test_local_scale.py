"""Scale phase, locally: Redis Cluster (3 masters + 3 replicas), the spec's 4 gateways, one
Nginx running both replicas' workers, and
PostgreSQL as primary + replicas + PgBouncer (Citus is not packaged for Debian here).

Tests run in file order; the destructive ones come last.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import local_checks as checks
import pytest
from local_fixtures import SMALL_POOLS, start_phase
from local_helpers import Phase

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def phase(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phase]:
    yield from start_phase("scale", tmp_path_factory, SMALL_POOLS)


def test_topology(phase: Phase) -> None:
    summary = phase.summary
    assert len(summary["gateways"]) == phase.spec.gateway.replicas == 4
    assert summary["redis"]["mode"] == "cluster" and len(summary["redis"]["nodes"]) == 6
    assert summary["postgres"]["spec_mode"] == "citus"
    assert summary["postgres"]["mode"] == "replicated" and summary["postgres"]["pooler"]
    assert any("Citus" in note for note in summary["notes"])
    # One Nginx with the workers of both replicas: the capacity of the two.
    assert any("runs all 8 workers" in note for note in summary["notes"])
    conf = (Path(phase.run.state.state_dir) / "nginx" / "nginx.conf").read_text()
    assert "worker_processes 8;" in conf
    checks.check_processes_are_topology_nodes(phase)
    checks.check_all_processes_alive(phase)


def test_prometheus_scrapes_every_exporter(phase: Phase) -> None:
    waited = checks.check_monitoring_targets_up(phase)
    checks.check_monitoring_rules_loaded(phase)
    checks.check_monitoring_values(phase)
    checks.check_monitoring_keeps_secrets(phase)
    print(f"\n[{phase.spec.phase}] every scrape target up {waited:.1f}s after this test began")


def test_replication_follows_the_topology(phase: Phase) -> None:
    """Patroni's members follow the topology; the shared cluster script paired each Redis
    replica with its topology master."""
    checks.check_patroni_cluster_follows_topology(phase)
    checks.check_redis_replicas_follow_topology(phase)


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


def test_replica_restart_catches_up(phase: Phase) -> None:
    checks.check_replica_restart_catches_up(phase)


def test_killed_gateway_clients_resume_elsewhere(phase: Phase) -> None:
    checks.check_gateway_killed_clients_resume(phase)


def test_cluster_master_failover_keeps_every_key(phase: Phase) -> None:
    checks.check_cluster_failover(phase)


def test_down_leaves_nothing(phase: Phase) -> None:
    checks.check_down_leaves_nothing(phase)
