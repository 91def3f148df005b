"""Monitoring on Kubernetes as Prometheus Operator objects, from the same jobs and rules as
every other view (scaling.topology.monitoring, scaling.render.alerts).

* ``PrometheusRule`` ``sikka-alerts``: the phase's alert rules, exactly alerts.yml's groups.
* ``PodMonitor`` ``<job>-metrics`` per scrape job the phase runs itself: ``gateway`` (each
  worker's metrics port), ``nginx`` (the nginx-prometheus-exporter container beside Nginx in
  its pod, reading ``stub_status`` over loopback) and ``redis`` (one endpoint per Redis
  server, through the ``redis-exporter`` Deployment's ``/scrape?target=``). Every series
  carries ``job`` and ``tier`` as on Docker; ``instance`` is the pod (the server probed, for
  Redis).
* PostgreSQL and PgBouncer: StackGres's own exporter, which the operator's collector reads
  and binds to the cluster's Prometheus (``configurations.observability.prometheusAutobind``
  on the SGCluster / SGShardedCluster, scaling.kubernetes.postgres).

The cluster's Prometheus must select these objects: with kube-prometheus-stack, either its
``*SelectorNilUsesHelmValues: false`` values or a selector on ``app.kubernetes.io/part-of:
sikka-scaling``, which every object here carries. No credential is in any of them: the Redis
exporter reads the Redis password from the phase's Secret.
"""

from __future__ import annotations

from typing import Any

from scaling.render.alerts import alert_rules
from scaling.topology import Node, Topology
from scaling.topology.monitoring import (
    NGINX_EXPORTER_PORT,
    NGINX_STATUS_PATH,
    REDIS_EXPORTER,
    ScrapeJob,
    default_address,
    monitoring_jobs,
)

from . import pods
from .manifests import Manifest, labels, obj, selector_labels
from .policy import disruption_budget
from .secrets import secret_env
from .security import container_security_context, pod_spec, resources

MONITORING_API = "monitoring.coreos.com/v1"
RULES_NAME = "sikka-alerts"
NGINX_EXPORTER_CONTAINER = "nginx-exporter"
NGINX_EXPORTER_PORT_NAME = "exporter"
# The UIDs the exporter images run as (their Dockerfiles' USER).
REDIS_EXPORTER_UID = 59000
NGINX_EXPORTER_UID = 65534


def prometheus_rule(topology: Topology) -> Manifest:
    spec = topology.spec
    return obj(
        "monitoring",
        MONITORING_API,
        "PrometheusRule",
        RULES_NAME,
        spec.namespace,
        labels(spec, RULES_NAME, "monitoring"),
        spec=alert_rules(spec),
    )


def _replace(target: str, value: str) -> dict[str, Any]:
    return {"action": "replace", "targetLabel": target, "replacement": value}


def _endpoint(topology: Topology, job: ScrapeJob, index: int) -> dict[str, Any]:
    """The PodMonitor endpoint of the job's ``index``-th target."""
    spec = topology.spec
    target = job.targets[index]
    relabelings = [_replace("job", job.name), _replace("tier", job.tier)]
    endpoint: dict[str, Any] = {
        "portNumber": target.port,
        "path": job.path,
        "interval": f"{spec.monitoring.scrape_interval_seconds}s",
    }
    if target.probe is not None and job.probe_param is not None:
        server, port = target.probe
        address = default_address(spec)(topology.node(server), port)
        endpoint["params"] = {job.probe_param: [target.probe_scheme + address]}
        relabelings.append(_replace("instance", target.node))
    else:
        relabelings.append(
            {
                "action": "replace",
                "sourceLabels": ["__meta_kubernetes_pod_name"],
                "targetLabel": "instance",
            }
        )
    if target.worker is not None:
        relabelings.append(_replace("worker", str(target.worker)))
    endpoint["relabelings"] = relabelings
    return endpoint


def pod_monitor_name(job: ScrapeJob) -> str:
    return f"{job.name}-metrics"


