"""Monitoring is part of the phase: exporters and Prometheus come from the one Topology, every
server is a scrape target, and no credential reaches a rendered file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from scaling.bundle import render_bundle
from scaling.model import MONITORING_USER, PhaseSpec
from scaling.render.env import SECRET_VARIABLES
from scaling.render.prometheus import ResolvedJob, StaticTarget, render_prometheus_yml
from scaling.stackconfig import parse
from scaling.topology import Node, build_topology
from scaling.topology.monitoring import monitoring_jobs, scrape_jobs

STACKS = ("launch", "growth", "scale")


def spec_of(stack: str, **overrides: Any) -> PhaseSpec:
    return parse({"sikka:phase": stack, **overrides}, stack=stack)


def targets_of(job: ResolvedJob) -> dict[str, StaticTarget]:
    return {t.labels["instance"] + t.labels.get("worker", ""): t for t in job.targets}


def jobs_by_name(spec: PhaseSpec) -> dict[str, ResolvedJob]:
    return {job.name: job for job in scrape_jobs(build_topology(spec))}


@pytest.mark.parametrize("stack", ["launch", "growth"])
def test_every_server_of_a_docker_phase_is_scraped(stack: str) -> None:
    topology = build_topology(spec_of(stack))
    jobs = jobs_by_name(topology.spec)
    measured = {t.labels["instance"] for job in jobs.values() for t in job.targets}
    servers = {
        n.name
        for n in topology.nodes
        if n.tier != "monitoring" and not n.one_shot and n.role not in ("router", "dcs")
    }
    assert servers <= measured, servers - measured
    # One postgres_exporter per member, each reading its own member.
    members = [n for n in topology.tier("postgres") if n.role in ("primary", "replica")]
    postgres = targets_of(jobs["postgres"])
    assert set(postgres) == {m.name for m in members}
    for member in members:
        exporter = topology.node(f"postgres-exporter-{member.ordinal}")
        assert postgres[member.name].address == f"{exporter.name}:9187"
        assert exporter.env["DATA_SOURCE_URI"] == f"{member.name}:5432/postgres?sslmode=disable"
        assert exporter.env["DATA_SOURCE_USER"] == MONITORING_USER
        assert exporter.secret_env == {"DATA_SOURCE_PASS": "monitoring-password"}
    assert jobs["node"].targets[0].address == "node-exporter:9100"
    assert targets_of(jobs["nginx"])["nginx"].address == "nginx-exporter-0:9113"
    scrape_uri = topology.node("nginx-exporter-0").command[0]
    assert scrape_uri == "--nginx.scrape-uri=http://nginx:8081/nginx_status"
    assert jobs["prometheus"].targets[0].address == "prometheus:9090"


def test_redis_is_read_through_one_multi_target_exporter() -> None:
    topology = build_topology(spec_of("growth"))
    redis = jobs_by_name(topology.spec)["redis"]
    assert redis.path == "/scrape" and redis.probe_param == "target"
    probes = {t.labels["instance"]: (t.address, t.probe) for t in redis.targets}
    assert probes == {
        **{f"redis-{i}": ("redis-exporter:9121", f"redis://redis-{i}:6379") for i in range(3)},
        **{
            f"redis-sentinel-{i}": ("redis-exporter:9121", f"redis://redis-sentinel-{i}:26379")
            for i in range(3)
        },
    }
    exporter = topology.node("redis-exporter")
    assert exporter.secret_env == {"REDIS_PASSWORD": "redis-password"}
    assert "--redis.addr=" in exporter.command
    # It starts once every server it reads is up.
    scraped = {e.target for e in topology.edges_from("redis-exporter", "scrapes")}
    assert scraped == set(probes)


def test_pgbouncer_exporter_logs_in_as_the_monitoring_user_without_a_password_in_text() -> None:
    topology = build_topology(spec_of("growth"))
    for ordinal in (0, 1):
        exporter = topology.node(f"pgbouncer-exporter-{ordinal}")
        dsn = exporter.env["PGBOUNCER_EXPORTER_CONNECTION_STRING"]
        assert dsn == (
            f"postgres://{MONITORING_USER}@pgbouncer-{ordinal}:6432/pgbouncer?sslmode=disable"
        )
        assert exporter.secret_env == {"PGPASSWORD": "monitoring-password"}


@pytest.mark.parametrize("processes", [1, 3])
def test_every_gateway_worker_port_is_a_target(processes: int) -> None:
    spec = spec_of("growth", **{"sikka:gateway": {"processes": processes}})
    gateway = jobs_by_name(spec)["gateway"]
    addresses = sorted(t.address for t in gateway.targets)
    metrics = spec.gateway.metrics_port
    assert addresses == sorted(
        f"gateway-{g}:{metrics + w}" for g in range(spec.gateway.replicas) for w in range(processes)
    )
    # Each worker's series stay apart: a worker label when there are several.
    labels = {tuple(sorted(t.labels.items())) for t in gateway.targets}
    assert len(labels) == len(gateway.targets)
    assert all(("worker" in t.labels) == (processes > 1) for t in gateway.targets)


def test_a_view_names_the_addresses() -> None:
    """The local runner's view: every node on loopback at a port of its own."""
    topology = build_topology(spec_of("growth"))
    ports: dict[tuple[str, int], int] = {}

    def loopback(node: Node, port: int) -> str:
        return f"127.0.0.1:{ports.setdefault((node.name, port), 20000 + len(ports))}"

    jobs = {job.name: job for job in scrape_jobs(topology, loopback)}
    assert all(t.address.startswith("127.0.0.1:") for job in jobs.values() for t in job.targets)
    redis_probes = [t.probe for t in jobs["redis"].targets]
    assert all(p is not None and p.startswith("redis://127.0.0.1:") for p in redis_probes)
    # The unresolved jobs name the same nodes.
    unresolved = {job.name: job for job in monitoring_jobs(topology)}
    assert [t.node for t in unresolved["redis"].targets] == [
        t.labels["instance"] for t in jobs["redis"].targets
    ]


