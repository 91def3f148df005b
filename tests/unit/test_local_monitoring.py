"""The local runner's view of the monitoring tier: the topology's scrape jobs at this run's
loopback ports (every gateway worker's /metrics), the exporters' commands (no secret on any
command line) and prometheus.yml's short local intervals."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scaling.local.monitoring import (
    LOCAL_SCRAPE_SECONDS,
    NODE_COLLECTORS,
    POSTGRES_EXPORTER_QUERIES,
    exporter_command,
    local_jobs,
    monitoring_nodes,
    prometheus_files,
)
from scaling.local.topology import local_topology
from scaling.model import PhaseSpec
from scaling.render.endpoints import Endpoint
from scaling.render.prometheus import ALERTS_FILE
from scaling.stackconfig import parse
from scaling.topology import Topology
from scaling.topology.monitoring import (
    NODE_EXPORTER,
    PGBOUNCER_EXPORTER,
    POSTGRES_EXPORTER,
    REDIS_EXPORTER,
)


def _spec(phase: str, processes: int = 1) -> PhaseSpec:
    values: dict[str, object] = {"sikka:phase": phase}
    if processes > 1:
        values["sikka:gateway"] = {"processes": processes}
    return parse(values, stack=phase)


def _endpoints(topology: Topology) -> tuple[dict[str, Endpoint], dict[str, Endpoint]]:
    """A distinct loopback port for every node, as a run allocates them; gateways' /metrics
    on a block of their own."""
    endpoints = {n.name: Endpoint("127.0.0.1", 20000 + i) for i, n in enumerate(topology.nodes)}
    gateways = [n for n in topology.nodes if n.tier == "gateway"]
    metrics = {g.name: Endpoint("127.0.0.1", 30000 + 100 * i) for i, g in enumerate(gateways)}
    return endpoints, metrics


@pytest.mark.parametrize("phase", ["launch", "growth", "scale"])
@pytest.mark.parametrize("processes", [1, 3])
def test_every_target_is_a_local_port(phase: str, processes: int) -> None:
    spec = _spec(phase, processes)
    topology = local_topology(spec)
    endpoints, metrics = _endpoints(topology)
    jobs = {job.name: job for job in local_jobs(topology, endpoints, metrics)}
    local = {f"{e.host}:{e.port}" for e in endpoints.values()}

    gateway = jobs["gateway"]
    served = sorted(
        (t.labels["instance"], t.address, t.labels.get("worker")) for t in gateway.targets
    )
    expected = sorted(
        (
            name,
            f"127.0.0.1:{first.port + worker}",
            str(worker) if processes > 1 else None,
        )
        for name, first in metrics.items()
        for worker in range(processes)
    )
    assert served == expected
    assert len(served) == spec.gateway.replicas * processes
    for job in jobs.values():
        for target in job.targets:
            if job.name != "gateway":
                assert target.address in local, (job.name, target)
            if target.probe is not None:  # redis_exporter's /scrape?target=
                assert target.probe.removeprefix("redis://") in local
    redis = [n for n in topology.nodes if n.tier == "redis" and not n.one_shot]
    assert {t.labels["instance"] for t in jobs["redis"].targets} == {n.name for n in redis}


def test_a_node_scraped_but_not_started_is_named() -> None:
    topology = local_topology(_spec("launch"))
    endpoints, metrics = _endpoints(topology)
    del endpoints["redis-0"]
    with pytest.raises(KeyError, match="redis-0 is scraped but was not started"):
        local_jobs(topology, endpoints, metrics)


def test_exporter_commands_carry_no_secret() -> None:
    topology = local_topology(_spec("growth"))
    listen, server = Endpoint("127.0.0.1", 21000), Endpoint("127.0.1.2", 21001)
    nodes = {n.group: n for n in monitoring_nodes(topology)}

    argv, env = exporter_command(nodes[POSTGRES_EXPORTER], listen, server)
    assert argv[1:] == ["--web.listen-address=127.0.0.1:21000"]
    argv, _ = exporter_command(nodes[POSTGRES_EXPORTER], listen, server, postgres_queries="/q.yml")
    assert argv[1:] == ["--web.listen-address=127.0.0.1:21000", "--extend.query-path=/q.yml"]
    argv, env = exporter_command(nodes[POSTGRES_EXPORTER], listen, server)
    assert env["DATA_SOURCE_URI"] == "127.0.1.2:21001/postgres?sslmode=disable"
    assert "DATA_SOURCE_PASS" not in env  # a secret reference, resolved at start
    assert nodes[POSTGRES_EXPORTER].secret_env["DATA_SOURCE_PASS"] == "monitoring-password"

    argv, env = exporter_command(nodes[PGBOUNCER_EXPORTER], listen, server)
    assert argv[1:5] == [
        "-m",
        "scaling.local.pgbouncer_exporter",
        "--serve",
        "127.0.0.1:21000=127.0.1.2:21001",
    ]
    assert nodes[PGBOUNCER_EXPORTER].secret_env == {"PGPASSWORD": "monitoring-password"}

    argv, env = exporter_command(nodes[REDIS_EXPORTER], listen, None)
    assert "-redis.addr=" in argv and not env
    assert nodes[REDIS_EXPORTER].secret_env == {"REDIS_PASSWORD": "redis-password"}

    argv, _ = exporter_command(nodes[NODE_EXPORTER], listen, None)
    assert "--collector.disable-defaults" in argv
    assert [
        a for a in argv if a.startswith("--collector.") and a != "--collector.disable-defaults"
    ] == [f"--collector.{name}" for name in NODE_COLLECTORS]


def test_prometheus_scrapes_every_few_seconds_and_loads_the_alerts(tmp_path: Path) -> None:
    spec = _spec("growth")
    assert spec.monitoring.scrape_interval_seconds > LOCAL_SCRAPE_SECONDS
    topology = local_topology(spec)
    endpoints, metrics = _endpoints(topology)
    config, alerts = prometheus_files(spec, local_jobs(topology, endpoints, metrics), tmp_path)
    document = yaml.safe_load(config.read_text())
    assert document["global"]["scrape_interval"] == f"{LOCAL_SCRAPE_SECONDS}s"
    assert document["global"]["evaluation_interval"] == f"{LOCAL_SCRAPE_SECONDS}s"
    assert {job["scrape_interval"] for job in document["scrape_configs"]} == {
        f"{LOCAL_SCRAPE_SECONDS}s"
    }
    assert document["rule_files"] == [ALERTS_FILE] and alerts == tmp_path / ALERTS_FILE
    rules = yaml.safe_load(alerts.read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} >= {"HostCpuHigh", "PostgresConnectionsHigh"}


def test_postgres_exporter_queries_publish_the_replication_gauges_the_rules_read() -> None:
    """Debian's postgres_exporter gets the replication gauges the containers' exporter has:
    the names postgres.replica_lag_seconds's PromQL asks for."""
    from scaling.metrics.queries import measure

    queries = yaml.safe_load(POSTGRES_EXPORTER_QUERIES)
    published = {
        f"{namespace}_{column}"
        for namespace, query in queries.items()
        for metric in query["metrics"]
        for column in metric
    }
    lag = measure(_spec("growth"), "postgres.replica_lag_seconds").value
    assert published == {"pg_replication_lag_seconds", "pg_replication_is_replica"}
    assert all(name in lag for name in published)
