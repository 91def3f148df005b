"""The phase's monitoring: Prometheus, its exporters and what each scrape job reads.

Tier ``monitoring``, roles ``prometheus`` and ``exporter``. Built from the other tiers' nodes,
so a member added to the phase is scraped without anything else changing:

* **host**: node-exporter (one per Docker host). In a container it reads the host's own
  ``/proc/stat`` and ``/proc/meminfo`` (not namespaced), which is what the CPU and memory
  rules need; filesystem and network figures are the container's.
* **PostgreSQL**: one postgres_exporter per member (Docker), not one multi-target exporter:
  each reads its member through the documented ``DATA_SOURCE_URI``/``DATA_SOURCE_USER`` and
  a password from its environment (``DATA_SOURCE_PASS``), whereas ``/probe?target=`` takes
  credentials from an ``auth_modules`` file holding the password in clear, or from the
  target DSN Prometheus would carry. An exporter also fails alone with its member. It logs
  in as the monitoring role (``pg_monitor``, nothing else; scaling.render.postgres_start).
  On Kubernetes StackGres runs its own exporter in every instance: no node here.
* **PgBouncer**: prometheus-pgbouncer-exporter per pooler (it reads one PgBouncer), as the
  monitoring user, a ``stats_users`` entry of the console (``SHOW`` only).
* **Redis**: one redis_exporter for every data node and Sentinel (multi-target,
  ``/scrape?target=redis://…``); all of them share the phase's Redis password, which the
  exporter reads from ``REDIS_PASSWORD``.
* **Nginx**: nginx-prometheus-exporter on each Nginx's ``stub_status``, served on the
  status port that only the private network reaches (scaling.render.nginx).
* **Gateways**: their own ``/metrics``; with ``gateway.processes`` > 1 worker *i* serves on
  ``metricsPort + i``, and every worker port is a target.
* **Prometheus** scrapes itself too, evaluates ``alerts.yml`` (scaling.render.alerts) and
  keeps ``monitoring.retentionDays`` days in its volume, or 80 % of it, whichever is less.
  On Kubernetes there is no Prometheus node: the cluster's Prometheus Operator scrapes the
  phase through PodMonitors made from the same jobs and loads the rules as a PrometheusRule
  (scaling.kubernetes.monitoring).

:func:`monitoring_jobs` lists the jobs as node names and ports; :func:`scrape_jobs` resolves
them to addresses with the view's ``address(node, port)`` (Docker: the node's name; the
local runner: its loopback ports), and scaling.render.prometheus writes prometheus.yml from
that. Credentials never appear in a rendered file: each exporter gets a secret reference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from scaling.model import MONITORING_USER, PhaseSpec
from scaling.render.alerts import render_alert_rules
from scaling.render.pgbouncer import POOLER_PORT
from scaling.render.postgres import PG_PORT
from scaling.render.prometheus import (
    ALERTS_FILE,
    ResolvedJob,
    StaticTarget,
    render_prometheus_yml,
)
from scaling.render.redis import REDIS_PORT, SENTINEL_PORT

from .model import ConfigFile, Edge, HealthCheck, Node, Stop, Topology, Volume
from .network import node_host, node_name, on_kubernetes

PROMETHEUS = "prometheus"
NODE_EXPORTER = "node-exporter"
POSTGRES_EXPORTER = "postgres-exporter"
PGBOUNCER_EXPORTER = "pgbouncer-exporter"
REDIS_EXPORTER = "redis-exporter"
NGINX_EXPORTER = "nginx-exporter"

# The exporters' customary ports (Prometheus's default port allocations).
NODE_EXPORTER_PORT = 9100
POSTGRES_EXPORTER_PORT = 9187
PGBOUNCER_EXPORTER_PORT = 9127
REDIS_EXPORTER_PORT = 9121
NGINX_EXPORTER_PORT = 9113

PROMETHEUS_CONF_DIR = "/etc/prometheus"
PROMETHEUS_DATA_DIR = "/prometheus"
# Prometheus stops at this share of its volume (retention by size) before the disk fills.
RETENTION_SIZE_SHARE = 0.8
NGINX_STATUS_PATH = "/nginx_status"

# Exporter images are built on Prometheus's busybox image (wget), except redis_exporter's and
# nginx-prometheus-exporter's, which hold the binary alone: those run without a check.
_BUSYBOX_IMAGES = (PROMETHEUS, NODE_EXPORTER, POSTGRES_EXPORTER, PGBOUNCER_EXPORTER)

# (node, port) → "host:port" as the view reaches it.
Address = Callable[[Node, int], str]


@dataclass(frozen=True)
class ScrapeTarget:
    """One target of a job, by node: Prometheus scrapes ``exporter`` on ``port``; the series
    measure ``node`` (the ``instance`` label); a multi-target exporter probes ``probe`` (a
    node and its port; ``probe_scheme`` prefixes the address, "redis://")."""

    exporter: str
    port: int
    node: str
    probe: tuple[str, int] | None = None
    probe_scheme: str = ""
    worker: int | None = None  # gateway worker index when a gateway runs several processes


@dataclass(frozen=True)
class ScrapeJob:
    name: str
    tier: str  # the tier measured
    path: str
    targets: tuple[ScrapeTarget, ...]
    probe_param: str | None = None


def host_of(spec: PhaseSpec, node: Node) -> str:
    """A node's host name: its own name on Docker, its pod's DNS name on Kubernetes."""
    return node_host(spec, node.group, node.ordinal) if on_kubernetes(spec) else node.name


def _wget(port: int, path: str = "/") -> HealthCheck:
    return HealthCheck(f"wget -q -O /dev/null http://127.0.0.1:{port}{path}")


def _exporter(
    spec: PhaseSpec,
    group: str,
    ordinal: int,
    image: str,
    port: int,
    *,
    name: str | None = None,
    command: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    secret_env: dict[str, str] | None = None,
    checked: bool = True,
) -> Node:
    return Node(
        name=name or node_name(group, ordinal),
        tier="monitoring",
        role="exporter",
        group=group,
        ordinal=ordinal,
        image=image,
        ports={"metrics": port},
        command=command,
        env=env or {},
        secret_env=secret_env or {},
        health=_wget(port) if checked else HealthCheck(None),
        stop=Stop("SIGTERM", 10),
        memory_mb=64,
    )


def postgres_members(nodes: Sequence[Node]) -> list[Node]:
    """The PostgreSQL servers (not the poolers, routers or the DCS)."""
    return [n for n in nodes if n.tier == "postgres" and n.role in ("primary", "replica")]


def _postgres_exporters(spec: PhaseSpec, nodes: Sequence[Node]) -> list[Node]:
    if on_kubernetes(spec):
        return []  # StackGres's own exporter runs in every instance
    monitoring = spec.monitoring
    return [
        _exporter(
            spec,
            POSTGRES_EXPORTER,
            member.ordinal,
            monitoring.postgres_exporter_image,
            POSTGRES_EXPORTER_PORT,
            command=(f"--web.listen-address=:{POSTGRES_EXPORTER_PORT}",),
            env={
                "DATA_SOURCE_URI": f"{host_of(spec, member)}:{PG_PORT}/postgres?sslmode=disable",
                "DATA_SOURCE_USER": MONITORING_USER,
            },
            # postgres_exporter's own variable for the password: from the secret, never a file.
            secret_env={"DATA_SOURCE_PASS": "monitoring-password"},
        )
        for member in postgres_members(nodes)
    ]


def _pgbouncer_exporters(spec: PhaseSpec, nodes: Sequence[Node]) -> list[Node]:
    if on_kubernetes(spec):
        return []  # StackGres's exporter reads its PgBouncer sidecar too
    poolers = [n for n in nodes if n.role == "pooler"]
    return [
        _exporter(
            spec,
            PGBOUNCER_EXPORTER,
            pooler.ordinal,
            spec.monitoring.pgbouncer_exporter_image,
            PGBOUNCER_EXPORTER_PORT,
            command=(f"--web.listen-address=:{PGBOUNCER_EXPORTER_PORT}",),
            env={
                # The console database, as the monitoring user (a stats_users entry); the
                # password comes from PGPASSWORD, which the exporter's driver (lib/pq) reads.
                "PGBOUNCER_EXPORTER_CONNECTION_STRING": f"postgres://{MONITORING_USER}@"
                f"{host_of(spec, pooler)}:{POOLER_PORT}"
                "/pgbouncer?sslmode=disable",
            },
            secret_env={"PGPASSWORD": "monitoring-password"},
        )
        for pooler in poolers
    ]


def redis_servers(nodes: Sequence[Node]) -> list[Node]:
    """Every Redis server the exporter reads: data nodes and Sentinels (not the one-shot)."""
    return [n for n in nodes if n.tier == "redis" and not n.one_shot]


def _redis_port(node: Node) -> int:
    return SENTINEL_PORT if node.role == "sentinel" else REDIS_PORT


def _redis_exporter(spec: PhaseSpec) -> Node:
    return _exporter(
        spec,
        REDIS_EXPORTER,
        0,
        spec.monitoring.redis_exporter_image,
        REDIS_EXPORTER_PORT,
        name=REDIS_EXPORTER,
        # No address of its own: /metrics then describes the exporter alone, and every Redis
        # server is read through /scrape?target=.
        command=("--redis.addr=", f"--web.listen-address=:{REDIS_EXPORTER_PORT}"),
        secret_env={"REDIS_PASSWORD": "redis-password"},
        checked=False,
    )


def _nginx_exporters(spec: PhaseSpec, nodes: Sequence[Node]) -> list[Node]:
    if on_kubernetes(spec):
        return []  # a container beside Nginx in each pod (scaling.kubernetes)
    return [
        _exporter(
            spec,
            NGINX_EXPORTER,
            proxy.ordinal,
            spec.monitoring.nginx_exporter_image,
            NGINX_EXPORTER_PORT,
            command=(
                f"--nginx.scrape-uri=http://{host_of(spec, proxy)}"
                f":{proxy.ports['status']}{NGINX_STATUS_PATH}",
                f"--web.listen-address=:{NGINX_EXPORTER_PORT}",
            ),
            checked=False,
        )
        for proxy in nodes
        if proxy.tier == "nginx"
    ]


def _node_exporter(spec: PhaseSpec) -> list[Node]:
    if on_kubernetes(spec):
        return []  # the cluster's own node-exporter DaemonSet measures its nodes
    return [
        _exporter(
            spec,
            NODE_EXPORTER,
            0,
            spec.monitoring.node_exporter_image,
            NODE_EXPORTER_PORT,
            name=NODE_EXPORTER,
            command=(f"--web.listen-address=:{NODE_EXPORTER_PORT}",),
        )
    ]


def exporter_nodes(spec: PhaseSpec, nodes: Sequence[Node]) -> list[Node]:
    exporters = [
        *_node_exporter(spec),
        *_postgres_exporters(spec, nodes),
        *_pgbouncer_exporters(spec, nodes),
    ]
    if redis_servers(nodes):
        exporters.append(_redis_exporter(spec))
    return exporters + _nginx_exporters(spec, nodes)


def _jobs(spec: PhaseSpec, nodes: Sequence[Node]) -> list[ScrapeJob]:
    by_group: dict[str, list[Node]] = {}
    for node in nodes:
        by_group.setdefault(node.group, []).append(node)
    # An exporter of one server per node carries that server's ordinal in its own group.
    exporter_of = {(n.group, n.ordinal): n for n in nodes if n.role == "exporter"}
    jobs: list[ScrapeJob] = []
    for node in by_group.get(PROMETHEUS, []):
        jobs.append(ScrapeJob(PROMETHEUS, "monitoring", "/metrics", (_own(node, "http"),)))
    for node in by_group.get(NODE_EXPORTER, []):
        jobs.append(ScrapeJob("node", "host", "/metrics", (_own(node, "metrics"),)))
    jobs.append(
        ScrapeJob(
            "postgres",
            "postgres",
            "/metrics",
            tuple(
                _via(exporter_of[(POSTGRES_EXPORTER, m.ordinal)], m)
                for m in postgres_members(nodes)
                if (POSTGRES_EXPORTER, m.ordinal) in exporter_of
            ),
        )
    )
    jobs.append(
        ScrapeJob(
            "pgbouncer",
            "pgbouncer",
            "/metrics",
            tuple(
                _via(exporter_of[(PGBOUNCER_EXPORTER, p.ordinal)], p)
                for p in nodes
                if p.role == "pooler" and (PGBOUNCER_EXPORTER, p.ordinal) in exporter_of
            ),
        )
    )
    redis_exporter = by_group.get(REDIS_EXPORTER, [])
    if redis_exporter:
        exporter = redis_exporter[0]
        jobs.append(
            ScrapeJob(
                "redis",
                "redis",
                "/scrape",
                tuple(
                    ScrapeTarget(
                        exporter.name,
                        exporter.ports["metrics"],
                        server.name,
                        probe=(server.name, _redis_port(server)),
                        probe_scheme="redis://",
                    )
                    for server in redis_servers(nodes)
                ),
                probe_param="target",
            )
        )
    jobs.append(
        ScrapeJob(
            "gateway",
            "gateway",
            "/metrics",
            tuple(
                ScrapeTarget(
                    gw.name,
                    gw.ports["metrics"] + worker,
                    gw.name,
                    worker=worker if spec.gateway.processes > 1 else None,
                )
                for gw in nodes
                if gw.tier == "gateway"
                for worker in range(spec.gateway.processes)
            ),
        )
    )
    nginx_targets = []
    for proxy in (n for n in nodes if n.tier == "nginx"):
        beside = exporter_of.get((NGINX_EXPORTER, proxy.ordinal))
        if beside is not None:
            nginx_targets.append(_via(beside, proxy))
        else:  # Kubernetes: the exporter runs in the Nginx pod
            nginx_targets.append(ScrapeTarget(proxy.name, NGINX_EXPORTER_PORT, proxy.name))
    jobs.append(ScrapeJob("nginx", "nginx", "/metrics", tuple(nginx_targets)))
    return jobs


def _own(node: Node, port: str) -> ScrapeTarget:
    return ScrapeTarget(node.name, node.ports[port], node.name)


def _via(exporter: Node, measured: Node) -> ScrapeTarget:
    return ScrapeTarget(exporter.name, exporter.ports["metrics"], measured.name)


def default_address(spec: PhaseSpec) -> Address:
    """How the phase's own Prometheus reaches a node: its name on Docker, its pod's DNS name
    on Kubernetes."""

    def address(node: Node, port: int) -> str:
        return f"{host_of(spec, node)}:{port}"

    return address


def resolve(
    jobs: Sequence[ScrapeJob], nodes: Sequence[Node], address: Address
) -> list[ResolvedJob]:
    named = {n.name: n for n in nodes}
    resolved = []
    for job in jobs:
        targets = []
        for target in job.targets:
            labels = {"instance": target.node, "tier": job.tier}
            if target.worker is not None:
                labels["worker"] = str(target.worker)
            probe = None
            if target.probe is not None:
                server, port = target.probe
                probe = target.probe_scheme + address(named[server], port)
            targets.append(
                StaticTarget(address(named[target.exporter], target.port), labels, probe)
            )
        resolved.append(ResolvedJob(job.name, job.path, tuple(targets), job.probe_param))
    return resolved


def prometheus_node(spec: PhaseSpec, nodes: Sequence[Node]) -> Node:
    """The phase's Prometheus, its prometheus.yml rendered from every node it is given."""
    monitoring = spec.monitoring
    node = Node(
        name=PROMETHEUS,
        tier="monitoring",
        role="prometheus",
        group=PROMETHEUS,
        ordinal=0,
        image=monitoring.prometheus_image,
        ports={"http": monitoring.port},
        volumes=(Volume(f"{PROMETHEUS}-data", PROMETHEUS_DATA_DIR, monitoring.storage_gb),),
        health=_wget(monitoring.port, "/-/ready"),
        # SIGTERM: Prometheus writes its head block out before it exits.
        stop=Stop("SIGTERM", 120),
    )
    everything = [*nodes, node]
    config = render_prometheus_yml(
        spec, resolve(_jobs(spec, everything), everything, default_address(spec))
    )
    retention_gb = max(1, int(monitoring.storage_gb * RETENTION_SIZE_SHARE))
    files = (
        ConfigFile(f"{PROMETHEUS_CONF_DIR}/prometheus.yml", config, "prometheus.yml"),
        ConfigFile(f"{PROMETHEUS_CONF_DIR}/{ALERTS_FILE}", render_alert_rules(spec), ALERTS_FILE),
    )
    command = (
        f"--config.file={PROMETHEUS_CONF_DIR}/prometheus.yml",
        f"--storage.tsdb.path={PROMETHEUS_DATA_DIR}",
        f"--storage.tsdb.retention.time={monitoring.retention_days}d",
        f"--storage.tsdb.retention.size={retention_gb}GB",
        f"--web.listen-address=:{monitoring.port}",
    )
    return replace(node, files=files, command=command)


