"""Monitoring tier: the topology's exporters and Prometheus, as Debian's binaries on loopback.

Every node of tier "monitoring" (scaling/topology/monitoring.py) is one process named after
it. What each scrapes comes from the topology's one list of scrape jobs
(:func:`scaling.topology.monitoring.scrape_jobs`), resolved to the loopback ports this run
allocated (:func:`local_address`), and prometheus.yml is written from it by the same renderer
the containers use, with the phase's alerts.yml beside it.

The local differences, each for a reason:

* Prometheus scrapes and evaluates every :data:`LOCAL_SCRAPE_SECONDS` at most, so a test
  (or an operator) sees targets and values within seconds of `up`.
* node-exporter runs only the collectors the rules and readings use (CPU, memory, load): the
  2 cores here are shared with the whole phase.
* PgBouncer is read by :mod:`scaling.local.pgbouncer_exporter` (same metric names as the
  containers' exporter): Debian's prometheus-pgbouncer-exporter 1.7 fails against PgBouncer
  1.8 and later.
* Debian's postgres_exporter (0.11) has no replication collector: a queries file
  (:data:`POSTGRES_EXPORTER_QUERIES`, ``--extend.query-path``) gives it the
  ``pg_replication_lag_seconds`` and ``pg_replication_is_replica`` the containers' exporter
  (0.15 and later) publishes, by the same definition, so ``postgres.replica_lag_seconds``
  reaches Prometheus here too.
* The TSDB lives in the state folder (``prometheus/data``); Prometheus is stopped with
  SIGTERM, which writes its head block out, and `down --keep` keeps it.

Credentials reach exporters through their environment (the topology's secret references,
resolved at start, scaling.local.procs): never on a command line, in a file Prometheus reads,
or in a log.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaling.local import health
from scaling.local.context import Context, python_executable
from scaling.local.gateway import GatewayInstance
from scaling.local.nginx import NginxEndpoints
from scaling.local.state import ProcessEntry
from scaling.local.topology import nodes
from scaling.model import PhaseSpec
from scaling.render.alerts import render_alert_rules
from scaling.render.endpoints import Endpoint
from scaling.render.prometheus import ALERTS_FILE, ResolvedJob, render_prometheus_yml
from scaling.topology import Node, Topology
from scaling.topology.monitoring import (
    NGINX_EXPORTER,
    NGINX_STATUS_PATH,
    NODE_EXPORTER,
    PGBOUNCER_EXPORTER,
    POSTGRES_EXPORTER,
    PROMETHEUS,
    REDIS_EXPORTER,
    scrape_jobs,
)

START_TIMEOUT = 30.0
LOCAL_SCRAPE_SECONDS = 5
# What the alert rules and the readings read from the host: node_cpu_seconds_total,
# node_memory_*, node_load*.
NODE_COLLECTORS = ("cpu", "meminfo", "loadavg")

# The containers' exporter's pg_replication collector, as a query of Debian's older one.
POSTGRES_EXPORTER_QUERIES = """\
pg_replication:
  query: |
    SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0
                WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                ELSE GREATEST(0, EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()))
           END AS lag_seconds,
           CASE WHEN pg_is_in_recovery() THEN 1 ELSE 0 END AS is_replica
  master: true
  metrics:
    - lag_seconds:
        usage: "GAUGE"
        description: "Replication lag behind the primary, in seconds"
    - is_replica:
        usage: "GAUGE"
        description: "1 on a replica (in recovery), 0 on the primary"