def test_kubernetes_leaves_postgres_to_stackgres_and_the_host_to_the_cluster() -> None:
    topology = build_topology(spec_of("scale"))
    monitors = {n.name: n.role for n in topology.tier("monitoring")}
    assert monitors == {"redis-exporter": "exporter"}
    jobs = {job.name: job for job in monitoring_jobs(topology)}
    assert not jobs["postgres"].targets and not jobs["pgbouncer"].targets
    # Nginx's exporter runs beside it in its pod: the target is the Nginx pod.
    assert {t.exporter for t in jobs["nginx"].targets} == {n.name for n in topology.tier("nginx")}


SCALE_ON_DOCKER = {
    "sikka:platform": "docker",
    "sikka:autoscaling": {"enabled": False},
    "sikka:postgres": {"mode": "replicated"},
}


@pytest.mark.parametrize("stack", STACKS)
def test_prometheus_keeps_the_phase_retention_in_its_own_volume(stack: str) -> None:
    spec = spec_of(stack, **(SCALE_ON_DOCKER if stack == "scale" else {}))
    prometheus = build_topology(spec).node("prometheus")
    (volume,) = prometheus.volumes
    assert volume.name == "prometheus-data" and volume.size_gb == spec.monitoring.storage_gb
    assert f"--storage.tsdb.retention.time={spec.monitoring.retention_days}d" in prometheus.command
    size = int(spec.monitoring.storage_gb * 0.8)
    assert f"--storage.tsdb.retention.size={size}GB" in prometheus.command
    assert {f.render_name for f in prometheus.files} == {"prometheus.yml", "alerts.yml"}
    config = yaml.safe_load(prometheus.files[0].content)
    assert config["rule_files"] == ["alerts.yml"]
    assert config["global"]["scrape_interval"] == f"{spec.monitoring.scrape_interval_seconds}s"


def test_prometheus_settings_are_stack_keys() -> None:
    spec = spec_of(
        "launch",
        **{"sikka:monitoring": {"retentionDays": 3, "storageGb": 2, "scrapeIntervalSeconds": 30}},
    )
    prometheus = build_topology(spec).node("prometheus")
    assert "--storage.tsdb.retention.time=3d" in prometheus.command
    assert "--storage.tsdb.retention.size=1GB" in prometheus.command
    assert yaml.safe_load(prometheus.files[0].content)["global"]["scrape_interval"] == "30s"


def test_bad_monitoring_values_name_the_key() -> None:
    from scaling.issues import ConfigError

    with pytest.raises(ConfigError) as error:
        spec_of("launch", **{"sikka:monitoring": {"retentionDays": 0, "scrapeIntervalSeconds": 1}})
    text = str(error.value)
    assert "sikka:monitoring.retentionDays" in text
    assert "sikka:monitoring.scrapeIntervalSeconds" in text


@pytest.mark.parametrize("stack", STACKS)
def test_no_credential_in_a_rendered_monitoring_file(stack: str) -> None:
    topology = build_topology(spec_of(stack))
    secret_variables = set(SECRET_VARIABLES.values())
    for node in topology.tier("monitoring"):
        # Passwords only as secret references; plain variables name no secret.
        assert not secret_variables & set(node.env), node.name
        assert set(node.secret_env.values()) <= set(SECRET_VARIABLES), node.name
        for value in [*node.env.values(), *node.command]:
            assert "password" not in value.lower() and ":@" not in value, (node.name, value)
    for node in topology.with_role("prometheus"):
        for file in node.files:
            assert "password" not in file.content.lower(), file.render_name