def monitoring_tier(spec: PhaseSpec, nodes: Sequence[Node]) -> tuple[list[Node], list[Edge]]:
    """The monitoring nodes for the phase's other ``nodes``, and what each one scrapes."""
    exporters = exporter_nodes(spec, nodes)
    everything = [*nodes, *exporters]
    # On Kubernetes the cluster's Prometheus (Prometheus Operator) scrapes the phase through
    # its PodMonitors and loads its PrometheusRule (scaling.kubernetes.monitoring).
    servers = [] if on_kubernetes(spec) else [prometheus_node(spec, everything)]
    edges = [
        Edge(target.exporter, target.node, "scrapes")
        for job in _jobs(spec, [*everything, *servers])
        for target in job.targets
        if target.exporter != target.node
    ]
    return [*exporters, *servers], edges


def monitoring_jobs(topology: Topology) -> list[ScrapeJob]:
    """The phase's scrape jobs by node name and port."""
    return _jobs(topology.spec, topology.nodes)


def scrape_jobs(topology: Topology, address: Address | None = None) -> list[ResolvedJob]:
    """The phase's scrape jobs resolved to addresses: ``address(node, port)`` says how the
    view reaches a node's port (default: the platform's host names)."""
    reach = address or default_address(topology.spec)
    return resolve(_jobs(topology.spec, topology.nodes), topology.nodes, reach)