"""
POSTGRES_EXPORTER_QUERIES_FILE = "postgres-exporter-queries.yaml"

BINARIES = {
    PROMETHEUS: "prometheus",
    NODE_EXPORTER: "prometheus-node-exporter",
    POSTGRES_EXPORTER: "prometheus-postgres-exporter",
    REDIS_EXPORTER: "prometheus-redis-exporter",
    NGINX_EXPORTER: "prometheus-nginx-exporter",
}


@dataclass(frozen=True)
class MonitoringEndpoints:
    prometheus: Endpoint
    # Exporter node name -> its /metrics URL.
    exporters: dict[str, str] = field(default_factory=dict)
    tsdb: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.prometheus.host}:{self.prometheus.port}"

    def summary(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "targets_url": f"{self.url}/api/v1/targets",
            "rules_url": f"{self.url}/api/v1/rules",
            "tsdb": self.tsdb,
            "exporters": dict(self.exporters),
        }


def monitoring_nodes(topology: Topology) -> list[Node]:
    return nodes(topology, "monitoring")


def local_address(
    topology: Topology,
    endpoints: Mapping[str, Endpoint],
    gateway_metrics: Mapping[str, Endpoint],
) -> Any:
    """``address(node, port)`` for :func:`scrape_jobs`: where this run serves a node's port.

    ``endpoints``: node name -> its one local listener (servers, and every monitoring node's
    metrics or web port); ``gateway_metrics``: gateway name -> its first worker's /metrics,
    worker i serving on port + i as the topology's ``ports["metrics"] + i`` says."""

    def address(node: Node, port: int) -> str:
        if node.tier == "gateway":
            first = gateway_metrics[node.name]
            offset = port - node.ports["metrics"]
            if offset < 0:
                raise KeyError(f"{node.name}: port {port} is none of its /metrics ports")
            return f"{first.host}:{first.port + offset}"
        if node.name not in endpoints:
            raise KeyError(f"{node.name} is scraped but was not started")
        local = endpoints[node.name]
        return f"{local.host}:{local.port}"

    return address


def local_jobs(
    topology: Topology,
    endpoints: Mapping[str, Endpoint],
    gateway_metrics: Mapping[str, Endpoint],
) -> list[ResolvedJob]:
    """The topology's scrape jobs with this run's loopback addresses."""
    return scrape_jobs(topology, local_address(topology, endpoints, gateway_metrics))


def _scraped(topology: Topology, exporter: Node) -> Node:
    """The one node an exporter of one server reads (its "scrapes" edge)."""
    edges = topology.edges_from(exporter.name, "scrapes")
    if len(edges) != 1:
        raise KeyError(f"{exporter.name} should scrape one node, the topology says {edges}")
    return topology.node(edges[0].target)


def _binary(group: str) -> str:
    name = BINARIES[group]
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(
            f"{name} is not installed (Debian package {name}; `make system-packages` installs it)"
        )
    return found


