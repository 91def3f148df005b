"""Nginx as the project's own Deployment, in front of the gateways.

The nginx.conf, its path, the command and the ports are the topology's nginx node
(:mod:`scaling.topology.edge`, which renders the Kubernetes layout): the upstream is the
gateways' headless Service, re-resolved through kube-dns (``server <fqdn>:<port> resolve``
in a ``zone``, nginx >= 1.27.3), clients are hashed consistently on their ``client_id``,
WebSocket upgrades are passed through with long timeouts, and ``stub_status`` answers on an
internal-only listener, which the nginx-prometheus-exporter container in the same pod reads
over loopback (scaling.kubernetes.monitoring).

Nginx runs as its image's non-root user: it listens on unprivileged ports (the Service maps
``nginx.port`` → 8080) and keeps its pid and temp files in an emptyDir, so the root
filesystem stays read-only.
"""

from __future__ import annotations

import hashlib
from typing import Any

from scaling.model import PhaseSpec
from scaling.topology import Node, Topology
from scaling.topology.edge import NGINX, NGINX_K8S_RUNTIME_DIR

from . import pods
from .manifests import Manifest, labels, obj, selector_labels
from .monitoring import nginx_exporter_container
from .policy import autoscaler, disruption_budget
from .security import (
    NGINX_UID,
    container_security_context,
    empty_dir,
    pod_spec,
    resources,
    round_up,
)
from .services import tier_services

NAME = NGINX
CONFIG_NAME = "nginx-config"
PRE_STOP_SECONDS = 5


def nginx_resources(spec: PhaseSpec) -> dict[str, Any]:
    nginx = spec.nginx
    # A quarter core per worker requested, a full core per worker as the limit. Memory:
    # measured on the local launch phase, a WebSocket through the accept gate costs the
    # worker ~29 KiB (~22 KiB without the gate), ~15 KiB per client/upstream connection:
    # 16 KiB per connection over a 64 MiB baseline.
    cpu = 250 * nginx.worker_processes
    memory = round_up(64 + nginx.instance_capacity * 16 / 1024, 32)
    return resources(cpu, memory, 1000 * nginx.worker_processes, 2 * memory)


def conf_path(node: Node) -> str:
    """Where the node's nginx.conf is mounted (the file its command names)."""
    (conf,) = node.files
    return conf.path


def deployment(topology: Topology) -> Manifest:
    spec = topology.spec
    nodes = pods.group_nodes(topology, NAME)
    node = nodes[0]
    files = pods.uniform(nodes, "files", lambda n: n.files)
    config_mounts, config_volumes = pods.config_volumes(files, CONFIG_NAME)
    stop = pods.uniform(nodes, "stop policy", lambda n: n.stop)
    container = {
        "name": "nginx",
        "image": pods.uniform(nodes, "image", lambda n: n.image),
        # The topology's command, run in place of the image's entrypoint: its scripts rewrite
        # files under /etc/nginx, which the read-only root filesystem refuses.
        "command": pods.uniform(nodes, "command", lambda n: list(n.command)),
        "ports": pods.uniform(nodes, "ports", pods.container_ports),
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "status"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        # Leave the endpoints first, then stop gracefully: the topology's stop is SIGQUIT,
        # which Kubernetes does not send, so preStop sends it (`nginx -s quit`) and waits
        # out the gateways' drain window before the pod is killed.
        "lifecycle": {
            "preStop": {
                "exec": {
                    "command": [
                        "sh",
                        "-c",
                        f"sleep {PRE_STOP_SECONDS}; nginx -c {conf_path(node)} -s quit; "
                        f"sleep {spec.gateway.drain_seconds}",
                    ]
                }
            }
        },
        "resources": nginx_resources(spec),
        "securityContext": container_security_context(pods.uid(node, NGINX_UID)),
        "volumeMounts": [
            *config_mounts,
            {"name": "runtime", "mountPath": NGINX_K8S_RUNTIME_DIR},
        ],
    }
    pod = pod_spec(
        pods.uid(node, NGINX_UID),
        # The exporter beside it reads stub_status over loopback (the ``nginx`` PodMonitor).
        [container, nginx_exporter_container(topology, node)],
        [*config_volumes, empty_dir("runtime", size_mi=256)],
        terminationGracePeriodSeconds=PRE_STOP_SECONDS + stop.grace_seconds,
        topologySpreadConstraints=[
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector_labels(NAME)},
            }
        ],
    )
    checksum = hashlib.sha256("".join(f.content for f in files).encode()).hexdigest()
    body: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(NAME)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "template": {
            "metadata": {
                "labels": labels(spec, NAME, "nginx"),
                # A new nginx.conf rolls the pods (a ConfigMap change alone would not).
                "annotations": {"sikka.io/config-sha256": checksum},
            },
            "spec": pod,
        },
    }
    if not spec.autoscaling.enabled:
        body = {"replicas": len(nodes), **body}
    return obj(
        "nginx",
        "apps/v1",
        "Deployment",
        NAME,
        spec.namespace,
        labels(spec, NAME, "nginx"),
        spec=body,
    )


def services(topology: Topology) -> list[Manifest]:
    kind = topology.spec.kubernetes.nginx_service_type
    # Keep the client address (X-Real-IP, logs) and skip the extra node hop.
    extra = {"externalTrafficPolicy": "Local"} if kind != "ClusterIP" else {}
    return tier_services(topology, "nginx", service_type=kind, **extra)


def nginx_manifests(topology: Topology) -> list[Manifest]:
    spec = topology.spec
    manifests = [
        obj(
            "nginx",
            "v1",
            "ConfigMap",
            CONFIG_NAME,
            spec.namespace,
            labels(spec, CONFIG_NAME, "nginx"),
            data=pods.config_map_data(topology.tier("nginx")),
        ),
        deployment(topology),
        *services(topology),
    ]
    if spec.autoscaling.enabled:
        bounds = topology.bounds(NAME)
        manifests.append(autoscaler(spec, "nginx", NAME, bounds.min_replicas, bounds.max_replicas))
    manifests.append(disruption_budget(spec, "nginx", NAME))
    return manifests