def pod_monitor(topology: Topology, job: ScrapeJob) -> Manifest:
    """One PodMonitor for a job: the pods of the group that serves its metrics, one endpoint
    per distinct (port, probe) of its targets (the nodes of a Deployment share its pods)."""
    spec = topology.spec
    groups = {topology.node(t.exporter).group for t in job.targets}
    if len(groups) != 1:
        raise ValueError(f"job {job.name}: targets served by several groups {sorted(groups)}")
    (group,) = groups
    endpoints: list[dict[str, Any]] = []
    for index in range(len(job.targets)):
        endpoint = _endpoint(topology, job, index)
        if endpoint not in endpoints:
            endpoints.append(endpoint)
    name = pod_monitor_name(job)
    return obj(
        "monitoring",
        MONITORING_API,
        "PodMonitor",
        name,
        spec.namespace,
        labels(spec, name, "monitoring"),
        spec={
            "selector": {"matchLabels": selector_labels(group)},
            "podMetricsEndpoints": endpoints,
        },
    )


def nginx_exporter_container(topology: Topology, proxy: Node) -> dict[str, Any]:
    """The exporter beside Nginx in its pod: it reads stub_status over loopback (allowed by
    nginx.conf), and serves the figures on its own port for the ``nginx`` PodMonitor."""
    spec = topology.spec
    return {
        "name": NGINX_EXPORTER_CONTAINER,
        "image": spec.monitoring.nginx_exporter_image,
        "args": [
            f"--nginx.scrape-uri=http://127.0.0.1:{proxy.ports['status']}{NGINX_STATUS_PATH}",
            f"--web.listen-address=:{NGINX_EXPORTER_PORT}",
        ],
        "ports": [
            {
                "name": NGINX_EXPORTER_PORT_NAME,
                "containerPort": NGINX_EXPORTER_PORT,
                "protocol": "TCP",
            }
        ],
        "readinessProbe": {
            "httpGet": {"path": "/metrics", "port": NGINX_EXPORTER_PORT_NAME},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
        },
        "resources": resources(20, 32, 100, 64),
        "securityContext": container_security_context(NGINX_EXPORTER_UID),
    }


def redis_exporter(topology: Topology) -> list[Manifest]:
    """The Redis exporter node as a one-pod Deployment (it keeps no state)."""
    spec = topology.spec
    nodes = [n for n in topology.tier("monitoring") if n.group == REDIS_EXPORTER]
    if not nodes:
        return []
    (node,) = nodes
    user = pods.uid(node, REDIS_EXPORTER_UID)
    container = {
        "name": REDIS_EXPORTER,
        "image": node.image,
        **pods.command_fields(node),
        "env": [*pods.plain_env(node.env), *secret_env(node)],
        "ports": pods.container_ports(node),
        # The image holds the binary alone: an HTTP probe instead of a command.
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": "metrics"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "metrics"},
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "resources": resources(50, 64, 200, 128),
        "securityContext": container_security_context(user),
    }
    pod = pod_spec(user, [container], [], terminationGracePeriodSeconds=node.stop.grace_seconds)
    name = node.group
    return [
        obj(
            "monitoring",
            "apps/v1",
            "Deployment",
            name,
            spec.namespace,
            labels(spec, name, "monitoring"),
            spec={
                "replicas": 1,
                "selector": {"matchLabels": selector_labels(name)},
                "template": {"metadata": {"labels": labels(spec, name, "monitoring")}, "spec": pod},
            },
        ),
        disruption_budget(spec, "monitoring", name),
    ]


def monitoring_manifests(topology: Topology) -> list[Manifest]:
    """The exporters the phase runs itself, the PodMonitors reading every job that has
    targets, and the PrometheusRule."""
    monitors = [pod_monitor(topology, job) for job in monitoring_jobs(topology) if job.targets]
    return [*redis_exporter(topology), *monitors, prometheus_rule(topology)]
