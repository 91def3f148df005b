"""NetworkPolicies: default-deny ingress, then one allow-list per tier.

* Nginx: anyone on its HTTP port; stub_status only from pods of the namespace.
* gateways: only Nginx, on the gateway port.
* Redis: gateways on the client ports (6379, 26379); Redis pods, Sentinels and the
  cluster-create Job among themselves on every port (replication, cluster bus).
* Postgres: gateways, the Postgres pods themselves (replication, Patroni, Citus coordinator
  → workers) and the StackGres operator's namespace (it manages pods through Patroni's API).

Only ingress is restricted: pods keep egress to DNS and the Kubernetes API (Patroni keeps
its leader lock there).
"""

from __future__ import annotations

from typing import Any

from scaling.model import PhaseSpec

from . import nginx, postgres, redis
from .manifests import Manifest, Tier, component_selector, labels, obj


def _policy(
    spec: PhaseSpec, tier: Tier, name: str, selector: dict[str, Any], ingress: list[dict[str, Any]]
) -> Manifest:
    body: dict[str, Any] = {"podSelector": selector, "policyTypes": ["Ingress"]}
    if ingress:
        body["ingress"] = ingress
    return obj(
        tier,
        "networking.k8s.io/v1",
        "NetworkPolicy",
        name,
        spec.kubernetes.namespace,
        labels(spec, name, tier),
        spec=body,
    )


def _from(*components: str) -> list[dict[str, Any]]:
    return [{"podSelector": component_selector(c)} for c in components]


def _ports(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def default_deny(spec: PhaseSpec) -> Manifest:
    return _policy(spec, "namespace", "default-deny-ingress", {}, [])


def nginx_policy(spec: PhaseSpec) -> Manifest:
    return _policy(
        spec,
        "nginx",
        "nginx-ingress",
        component_selector("nginx"),
        [
            {"ports": _ports(nginx.HTTP_PORT)},
            {"from": [{"podSelector": {}}], "ports": _ports(spec.nginx.status_port)},
        ],
    )


def gateway_policy(spec: PhaseSpec) -> Manifest:
    return _policy(
        spec,
        "gateway",
        "gateway-ingress",
        component_selector("gateway"),
        [{"from": _from("nginx"), "ports": _ports(spec.gateway.port)}],
    )


def redis_policy(spec: PhaseSpec) -> Manifest:
    client_ports = [redis.REDIS_PORT]
    if spec.redis.mode == "sentinel":
        client_ports.append(redis.SENTINEL_PORT)
    return _policy(
        spec,
        "redis",
        "redis-ingress",
        component_selector("redis"),
        [
            {"from": _from("gateway"), "ports": _ports(*client_ports)},
            {"from": _from("redis")},
        ],
    )


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
            {"from": [*_from("gateway", "postgres"), operator]},
        ],
    )


def network_policies(spec: PhaseSpec) -> list[Manifest]:
    return [
        default_deny(spec),
        postgres_policy(spec),
        redis_policy(spec),
        gateway_policy(spec),
        nginx_policy(spec),
    ]
