"""The WebSocket gateway: Deployment, Services, autoscaler and disruption budget.

Two Services: ``gateway`` (ClusterIP, for in-cluster clients) and ``gateway-headless``, whose
DNS name resolves to every ready gateway pod; Nginx re-resolves it (``server … resolve``) and
hashes clients onto pods consistently.

Draining: on termination the pod is first removed from the endpoints (``preStop`` sleep, so
Nginx and kube-proxy stop sending new connections), then receives SIGTERM and closes its
WebSockets gracefully over ``GATEWAY_DRAIN_SECONDS``; the grace period covers both.
"""

from __future__ import annotations

from typing import Any

from scaling.model import PhaseSpec
from scaling.render.endpoints import Endpoint
from scaling.render.gateway_env import database_env as shared_database_env

from . import postgres, redis
from .manifests import Manifest, labels, obj, selector_labels
from .policy import autoscaler, disruption_budget
from .secrets import POSTGRES_SECRET, secret_key_ref
from .security import (
    GATEWAY_UID,
    container_security_context,
    empty_dir,
    pod_spec,
    resources,
    round_up,
)

NAME = "gateway"
HEADLESS = "gateway-headless"
PRE_STOP_SECONDS = 5
# Slack after the drain for the process to exit before SIGKILL.
EXIT_SLACK_SECONDS = 10


def termination_grace_seconds(spec: PhaseSpec) -> int:
    return PRE_STOP_SECONDS + spec.gateway.drain_seconds + EXIT_SLACK_SECONDS


def gateway_resources(spec: PhaseSpec) -> dict[str, Any]:
    """Sized from the connections one replica holds: ~48 KiB per WebSocket (socket buffers,
    frames in flight, per-client queue) over a 96 MiB interpreter baseline, and 0.2 millicore
    per connection for heartbeats and fan-out. The HPA's percentages are of these requests."""
    connections = spec.gateway.connections_per_replica
    memory = round_up(96 + connections * 48 / 1024, 32)
    cpu = max(100, round_up(connections * 0.2, 50))
    return resources(cpu, memory, 2 * cpu, 2 * memory)


def database_env(spec: PhaseSpec) -> list[dict[str, Any]]:
    target = Endpoint(postgres.primary_host(spec), postgres.SERVICE_PORT)
    plain = shared_database_env(spec, target=target, read_pool=False)
    env: list[dict[str, Any]] = [{"name": key, "value": value} for key, value in plain.items()]
    env += [
        {
            "name": "DATABASE_PASSWORD",
            "valueFrom": secret_key_ref(POSTGRES_SECRET, postgres.APP_PASSWORD_KEY),
        },
    ]
    read_host = postgres.read_host(spec)
    if read_host:
        env.append({"name": "DATABASE_READ_HOST", "value": read_host})
    # Kubernetes expands $(VAR) from the variables above: the URL never holds the password.
    env.append(
        {
            "name": "DATABASE_URL",
            "value": "postgresql://$(DATABASE_USER):$(DATABASE_PASSWORD)"
            "@$(DATABASE_HOST):$(DATABASE_PORT)/$(DATABASE_NAME)",
        }
    )
    return env


def gateway_env(spec: PhaseSpec) -> list[dict[str, Any]]:
    gw = spec.gateway
    return [
        {"name": "GATEWAY_PORT", "value": str(gw.port)},
        {"name": "GATEWAY_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "WEBSOCKET_MAX_CONNECTIONS", "value": str(gw.connections_per_replica)},
        {"name": "GATEWAY_DRAIN_SECONDS", "value": str(gw.drain_seconds)},
        *redis.client_env(spec),
        redis.password_env(),
        *database_env(spec),
    ]


def deployment(spec: PhaseSpec) -> Manifest:
    gw = spec.gateway
    container = {
        "name": "gateway",
        "image": gw.image,
        "env": gateway_env(spec),
        "ports": [{"name": "http", "containerPort": gw.port, "protocol": "TCP"}],
        # /healthz turns 503 while draining or while Redis is unreachable: take the pod out
        # of rotation, but do not restart it (that would drop every WebSocket it holds).
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "initialDelaySeconds": 15,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            # ~2 minutes of failures: a Redis blip alone must not restart the gateways.
            "failureThreshold": 12,
        },
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_SECONDS)]}}},
        "resources": gateway_resources(spec),
        "securityContext": container_security_context(GATEWAY_UID),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod = pod_spec(
        GATEWAY_UID,
        [container],
        [empty_dir("tmp", size_mi=64)],
        terminationGracePeriodSeconds=termination_grace_seconds(spec),
        topologySpreadConstraints=[
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector_labels(NAME)},
            }
        ],
    )
    body: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(NAME)},
        # Surge first: capacity never drops below the current count during a rollout.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "template": {"metadata": {"labels": labels(spec, NAME, "gateway")}, "spec": pod},
    }
    if not spec.autoscaling.enabled:
        # With an HPA the replica count is the autoscaler's: setting it here would reset it
        # on every `pulumi up`.
        body = {"replicas": gw.replicas, **body}
    return obj(
        "gateway",
        "apps/v1",
        "Deployment",
        NAME,
        spec.kubernetes.namespace,
        labels(spec, NAME, "gateway"),
        spec=body,
    )


def services(spec: PhaseSpec) -> list[Manifest]:
    ns = spec.kubernetes.namespace
    port = {"name": "http", "port": spec.gateway.port, "targetPort": "http", "protocol": "TCP"}
    return [
        obj(
            "gateway",
            "v1",
            "Service",
            NAME,
            ns,
            labels(spec, NAME, "gateway"),
            spec={"type": "ClusterIP", "selector": selector_labels(NAME), "ports": [port]},
        ),
        obj(
            "gateway",
            "v1",
            "Service",
            HEADLESS,
            ns,
            labels(spec, HEADLESS, "gateway"),
            spec={"clusterIP": "None", "selector": selector_labels(NAME), "ports": [port]},
        ),
    ]


def gateway_manifests(spec: PhaseSpec) -> list[Manifest]:
    gw = spec.gateway
    manifests = [*services(spec), deployment(spec)]
    if spec.autoscaling.enabled:
        manifests.append(autoscaler(spec, "gateway", NAME, gw.replicas, gw.max_replicas))
    manifests.append(disruption_budget(spec, "gateway", NAME))
    return manifests
