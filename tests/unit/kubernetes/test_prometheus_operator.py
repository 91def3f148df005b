"""Monitoring on Kubernetes: the Prometheus Operator objects are the same jobs and rules as
every other view, the exporters run where the jobs say, and the NetworkPolicies admit the
scraper to exactly the metrics ports."""

from __future__ import annotations

from typing import Any

import pytest
from k8s_support import SPECS, find, of_kind, on_kubernetes
from test_network import allowed, pod

from scaling.kubernetes import Manifest, build_manifests, defined_hosts
from scaling.render.alerts import alert_rules
from scaling.topology import build_topology
from scaling.topology.monitoring import monitoring_jobs

PROMETHEUS = {"app.kubernetes.io/name": "prometheus", "prometheus": "k8s"}


def endpoints(manifests: list[Manifest], name: str) -> list[dict[str, Any]]:
    return find(manifests, "PodMonitor", name).body["spec"]["podMetricsEndpoints"]  # type: ignore[no-any-return]


def test_the_prometheus_rule_is_the_phase_alert_rules(manifests: list[Manifest], spec: Any) -> None:
    rule = find(manifests, "PrometheusRule", "sikka-alerts")
    assert rule.body["spec"] == alert_rules(spec)
    assert rule.body["metadata"]["labels"]["app.kubernetes.io/part-of"] == "sikka-scaling"


def test_every_redis_server_is_probed_by_its_pod_name(manifests: list[Manifest], spec: Any) -> None:
    topology = build_topology(spec)
    servers = [n for n in topology.tier("redis") if not n.one_shot]
    redis = endpoints(manifests, "redis-metrics")
    probes = {e["params"]["target"][0] for e in redis}
    hosts = {p.removeprefix("redis://").rsplit(":", 1)[0] for p in probes}
    assert len(redis) == len(servers)
    assert hosts <= defined_hosts(manifests)
    instances = {
        r["replacement"] for e in redis for r in e["relabelings"] if r["targetLabel"] == "instance"
    }
    assert instances == {n.name for n in servers}
    assert all(e["path"] == "/scrape" and e["portNumber"] == 9121 for e in redis)
    # The exporter reads the password from the phase's Secret, and runs as one pod.
    exporter = find(manifests, "Deployment", "redis-exporter").body["spec"]["template"]["spec"]
    (container,) = exporter["containers"]
    (password,) = [e for e in container["env"] if e["name"] == "REDIS_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"] == {"name": "redis-credentials", "key": "password"}
    assert "value" not in password


@pytest.mark.parametrize("processes", [1, 2])
def test_every_gateway_worker_port_is_scraped_and_admitted(processes: int) -> None:
    spec = on_kubernetes("growth", **{"sikka:gateway": {"processes": processes}})
    manifests = build_manifests(spec)
    ports = sorted(e["portNumber"] for e in endpoints(manifests, "gateway-metrics"))
    metrics = spec.gateway.metrics_port
    assert ports == [metrics + i for i in range(processes)]
    gateway = pod("gateway")
    for port in ports:
        assert allowed(manifests, PROMETHEUS, gateway, port, source_namespace="monitoring")
        assert not allowed(manifests, pod("nginx"), gateway, port)
    # The jobs the PodMonitors come from are the topology's.
    (job,) = [j for j in monitoring_jobs(build_topology(spec)) if j.name == "gateway"]
    assert sorted({t.port for t in job.targets}) == ports


def test_nginx_exporter_runs_beside_nginx_and_reads_stub_status_over_loopback(
    manifests: list[Manifest], spec: Any
) -> None:
    deployment = find(manifests, "Deployment", "nginx").body["spec"]["template"]["spec"]
    names = [c["name"] for c in deployment["containers"]]
    assert names == ["nginx", "nginx-exporter"]
    exporter = deployment["containers"][1]
    assert exporter["image"] == spec.monitoring.nginx_exporter_image
    status = spec.nginx.status_port
    assert f"--nginx.scrape-uri=http://127.0.0.1:{status}/nginx_status" in exporter["args"]
    # nginx.conf lets loopback read stub_status.
    conf = find(manifests, "ConfigMap", "nginx-config").body["data"]["nginx.conf"]
    assert "allow 127.0.0.1;" in conf
    (nginx_endpoint,) = endpoints(manifests, "nginx-metrics")
    assert nginx_endpoint["portNumber"] == 9113
    # Only Prometheus reaches the exporter; stub_status stays internal.
    assert allowed(manifests, PROMETHEUS, pod("nginx"), 9113, source_namespace="monitoring")
    assert not allowed(manifests, None, pod("nginx"), 9113)
    assert not allowed(manifests, pod("gateway"), pod("nginx"), 9113)


def test_the_redis_exporter_reaches_redis_and_only_prometheus_reaches_it(
    manifests: list[Manifest],
) -> None:
    exporter = pod("monitoring", "redis-exporter")
    assert allowed(manifests, exporter, pod("redis"), 6379)
    assert not allowed(manifests, exporter, pod("redis"), 16379)
    assert not allowed(manifests, exporter, pod("postgres"), 5432)
    assert allowed(manifests, PROMETHEUS, exporter, 9121, source_namespace="monitoring")
    assert not allowed(manifests, pod("gateway"), exporter, 9121)
    assert not allowed(manifests, None, exporter, 9121)
    # Prometheus gets the metrics ports alone, never a data port.
    for target, port in ((pod("redis"), 6379), (pod("postgres"), 5432)):
        assert not allowed(manifests, PROMETHEUS, target, port, source_namespace="monitoring")


def test_stackgres_binds_its_exporter_to_the_cluster_prometheus(
    manifests: list[Manifest],
) -> None:
    (cluster,) = [m for m in manifests if m.kind in ("SGCluster", "SGShardedCluster")]
    observability = cluster.body["spec"]["configurations"]["observability"]
    assert observability == {"prometheusAutobind": True}
    # No PodMonitor of ours for PostgreSQL: the operator makes it.
    assert {m.name for m in of_kind(manifests, "PodMonitor")} == {
        "gateway-metrics",
        "nginx-metrics",
        "redis-metrics",
    }


def test_scale_stack_file_monitoring_objects() -> None:
    manifests = build_manifests(SPECS["scale"]())
    kinds = [m.kind for m in manifests if m.tier == "monitoring"]
    assert sorted(kinds) == sorted(
        [
            "Deployment",
            "PodDisruptionBudget",
            "PodMonitor",
            "PodMonitor",
            "PodMonitor",
            "PrometheusRule",
            "NetworkPolicy",
        ]
    )