def test_multi_target_jobs_need_a_probe_everywhere() -> None:
    spec = spec_of("launch")
    job = ResolvedJob("redis", "/scrape", (StaticTarget("x:1", {"instance": "x"}),), "target")
    with pytest.raises(ValueError, match="probe"):
        render_prometheus_yml(spec, [job])
    twice = ResolvedJob("a", "/metrics", (StaticTarget("x:1", {"instance": "x"}),))
    with pytest.raises(ValueError, match="duplicate"):
        render_prometheus_yml(spec, [twice, twice])


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
@pytest.mark.parametrize("stack", STACKS)
def test_promtool_accepts_every_rendered_prometheus_yml_and_alerts(
    stack: str, tmp_path: Path
) -> None:
    assert PROMTOOL is not None
    files = render_bundle(spec_of(stack))
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    rules = subprocess.run(
        [PROMTOOL, "check", "rules", "alerts.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    # Docker stacks run their own Prometheus; on Kubernetes the Prometheus Operator writes
    # the file from the stack's objects, so none is rendered.
    if spec_of(stack).platform.value == "docker":
        assert "prometheus.yml" in files
    if "prometheus.yml" in files:
        config = subprocess.run(
            [PROMTOOL, "check", "config", "prometheus.yml"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert config.returncode == 0, config.stdout + config.stderr


def test_monitoring_role_is_least_privilege() -> None:
    from scaling.render.postgres_start import startup_sql

    sql = startup_sql(
        "sikka",
        superuser_password="s",
        password="p",
        replication_password=None,
        keep_slots=[],
        monitoring_password="m'x",
    )
    assert (
        f'ALTER ROLE "{MONITORING_USER}" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
        "NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT 3 PASSWORD 'm''x';" in sql
    )
    # Any membership an older deployment gave is revoked, then pg_monitor alone granted.
    revoke = sql.index(f"WHERE rolname = '{MONITORING_USER}') LOOP")
    assert revoke < sql.index(f'GRANT pg_monitor TO "{MONITORING_USER}";')
    assert sql.count("GRANT ") == 1
    # Without a monitoring password, no monitoring statement at all.
    assert MONITORING_USER not in startup_sql(
        "sikka", superuser_password="s", password="p", replication_password=None, keep_slots=[]
    )


@pytest.mark.parametrize("stack", ["launch", "growth"])
def test_postgres_and_pgbouncer_admit_the_monitoring_user_from_the_private_network_only(
    stack: str,
) -> None:
    spec = spec_of(stack)
    topology = build_topology(spec)
    subnet = str(spec.docker_subnet)
    primary = topology.node("postgres-0")
    text = "\n".join(
        f.content for f in primary.files if "hba" in f.render_name or "patroni" in f.render_name
    )
    rules = [
        line.split() for line in text.splitlines() if MONITORING_USER in line and "host" in line
    ]
    assert rules, text
    for rule in rules:
        # pg_hba.conf's columns, or Patroni's pg_hba list items ("- host ...").
        words = [w for w in rule if w != "-"]
        assert words == ["host", "postgres", MONITORING_USER, subnet, "scram-sha-256"]
    for pooler in topology.with_role("pooler"):
        files = {f.render_name: f.content for f in pooler.files}
        hba = files["pgbouncer_hba.conf"].splitlines()
        assert [line.split() for line in hba if MONITORING_USER in line] == [
            ["host", "pgbouncer", MONITORING_USER, subnet, "scram-sha-256"]
        ]
        ini = next(c for n, c in files.items() if n.endswith(".ini"))
        assert f"stats_users = pgbouncer_admin, {MONITORING_USER}\n" in ini
        assert "admin_users = pgbouncer_admin\n" in ini


def test_the_stack_exports_where_prometheus_answers_and_what_it_scrapes() -> None:
    from scaling.exports import monitoring_endpoints

    docker = monitoring_endpoints(build_topology(spec_of("growth")))
    assert docker == {
        "prometheus_url": "http://prometheus:9090",
        "scrape_jobs": ["prometheus", "node", "postgres", "pgbouncer", "redis", "gateway", "nginx"],
    }
    kubernetes = monitoring_endpoints(build_topology(spec_of("scale")))
    assert kubernetes == {"prometheus_url": None, "scrape_jobs": ["redis", "gateway", "nginx"]}


def test_compose_keeps_prometheus_data_in_a_volume_named_from_the_stack() -> None:
    compose = yaml.safe_load(render_bundle(spec_of("launch"))["docker-compose.yml"])
    assert compose["volumes"]["prometheus-data"]["name"] == "sikka-launch-prometheus-data"
    prometheus = compose["services"]["sikka-launch-prometheus"]
    assert "prometheus-data:/prometheus" in prometheus["volumes"]
    assert "ports" not in prometheus  # answers on the private network only
