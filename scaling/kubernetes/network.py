"""NetworkPolicies: default-deny ingress, then one allow-list per tier.

* Nginx: anyone on its HTTP port; stub_status only from pods of the namespace; its
  exporter's port only from Prometheus pods.
* gateways: only Nginx, on the gateway port; /metrics (every worker's metrics port) only
  from Prometheus pods (label ``app.kubernetes.io/name=prometheus``, as the Prometheus
  Operator and the prometheus Helm chart set it), in any namespace.
* Redis: gateways and the Redis exporter on the client ports (6379, 26379); Redis pods,
  Sentinels and the cluster-init Job among themselves on every port (replication, cluster
  bus).
* monitoring (the Redis exporter): Prometheus pods on its metrics port, nothing else.
* Postgres: the Postgres pods themselves (replication, Patroni, Citus coordinator → workers)
  and the StackGres operator's namespace (it manages pods through Patroni's API), nothing
  else of ours: gateways never use the database. The application services that will are
  not part of this program yet; each gets its own rule when it is (the stack exports
  ``database_uri`` for them).

Only ingress is restricted: pods keep egress to DNS and the Kubernetes API (Patroni keeps
its leader lock there).
"""

from __future__ import annotations

from typing import Any

from scaling.model import PhaseSpec, default_namespace
from scaling.promotion import stack_name
from scaling.topology import Tier as NodeTier
from scaling.topology import Topology
from scaling.topology.monitoring import NGINX_EXPORTER_PORT, monitoring_jobs

from . import postgres
from .manifests import Manifest, ObjectTier, component_selector, labels, obj


def _policy(
    spec: PhaseSpec,
    tier: ObjectTier,
    name: str,
    selector: dict[str, Any],
    ingress: list[dict[str, Any]],
) -> Manifest:
    body: dict[str, Any] = {"podSelector": selector, "policyTypes": ["Ingress"]}
    if ingress:
        body["ingress"] = ingress
    return obj(
        tier,
        "networking.k8s.io/v1",
        "NetworkPolicy",
        name,
        spec.namespace,
        labels(spec, name, tier),
        spec=body,
    )


def _from(*components: str) -> list[dict[str, Any]]:
    return [{"podSelector": component_selector(c)} for c in components]


def _ports(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def node_ports(topology: Topology, tier: NodeTier, *names: str) -> list[int]:
    """The tier's node ports of those names (each once, in the topology's order)."""
    found: list[int] = []
    for node in topology.tier(tier):
        for name in names:
            port = node.ports.get(name)
            if port is not None and port not in found:
                found.append(port)
    return found


def default_deny(spec: PhaseSpec) -> Manifest:
    return _policy(spec, "namespace", "default-deny-ingress", {}, [])


def nginx_policy(topology: Topology) -> Manifest:
    return _policy(
        topology.spec,
        "nginx",
        "nginx-ingress",
        component_selector("nginx"),
        [
            {"ports": _ports(*node_ports(topology, "nginx", "http"))},
            {
                "from": [{"podSelector": {}}],
                "ports": _ports(*node_ports(topology, "nginx", "status")),
            },
            {"from": _scrapers(), "ports": _ports(NGINX_EXPORTER_PORT)},
        ],
    )


# Pods allowed to scrape /metrics, wherever their namespace.
SCRAPER_LABELS = {"app.kubernetes.io/name": "prometheus"}


def _scrapers() -> list[dict[str, Any]]:
    return [{"namespaceSelector": {}, "podSelector": {"matchLabels": dict(SCRAPER_LABELS)}}]


def scraped_ports(topology: Topology, job: str) -> list[int]:
    """The ports Prometheus scrapes for a job (a gateway's every worker), each once."""
    found: list[int] = []
    for scrape in monitoring_jobs(topology):
        if scrape.name != job:
            continue
        for target in scrape.targets:
            if target.port not in found:
                found.append(target.port)
    return found


def gateway_policy(topology: Topology) -> Manifest:
    rules = [{"from": _from("nginx"), "ports": _ports(*node_ports(topology, "gateway", "http"))}]
    metrics = scraped_ports(topology, "gateway")
    if metrics:
        rules.append({"from": _scrapers(), "ports": _ports(*metrics)})
    return _policy(
        topology.spec, "gateway", "gateway-ingress", component_selector("gateway"), rules
    )


def redis_policy(topology: Topology) -> Manifest:
    # Gateways use the client ports (data nodes, Sentinels); the cluster bus is the nodes'.
    # A transition's target replicates from the data nodes' client port.
    client = node_ports(topology, "redis", "redis")
    return _policy(
        topology.spec,
        "redis",
        "redis-ingress",
        component_selector("redis"),
        [
            {
                "from": _from("gateway", "monitoring"),
                "ports": _ports(*node_ports(topology, "redis", "redis", "sentinel")),
            },
            {"from": _from("redis")},
            *(
                [{"from": _target(topology.spec, "redis"), "ports": _ports(*client)}]
                if topology.spec.promote_to
                else []
            ),
        ],
    )


def monitoring_policy(topology: Topology) -> Manifest:
    ports = node_ports(topology, "monitoring", "metrics")
    return _policy(
        topology.spec,
        "monitoring",
        "monitoring-ingress",
        component_selector("monitoring"),
        [{"from": _scrapers(), "ports": _ports(*ports)}] if ports else [],
    )


def _target(spec: PhaseSpec, component: str) -> list[dict[str, Any]]:
    """A transition's source (sikka:promoteTo): the target stack's pods of ``component``, in
    that stack's namespace (its default one, ``sikka-<stack>``), replicate from this one."""
    if spec.promote_to is None:
        return []
    namespace = default_namespace(stack_name(spec.promote_to))
    return [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "podSelector": component_selector(component),
        }
    ]


def postgres_policy(spec: PhaseSpec) -> Manifest:
    operator = {
        "namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": postgres.OPERATOR_NAMESPACE}
        }
    }
    return _policy(
        spec,
        "postgres",
        "postgres-ingress",
        component_selector("postgres"),
        [
            # No port list: which container port serves the Service's 5432 (Envoy, PgBouncer
            # or Postgres) is StackGres's choice and differs between its versions.
            {"from": [*_from("postgres"), operator, *_target(spec, "postgres")]},
        ],
    )


def network_policies(topology: Topology) -> list[Manifest]:
    spec = topology.spec
    return [
        default_deny(spec),
        postgres_policy(spec),
        redis_policy(topology),
        gateway_policy(topology),
        nginx_policy(topology),
        monitoring_policy(topology),
    ]
