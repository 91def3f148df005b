"""The WebSocket gateway: Deployment, Services, autoscaler and disruption budget.

The environment, Services and replica bounds are the topology's (:mod:`scaling.topology.edge`):
``gateway`` (ClusterIP, for in-cluster clients) and ``gateway-headless``, whose DNS name
resolves to every ready gateway pod; Nginx re-resolves it (``server … resolve``) and hashes
clients onto pods consistently.

Draining: on termination the pod is first removed from the endpoints (``preStop`` sleep, so
Nginx and kube-proxy stop sending new connections), then receives SIGTERM and closes its
WebSockets gracefully over ``GATEWAY_DRAIN_SECONDS``; the grace period covers both.
"""

from __future__ import annotations

from typing import Any

from scaling.model import PhaseSpec
from scaling.topology import Node, Topology
from scaling.topology.edge import GATEWAY_GROUP

from . import pods
from .manifests import Manifest, labels, obj, selector_labels
from .policy import autoscaler, disruption_budget
from .secrets import GATEWAY_SECRET, SECRET_KEYS, secret_env, secret_manifest, secret_placeholders
from .security import (
    GATEWAY_UID,
    container_security_context,
    empty_dir,
    pod_spec,
    resources,
    round_up,
)
from .services import tier_services

NAME = GATEWAY_GROUP
PRE_STOP_SECONDS = 5
# Each pod's own name: a Deployment's pods are not the topology's gateway-<i>.
GATEWAY_ID = "GATEWAY_ID"


def termination_grace_seconds(node: Node) -> int:
    """The preStop pause, then the topology's stop period (the drain plus exit slack)."""
    return PRE_STOP_SECONDS + node.stop.grace_seconds


def gateway_resources(spec: PhaseSpec) -> dict[str, Any]:
    """Sized from the connections one replica holds: ~48 KiB per WebSocket (socket buffers,
    frames in flight, per-client queue) over a 96 MiB interpreter baseline, and 0.2 millicore
    per connection for heartbeats and fan-out. The HPA's percentages are of these requests."""
    connections = spec.gateway.connections_per_replica
    memory = round_up(96 + connections * 48 / 1024, 32)
    cpu = max(100, round_up(connections * 0.2, 50))
    return resources(cpu, memory, 2 * cpu, 2 * memory)


def _shared_env(node: Node) -> dict[str, str]:
    """The node's environment less its own id, which must be its name."""
    if node.env.get(GATEWAY_ID) != node.name:
        raise ValueError(f"{node.name}: {GATEWAY_ID} is not the node's name")
    return {k: v for k, v in node.env.items() if k != GATEWAY_ID}


def container_env(nodes: list[Node]) -> list[dict[str, Any]]:
    """The topology's gateway environment, in its order: GATEWAY_ID becomes each pod's own
    name and secrets (the Redis password, nothing of the database's) become secretKeyRefs."""
    pods.uniform(nodes, "environment", _shared_env)
    env: list[dict[str, Any]] = [
        {"name": key, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
        if key == GATEWAY_ID
        else {"name": key, "value": value}
        for key, value in nodes[0].env.items()
    ]
    env += pods.uniform(nodes, "secrets", secret_env)
    return env


def deployment(topology: Topology) -> Manifest:
    spec = topology.spec
    nodes = pods.group_nodes(topology, NAME)
    node = nodes[0]
    container = {
        "name": "gateway",
        "image": pods.uniform(nodes, "image", lambda n: n.image),
        "env": container_env(nodes),
        "ports": pods.uniform(nodes, "ports", pods.container_ports),
        # /healthz turns 503 while draining, full or without Redis: take the pod out of
        # rotation (and out of the headless Service Nginx resolves). /livez stays 200 then:
        # a restart would drop every WebSocket the pod holds and cure none of those.
        # (The kubelet asks over HTTP: no interpreter started per probe.)
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/livez", "port": "http"},
            "initialDelaySeconds": 15,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            # ~2 minutes without an answer: a busy event loop alone must not restart it.
            "failureThreshold": 12,
        },
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_SECONDS)]}}},
        "resources": gateway_resources(spec),
        "securityContext": container_security_context(pods.uid(node, GATEWAY_UID)),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod = pod_spec(
        pods.uid(node, GATEWAY_UID),
        [container],
        [empty_dir("tmp", size_mi=64)],
        terminationGracePeriodSeconds=pods.uniform(nodes, "stop", termination_grace_seconds),
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
        body = {"replicas": len(nodes), **body}
    return obj(
        "gateway",
        "apps/v1",
        "Deployment",
        NAME,
        spec.namespace,
        labels(spec, NAME, "gateway"),
        spec=body,
    )


def gateway_secret(topology: Topology) -> list[Manifest]:
    """The gateways' own Secret (the HS256 key), when their nodes refer to one."""
    used = {s for n in topology.group(NAME) for s in n.secret_env.values()}
    if not any(SECRET_KEYS[s][0] == GATEWAY_SECRET for s in used):
        return []
    body = secret_placeholders(GATEWAY_SECRET)
    return [secret_manifest(topology.spec, "gateway", GATEWAY_SECRET, body)]


def gateway_manifests(topology: Topology) -> list[Manifest]:
    spec = topology.spec
    manifests = [
        *gateway_secret(topology),
        *tier_services(topology, "gateway"),
        deployment(topology),
    ]
    if spec.autoscaling.enabled:
        bounds = topology.bounds(NAME)
        manifests.append(
            autoscaler(spec, "gateway", NAME, bounds.min_replicas, bounds.max_replicas)
        )
    manifests.append(disruption_budget(spec, "gateway", NAME))
    return manifests
