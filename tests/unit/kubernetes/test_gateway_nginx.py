"""Gateway and Nginx: autoscaling, budgets, spreading, draining, configuration."""

from __future__ import annotations

from typing import Any

import pytest
from k8s_support import SPECS, env_of, find, of_kind, on_kubernetes

from scaling.kubernetes import build_manifests
from scaling.kubernetes.gateway import termination_grace_seconds
from scaling.topology import build_topology


def _container(manifests: list[Any], name: str) -> dict[str, Any]:
    return find(manifests, "Deployment", name).body["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(("name", "low", "high"), [("gateway", 4, 12), ("nginx", 2, 6)])
def test_scale_autoscales_on_cpu_70_and_memory_80(name: str, low: int, high: int) -> None:
    manifests = build_manifests(SPECS["scale"]())
    hpa = find(manifests, "HorizontalPodAutoscaler", name)
    assert hpa.api_version == "autoscaling/v2"
    body = hpa.body["spec"]
    assert body["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert (body["minReplicas"], body["maxReplicas"]) == (low, high)
    targets = {
        m["resource"]["name"]: m["resource"]["target"]["averageUtilization"]
        for m in body["metrics"]
    }
    assert targets == {"cpu": 70, "memory": 80}
    assert all(m["resource"]["target"]["type"] == "Utilization" for m in body["metrics"])
    # The HPA owns the replica count.
    assert "replicas" not in find(manifests, "Deployment", name).body["spec"]


@pytest.mark.parametrize("phase", ["growth", "launch"])
def test_without_autoscaling_the_deployments_carry_the_phase_replicas(phase: str) -> None:
    spec = SPECS[phase]()
    manifests = build_manifests(spec)
    assert of_kind(manifests, "HorizontalPodAutoscaler") == []
    assert (
        find(manifests, "Deployment", "gateway").body["spec"]["replicas"] == spec.gateway.replicas
    )
    assert find(manifests, "Deployment", "nginx").body["spec"]["replicas"] == spec.nginx.replicas


def test_every_deployment_has_a_disruption_budget(manifests: list[Any]) -> None:
    budgets = {m.name: m.body["spec"] for m in of_kind(manifests, "PodDisruptionBudget")}
    for deployment in of_kind(manifests, "Deployment"):
        budget = budgets[deployment.name]
        assert budget["maxUnavailable"] == 1
        assert budget["selector"] == deployment.body["spec"]["selector"]


def test_gateway_environment() -> None:
    spec = SPECS["scale"]()
    env = env_of(_container(build_manifests(spec), "gateway"))
    assert env["GATEWAY_PORT"]["value"] == "8080"
    assert env["WEBSOCKET_MAX_CONNECTIONS"]["value"] == "2500"
    assert env["GATEWAY_DRAIN_SECONDS"]["value"] == str(spec.gateway.drain_seconds)
    assert env["REDIS_MODE"]["value"] == "cluster"
    assert "REDIS_CLUSTER_NODES" in env
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "redis-credentials"
    # Each pod is its own gateway: GATEWAY_ID is the pod's name, not the topology node's.
    assert env["GATEWAY_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # Tokens: required, HS256 with the key from the gateways' own Secret.
    assert env["GATEWAY_AUTH_MODE"]["value"] == "required"
    assert env["GATEWAY_METRICS_PORT"]["value"] == "9102"
    assert env["GATEWAY_JWT_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "gateway-credentials",
        "key": "jwt-secret",
    }
    secret = find(build_manifests(spec), "Secret", "gateway-credentials")
    assert secret.body["stringData"] == {"jwt-secret": "${GATEWAY_JWT_SECRET}"}


def test_gateway_with_a_jwks_url_gets_no_shared_key() -> None:
    auth = {
        "jwksUrl": "https://id.example.com/jwks.json",
        "issuer": "https://id.example.com/",
        "audience": "sikka",
        "allowedOrigins": ["https://app.example.com"],
    }
    spec = on_kubernetes("scale", **{"sikka:gateway": {"auth": auth}})
    manifests = build_manifests(spec)
    env = env_of(_container(manifests, "gateway"))
    assert "GATEWAY_JWT_SECRET" not in env
    assert not [m for m in of_kind(manifests, "Secret") if m.name == "gateway-credentials"]
    assert env["GATEWAY_JWKS_URL"]["value"] == "https://id.example.com/jwks.json"
    assert env["GATEWAY_JWT_ISSUER"]["value"] == "https://id.example.com/"
    assert env["GATEWAY_JWT_AUDIENCE"]["value"] == "sikka"
    assert env["GATEWAY_ALLOWED_ORIGINS"]["value"] == "https://app.example.com"


@pytest.mark.parametrize("phase", sorted(SPECS))
def test_gateway_environment_is_the_topology_gateway_environment(phase: str) -> None:
    spec = SPECS[phase]()
    node = build_topology(spec).group("gateway")[0]
    env = env_of(_container(build_manifests(spec), "gateway"))
    plain = {name: item["value"] for name, item in env.items() if "value" in item}
    assert plain == {k: v for k, v in node.env.items() if k != "GATEWAY_ID"}
    secrets = {name for name, item in env.items() if "secretKeyRef" in item.get("valueFrom", {})}
    assert secrets == set(node.secret_env)


@pytest.mark.parametrize("phase", sorted(SPECS))
def test_gateways_get_no_database_address_or_secret(phase: str) -> None:
    """Gateways never use the database: the Deployment carries the Redis password and the
    token key as its only secrets, and nothing of Postgres (no DATABASE_* variable, no
    postgres-credentials)."""
    env = env_of(_container(build_manifests(SPECS[phase]()), "gateway"))
    assert not [name for name in env if name.startswith("DATABASE")]
    refs = [item["valueFrom"].get("secretKeyRef") for item in env.values() if "valueFrom" in item]
    refs = [ref for ref in refs if ref is not None]
    assert refs == [
        {"name": "redis-credentials", "key": "password"},
        {"name": "gateway-credentials", "key": "jwt-secret"},
    ]


def test_growth_gateway_finds_redis_through_sentinel() -> None:
    env = env_of(_container(build_manifests(SPECS["growth"]()), "gateway"))
    assert env["REDIS_MODE"]["value"] == "sentinel"
    assert env["REDIS_MASTER_NAME"]["value"] == "sikka"


def test_gateway_probes_spreading_and_draining(spec: Any, manifests: list[Any]) -> None:
    deployment = find(manifests, "Deployment", "gateway").body["spec"]
    pod = deployment["template"]["spec"]
    container = pod["containers"][0]
    # Readiness turns 503 while the pod is full; liveness stays up then (no restart).
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": spec.gateway.port, "metrics": spec.gateway.metrics_port}
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    node = build_topology(spec).group("gateway")[0]
    assert pod["terminationGracePeriodSeconds"] == termination_grace_seconds(node)
    assert pod["terminationGracePeriodSeconds"] > spec.gateway.drain_seconds
    spread = pod["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"] == deployment["selector"]
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_gateway_memory_grows_with_connections_per_replica() -> None:
    def memory(phase: str) -> int:
        container = _container(build_manifests(SPECS[phase]()), "gateway")
        return int(container["resources"]["requests"]["memory"].removesuffix("Mi"))

    assert memory("launch") < memory("growth") < memory("scale")
    assert memory("scale") >= 2500 * 48 // 1024


def test_gateway_services() -> None:
    manifests = build_manifests(SPECS["scale"]())
    headless = find(manifests, "Service", "gateway-headless").body["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["ports"][0]["port"] == 8080
    assert find(manifests, "Service", "gateway").body["spec"]["type"] == "ClusterIP"


def test_nginx_config_at_scale() -> None:
    manifests = build_manifests(SPECS["scale"]())
    conf = find(manifests, "ConfigMap", "nginx-config").body["data"]["nginx.conf"]
    # nginx.workerConnections 4096, doubled for the accept gate's loopback pair.
    assert "worker_connections 8192;" in conf
    assert "worker_processes 4;" in conf
    assert (
        "server gateway-headless.sikka-scale.svc.cluster.local:8080 resolve max_conns=1250;" in conf
    )
    assert "resolver kube-dns.kube-system.svc.cluster.local" in conf
    assert "zone gateways" in conf
    assert "hash $sticky_key consistent;" in conf
    assert "map $arg_client_id $sticky_key" in conf
    assert "map $http_upgrade $connection_upgrade" in conf
    assert "proxy_read_timeout 3600s;" in conf
    assert "listen 8080" in conf
    assert "listen 8081;" in conf and "stub_status;" in conf
    assert "location = /healthz" in conf
    assert "pid /tmp/nginx/nginx.pid;" in conf


def test_nginx_runs_unprivileged_behind_a_load_balancer(manifests: list[Any], spec: Any) -> None:
    container = _container(manifests, "nginx")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "status": spec.nginx.status_port}
    service = find(manifests, "Service", "nginx").body["spec"]
    assert service["type"] == spec.kubernetes.nginx_service_type == "LoadBalancer"
    assert service["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp/nginx" in mounts
    assert container["command"][:3] == ["nginx", "-c", "/etc/nginx/sikka/nginx.conf"]
    # A new nginx.conf changes the pod template, which rolls the pods.
    template = find(manifests, "Deployment", "nginx").body["spec"]["template"]
    assert len(template["metadata"]["annotations"]["sikka.io/config-sha256"]) == 64


def test_nginx_status_port_must_be_unprivileged() -> None:
    from k8s_support import on_kubernetes

    from scaling.issues import ConfigError

    with pytest.raises(
        ConfigError,
        match=r"sikka:nginx\.statusPort: 81: on Kubernetes nginx runs as non-root and serves "
        r"HTTP on 8080; choose another port >= 1024",
    ):
        on_kubernetes("scale", **{"sikka:nginx": {"statusPort": 81}})
