"""NetworkPolicies evaluated the way Kubernetes does for ingress: a pod selected by any
policy accepts only what some rule of those policies allows."""

from __future__ import annotations

from typing import Any

from k8s_support import SPECS, find, of_kind

from scaling.kubernetes import Manifest, build_manifests

PART_OF = {"app.kubernetes.io/part-of": "sikka-scaling"}


def pod(component: str, name: str | None = None) -> dict[str, str]:
    return {
        **PART_OF,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/name": name or component,
    }


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "evaluator only understands matchLabels"
    return selector.get("matchLabels", {}).items() <= labels.items()


def allowed(
    manifests: list[Manifest],
    source: dict[str, str] | None,
    target: dict[str, str],
    port: int,
    *,
    source_namespace: str | None = None,
) -> bool:
    """``source`` None is a client outside the cluster; ``source_namespace`` None means the
    phase's own namespace."""
    policies = [m.body["spec"] for m in of_kind(manifests, "NetworkPolicy")]
    selecting = [p for p in policies if _matches(p["podSelector"], target)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy.get("ingress", []):
            if "ports" in rule and port not in {p["port"] for p in rule["ports"]}:
                continue
            if "from" not in rule:
                return True
            for peer in rule["from"]:
                if source is None:
                    continue
                if "namespaceSelector" in peer:
                    ns_labels = {"kubernetes.io/metadata.name": source_namespace or "?"}
                    if _matches(peer["namespaceSelector"], ns_labels) and _matches(
                        peer.get("podSelector", {}), source
                    ):
                        return True
                elif source_namespace is None and _matches(peer["podSelector"], source):
                    return True
    return False


def test_default_deny_selects_every_pod(manifests: list[Manifest]) -> None:
    deny = find(manifests, "NetworkPolicy", "default-deny-ingress").body["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    assert not allowed(manifests, pod("stranger"), pod("something-new"), 80)


def test_only_the_operator_and_postgres_itself_reach_postgres(manifests: list[Manifest]) -> None:
    """Gateways never use the database, so nothing else of ours reaches it."""
    postgres = pod("postgres")
    assert allowed(manifests, pod("postgres"), postgres, 5433)
    assert allowed(
        manifests, {"app": "stackgres-operator"}, postgres, 8008, source_namespace="stackgres"
    )
    for intruder in ("gateway", "nginx", "redis"):
        assert not allowed(manifests, pod(intruder), postgres, 5432), intruder
    assert not allowed(manifests, None, postgres, 5432)
    assert not allowed(manifests, {"app": "x"}, postgres, 5432, source_namespace="default")


def test_only_gateways_and_redis_pods_reach_redis(manifests: list[Manifest]) -> None:
    redis = pod("redis")
    assert allowed(manifests, pod("gateway"), redis, 6379)
    assert allowed(manifests, pod("redis", "redis-sentinel"), redis, 6379)
    assert allowed(manifests, pod("redis", "redis-cluster-create"), redis, 6379)
    assert allowed(manifests, pod("redis"), redis, 16379)  # cluster bus between nodes
    assert not allowed(manifests, pod("gateway"), redis, 16379)
    assert not allowed(manifests, pod("nginx"), redis, 6379)
    assert not allowed(manifests, pod("postgres"), redis, 6379)
    assert not allowed(manifests, None, redis, 6379)


def test_sentinel_port_is_open_to_gateways_only_in_sentinel_mode() -> None:
    growth = build_manifests(SPECS["growth"]())
    assert allowed(growth, pod("gateway"), pod("redis", "redis-sentinel"), 26379)
    scale = build_manifests(SPECS["scale"]())
    assert not allowed(scale, pod("gateway"), pod("redis"), 26379)


def test_nginx_reaches_gateways_and_anyone_reaches_nginx(manifests: list[Manifest]) -> None:
    gateway = pod("gateway")
    assert allowed(manifests, pod("nginx"), gateway, 8080)
    assert not allowed(manifests, None, gateway, 8080)
    assert not allowed(manifests, pod("redis"), gateway, 8080)
    assert allowed(manifests, None, pod("nginx"), 8080)
    # stub_status stays internal: pods of the namespace only.
    assert allowed(manifests, pod("monitoring"), pod("nginx"), 8081)
    assert not allowed(manifests, None, pod("nginx"), 8081)


def test_workload_pods_carry_the_labels_the_policies_select(manifests: list[Manifest]) -> None:
    for m in manifests:
        if m.kind in ("Deployment", "StatefulSet", "Job"):
            template_labels = m.body["spec"]["template"]["metadata"]["labels"]
            assert template_labels["app.kubernetes.io/component"] == m.tier
            assert template_labels["app.kubernetes.io/part-of"] == "sikka-scaling"


def test_gateway_metrics_only_from_prometheus_pods(manifests: list[Manifest]) -> None:
    gateway = pod("gateway")
    prometheus = {"app.kubernetes.io/name": "prometheus", "prometheus": "k8s"}
    # Prometheus (Operator or Helm chart labels) in its own namespace or in ours.
    assert allowed(manifests, prometheus, gateway, 9102, source_namespace="monitoring")
    assert allowed(manifests, prometheus, gateway, 9102)
    # Nobody else: not Nginx, not other pods, not the outside world.
    assert not allowed(manifests, pod("nginx"), gateway, 9102)
    assert not allowed(manifests, pod("monitoring"), gateway, 9102)
    assert not allowed(manifests, None, gateway, 9102)
    # And Prometheus gets /metrics only, not the clients' port.
    assert not allowed(manifests, prometheus, gateway, 8080, source_namespace="monitoring")
