"""Nginx as the project's own Deployment, in front of the gateways.

The nginx.conf comes from :func:`scaling.render.nginx.render_nginx_conf` (shared with Docker):
the upstream is the gateways' headless Service, re-resolved through kube-dns
(``server <fqdn>:<port> resolve`` in a ``zone``, nginx >= 1.27.3), clients are hashed
consistently on their ``client_id``, WebSocket upgrades are passed through with long timeouts,
and ``stub_status`` answers on an internal-only listener.

Nginx runs as its image's non-root user: it listens on unprivileged ports (the Service maps
``nginx.port`` → 8080) and keeps its pid and temp files in an emptyDir, so the root
filesystem stays read-only.
"""

from __future__ import annotations

import hashlib
from typing import Any

from scaling.model import PhaseSpec
from scaling.render.nginx import NginxLayout, render_nginx_conf
from scaling.rules import KUBERNETES_NGINX_HTTP_PORT

from . import gateway
from .manifests import CLUSTER_DOMAIN, Manifest, labels, obj, selector_labels, service_fqdn
from .policy import autoscaler, disruption_budget
from .security import (
    NGINX_UID,
    container_security_context,
    empty_dir,
    pod_spec,
    resources,
    round_up,
)

NAME = "nginx"
CONFIG_NAME = "nginx-config"
HTTP_PORT = KUBERNETES_NGINX_HTTP_PORT
CONF_DIR = "/etc/nginx/sikka"
RUNTIME_DIR = "/tmp/nginx"
RESOLVER = f"kube-dns.kube-system.svc.{CLUSTER_DOMAIN}"
# stub_status answers pod-network sources only; the NetworkPolicy narrows it to the namespace.
STATUS_ALLOW = ("127.0.0.1", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
PRE_STOP_SECONDS = 5


def layout(spec: PhaseSpec) -> NginxLayout:
    upstream = service_fqdn(gateway.HEADLESS, spec.kubernetes.namespace)
    return NginxLayout(
        listen=str(HTTP_PORT),
        status_listen=str(spec.nginx.status_port),  # checked by scaling.rules
        upstream_servers=(f"{upstream}:{spec.gateway.port} resolve",),
        status_allow=STATUS_ALLOW,
        resolver=RESOLVER,
        runtime_dir=RUNTIME_DIR,
    )


def nginx_conf(spec: PhaseSpec) -> str:
    return render_nginx_conf(spec, layout(spec))


def nginx_resources(spec: PhaseSpec) -> dict[str, Any]:
    nginx = spec.nginx
    # A quarter core per worker requested, a full core per worker as the limit; ~4 KiB of
    # buffers per connection slot over a 64 MiB baseline.
    cpu = 250 * nginx.worker_processes
    memory = round_up(64 + nginx.worker_connections * nginx.worker_processes * 4 / 1024, 32)
    return resources(cpu, memory, 1000 * nginx.worker_processes, 2 * memory)


def deployment(spec: PhaseSpec, conf: str) -> Manifest:
    nginx = spec.nginx
    conf_path = f"{CONF_DIR}/nginx.conf"
    termination = PRE_STOP_SECONDS + spec.gateway.drain_seconds + 10
    container = {
        "name": "nginx",
        "image": nginx.image,
        # Bypass the image's entrypoint scripts: they rewrite files under /etc/nginx.
        "command": ["nginx", "-c", conf_path, "-g", "daemon off;"],
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "status", "containerPort": spec.nginx.status_port, "protocol": "TCP"},
        ],
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
        # Leave the endpoints first, then stop gracefully (SIGQUIT): open WebSockets get the
        # gateways' drain window before the pod is killed.
        "lifecycle": {
            "preStop": {
                "exec": {
                    "command": [
                        "sh",
                        "-c",
                        f"sleep {PRE_STOP_SECONDS}; nginx -c {conf_path} -s quit; "
                        f"sleep {spec.gateway.drain_seconds}",
                    ]
                }
            }
        },
        "resources": nginx_resources(spec),
        "securityContext": container_security_context(NGINX_UID),
        "volumeMounts": [
            {"name": "config", "mountPath": CONF_DIR, "readOnly": True},
            {"name": "runtime", "mountPath": RUNTIME_DIR},
        ],
    }
    pod = pod_spec(
        NGINX_UID,
        [container],
        [
            {"name": "config", "configMap": {"name": CONFIG_NAME}},
            empty_dir("runtime", size_mi=256),
        ],
        terminationGracePeriodSeconds=termination,
        topologySpreadConstraints=[
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector_labels(NAME)},
            }
        ],
    )
    checksum = hashlib.sha256(conf.encode()).hexdigest()
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
        body = {"replicas": nginx.replicas, **body}
    return obj(
        "nginx",
        "apps/v1",
        "Deployment",
        NAME,
        spec.kubernetes.namespace,
        labels(spec, NAME, "nginx"),
        spec=body,
    )


def service(spec: PhaseSpec) -> Manifest:
    kind = spec.kubernetes.nginx_service_type
    body: dict[str, Any] = {
        "type": kind,
        "selector": selector_labels(NAME),
        "ports": [
            {"name": "http", "port": spec.nginx.port, "targetPort": "http", "protocol": "TCP"}
        ],
    }
    if kind != "ClusterIP":
        # Keep the client address (X-Real-IP, logs) and skip the extra node hop.
        body["externalTrafficPolicy"] = "Local"
    return obj(
        "nginx",
        "v1",
        "Service",
        NAME,
        spec.kubernetes.namespace,
        labels(spec, NAME, "nginx"),
        spec=body,
    )


def nginx_manifests(spec: PhaseSpec) -> list[Manifest]:
    nginx = spec.nginx
    ns = spec.kubernetes.namespace
    conf = nginx_conf(spec)
    manifests = [
        obj(
            "nginx",
            "v1",
            "ConfigMap",
            CONFIG_NAME,
            ns,
            labels(spec, CONFIG_NAME, "nginx"),
            data={"nginx.conf": conf},
        ),
        deployment(spec, conf),
        service(spec),
    ]
    if spec.autoscaling.enabled:
        manifests.append(autoscaler(spec, "nginx", NAME, nginx.replicas, nginx.max_replicas))
    manifests.append(disruption_budget(spec, "nginx", NAME))
    return manifests