def exporter_command(
    node: Node,
    listen: Endpoint,
    scraped: Endpoint | None,
    *,
    nginx_status: str | None = None,
    project_dir: str | None = None,
    postgres_queries: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    """(argv, environment without secrets) of one exporter node, listening on ``listen`` and
    reading ``scraped`` (its server, for exporters of one server); ``project_dir``: where
    the project's own exporter is imported from; ``postgres_queries``: the file of
    :data:`POSTGRES_EXPORTER_QUERIES` a postgres exporter runs besides its own."""
    web = f"--web.listen-address={listen.host}:{listen.port}"
    group = node.group
    if group == NODE_EXPORTER:
        collectors = [f"--collector.{name}" for name in NODE_COLLECTORS]
        return [_binary(group), web, "--collector.disable-defaults", *collectors], {}
    if group == POSTGRES_EXPORTER:
        assert scraped is not None
        env = dict(node.env)
        env["DATA_SOURCE_URI"] = f"{scraped.host}:{scraped.port}/postgres?sslmode=disable"
        extend = [f"--extend.query-path={postgres_queries}"] if postgres_queries else []
        return [_binary(group), web, *extend], env
    if group == PGBOUNCER_EXPORTER:
        assert scraped is not None
        user = _user_of(node)
        argv = [
            python_executable(),
            "-m",
            "scaling.local.pgbouncer_exporter",
            "--serve",
            f"{listen.host}:{listen.port}={scraped.host}:{scraped.port}",
            "--user",
            user,
        ]
        return argv, ({"PYTHONPATH": project_dir} if project_dir else {})
    if group == REDIS_EXPORTER:
        # No address of its own: every server is read through /scrape?target=.
        return [_binary(group), "-redis.addr=", f"-web.listen-address={listen}"], {}
    if group == NGINX_EXPORTER:
        assert nginx_status is not None
        return [
            _binary(group),
            f"-nginx.scrape-uri={nginx_status}",
            f"-web.listen-address={listen}",
        ], {}
    raise KeyError(f"{node.name}: no local command for exporters of group {group!r}")


def _user_of(node: Node) -> str:
    """The console user in the pgbouncer exporter's connection string (the monitoring role)."""
    dsn = node.env.get("PGBOUNCER_EXPORTER_CONNECTION_STRING", "")
    user = dsn.split("://", 1)[-1].split("@", 1)[0] if "@" in dsn else ""
    if not user:
        raise KeyError(f"{node.name}: no console user in its connection string")
    return user


def prometheus_files(spec: PhaseSpec, jobs: list[ResolvedJob], folder: Path) -> tuple[Path, Path]:
    """prometheus.yml (the topology's jobs at local addresses, scraped every few seconds) and
    the phase's alerts.yml, beside each other (rule_files are relative to the config)."""
    interval = min(spec.monitoring.scrape_interval_seconds, LOCAL_SCRAPE_SECONDS)
    evaluation = min(spec.monitoring.evaluation_interval_seconds, LOCAL_SCRAPE_SECONDS)
    fast = spec.model_copy(
        update={
            "monitoring": spec.monitoring.model_copy(
                update={
                    "scrape_interval_seconds": interval,
                    "evaluation_interval_seconds": evaluation,
                }
            )
        }
    )
    config = folder / "prometheus.yml"
    alerts = folder / ALERTS_FILE
    config.write_text(render_prometheus_yml(fast, jobs))
    alerts.write_text(render_alert_rules(spec))
    return config, alerts


def start_monitoring(
    ctx: Context, gateways: list[GatewayInstance], nginx: NginxEndpoints, project_dir: str
) -> MonitoringEndpoints:
    topology = ctx.topology
    monitoring = monitoring_nodes(topology)
    exporters = [n for n in monitoring if n.role == "exporter"]
    (prometheus,) = [n for n in monitoring if n.role == "prometheus"]
    ctx.begin("monitoring")
    for node in monitoring:
        ctx.endpoints[node.name] = Endpoint("127.0.0.1", ctx.ports.take())
    gateway_metrics = {g.id: g.metrics for g in gateways}
    started: list[tuple[ProcessEntry, str]] = []
    urls: dict[str, str] = {}
    queries = ctx.state_dir / POSTGRES_EXPORTER_QUERIES_FILE
    queries.write_text(POSTGRES_EXPORTER_QUERIES)
    for node in exporters:
        listen = ctx.endpoints[node.name]
        scraped = None
        if node.group in (POSTGRES_EXPORTER, PGBOUNCER_EXPORTER):
            scraped = ctx.endpoints[_scraped(topology, node).name]
        status = None
        if node.group == NGINX_EXPORTER:
            status = f"http://127.0.0.1:{nginx.status_port}{NGINX_STATUS_PATH}"
        argv, env = exporter_command(
            node,
            listen,
            scraped,
            nginx_status=status,
            project_dir=project_dir,
            postgres_queries=str(queries),
        )
        entry = ctx.start(
            ProcessEntry(
                name=node.name,
                role=node.role,
                tier=node.tier,
                argv=argv,
                log=ctx.log_path(node.name),
                port=listen.port,
                env=env,
                secret_env=dict(node.secret_env),
                cwd=str(ctx.state_dir),
                stop_timeout=float(node.stop.grace_seconds),
            )
        )
        urls[node.name] = f"http://{listen.host}:{listen.port}/metrics"
        started.append((entry, urls[node.name]))
    folder = ctx.state_dir / prometheus.name
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    jobs = local_jobs(topology, ctx.endpoints, gateway_metrics)
    config, _ = prometheus_files(ctx.spec, jobs, folder)
    web = ctx.endpoints[prometheus.name]
    entry = ctx.start(
        ProcessEntry(
            name=prometheus.name,
            role=prometheus.role,
            tier=prometheus.tier,
            argv=[
                _binary(PROMETHEUS),
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--storage.tsdb.retention.time={ctx.spec.monitoring.retention_days}d",
                f"--web.listen-address={web.host}:{web.port}",
            ],
            log=ctx.log_path(prometheus.name),
            port=web.port,
            cwd=str(folder),
            # SIGTERM: Prometheus writes its head block out before it exits.
            stop_timeout=float(prometheus.stop.grace_seconds),
        )
    )
    started.append((entry, f"http://{web.host}:{web.port}/-/ready"))
    for process, url in started:
        ctx.part, ctx.part_log = process.name, process.log
        health.wait_until(
            f"{process.name} answers {url}",
            lambda u=url: health.http_ok(u),  # type: ignore[misc]
            START_TIMEOUT,
            process=process,
        )
    return MonitoringEndpoints(web, urls, str(data))
