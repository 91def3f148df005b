"""The edge of the phase: WebSocket gateways and the Nginx in front of them.

Gateways find Redis through the names the Redis tier's nodes and services define (never
spelled again elsewhere); they keep no durable state and never use the database, so they get
neither its address nor any of its credentials: their secrets are the Redis password and,
while they verify tokens with a shared key, that key.
Nginx proxies to the gateway nodes (Docker) or re-resolves the gateways' headless Service
(Kubernetes, ``server … resolve``).
"""

from __future__ import annotations

from scaling.model import PhaseSpec
from scaling.render.endpoints import Endpoint
from scaling.render.env import SECRET_VARIABLES
from scaling.render.gateway_env import gateway_env, redis_client_env
from scaling.render.nginx import NginxLayout, render_nginx_conf
from scaling.rules import KUBERNETES_NGINX_HTTP_PORT, NGINX_LOOPBACK_PORT

from . import redis
from .model import ConfigFile, Edge, HealthCheck, Node, Scaling, Service, Stop
from .network import CLUSTER_DOMAIN, headless_service, node_host, node_name, on_kubernetes
from .network import service_host as host_of

GATEWAY_GROUP = "gateway"
GATEWAY_HEADLESS = headless_service(GATEWAY_GROUP)
NGINX = "nginx"

# Kubernetes: nginx runs as non-root, serves HTTP on an unprivileged port, keeps its pid and
# temp files in an emptyDir and re-resolves the gateways through kube-dns.
NGINX_K8S_CONF_DIR = "/etc/nginx/sikka"
NGINX_K8S_RUNTIME_DIR = "/tmp/nginx"
NGINX_K8S_RESOLVER = f"kube-dns.kube-system.svc.{CLUSTER_DOMAIN}"
# stub_status answers pod-network sources only; the NetworkPolicy narrows it to the namespace.
NGINX_K8S_STATUS_ALLOW = ("127.0.0.1", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


def redis_env(spec: PhaseSpec) -> dict[str, str]:
    if spec.redis.mode == "standalone":
        nodes = [Endpoint(host_of(spec, redis.STANDALONE_SERVICE), redis.REDIS_PORT)]
    else:
        nodes = [redis.data_endpoint(spec, i) for i in range(redis.data_node_count(spec))]
    return redis_client_env(spec, nodes=nodes, sentinels=redis.sentinel_endpoints(spec))


def gateway_nodes(spec: PhaseSpec) -> tuple[list[Node], list[Service], list[Edge], Scaling]:
    gw = spec.gateway
    # Liveness (/livez): /healthz is readiness, 503 while full, draining or without Redis.
    health = (
        'python -c "import urllib.request; '
        f"urllib.request.urlopen('http://127.0.0.1:{gw.port}/livez', timeout=3)\""
    )
    env = redis_env(spec)
    # Gateways hold the Redis password and, verifying tokens with a shared key, that key:
    # nothing of the database's.
    secret_env = {SECRET_VARIABLES["redis-password"]: "redis-password"}
    if gw.auth.shared_secret:
        secret_env[SECRET_VARIABLES["gateway-jwt-secret"]] = "gateway-jwt-secret"
    nodes = []
    edges = []
    for index in range(gw.replicas):
        name = node_name(GATEWAY_GROUP, index)
        nodes.append(
            Node(
                name=name,
                tier="gateway",
                role="gateway",
                group=GATEWAY_GROUP,
                ordinal=index,
                image=gw.image,
                # "metrics": /metrics, for scrapers only (never published, see network.py).
                ports={"http": gw.port, "metrics": gw.metrics_port},
                env={**gateway_env(spec, gateway_id=name, port=gw.port), **env},
                secret_env=secret_env,
                health=HealthCheck(health),
                # SIGTERM drains: /healthz turns 503, clients are closed with 1001.
                stop=Stop("SIGTERM", gw.drain_seconds + 10),
            )
        )
        edges.append(Edge(name, redis.GROUP, "connects-to"))
    members = tuple(n.name for n in nodes)
    services = [Service(GATEWAY_GROUP, "gateway", gw.port, members, "gateway")]
    if on_kubernetes(spec):
        services.append(Service(GATEWAY_HEADLESS, "gateway", gw.port, members, "gateway"))
    maximum = gw.max_replicas if spec.autoscaling.enabled else gw.replicas
    return nodes, services, edges, Scaling(GATEWAY_GROUP, gw.replicas, maximum)


def nginx_layout(spec: PhaseSpec, gateways: list[Node]) -> NginxLayout:
    if on_kubernetes(spec):
        upstream = host_of(spec, GATEWAY_HEADLESS)
        return NginxLayout(
            listen=str(KUBERNETES_NGINX_HTTP_PORT),
            status_listen=str(spec.nginx.status_port),
            upstream_servers=(f"{upstream}:{spec.gateway.port} resolve",),
            loopback_listen=f"127.0.0.1:{NGINX_LOOPBACK_PORT}",
            status_allow=NGINX_K8S_STATUS_ALLOW,
            resolver=NGINX_K8S_RESOLVER,
            runtime_dir=NGINX_K8S_RUNTIME_DIR,
        )
    return NginxLayout(
        listen=str(spec.nginx.port),
        status_listen=str(spec.nginx.status_port),
        upstream_servers=tuple(
            f"{node_host(spec, GATEWAY_GROUP, g.ordinal)}:{spec.gateway.port} "
            "max_fails=2 fail_timeout=5s"
            for g in gateways
        ),
        loopback_listen=f"127.0.0.1:{NGINX_LOOPBACK_PORT}",
        status_allow=("127.0.0.1", str(spec.docker_subnet)),
    )


def nginx_nodes(
    spec: PhaseSpec, gateways: list[Node]
) -> tuple[list[Node], list[Service], list[Edge], Scaling]:
    nginx = spec.nginx
    k8s = on_kubernetes(spec)
    conf_path = f"{NGINX_K8S_CONF_DIR}/nginx.conf" if k8s else "/etc/nginx/nginx.conf"
    conf = ConfigFile(
        conf_path, render_nginx_conf(spec, nginx_layout(spec, gateways)), "nginx.conf"
    )
    http_port = KUBERNETES_NGINX_HTTP_PORT if k8s else nginx.port
    count = nginx.replicas if k8s else 1
    nodes = [
        Node(
            name=NGINX if count == 1 else node_name(NGINX, i),
            tier="nginx",
            role="proxy",
            group=NGINX,
            ordinal=i,
            image=nginx.image,
            ports={"http": http_port, "status": nginx.status_port},
            command=("nginx", "-c", conf_path, "-g", "daemon off;"),
            files=(conf,),
            health=HealthCheck(f"curl -fsS http://127.0.0.1:{http_port}/healthz"),
            # SIGQUIT: graceful shutdown, open WebSockets get the gateways' drain window.
            stop=Stop("SIGQUIT", spec.gateway.drain_seconds + 10),
            published={} if k8s else {spec.docker.http_port: nginx.port},
        )
        for i in range(count)
    ]
    services = [Service(NGINX, "nginx", nginx.port, tuple(n.name for n in nodes), "http")]
    edges = [Edge(n.name, GATEWAY_GROUP, "proxies-to") for n in nodes]
    maximum = nginx.max_replicas if spec.autoscaling.enabled else count
    return nodes, services, edges, Scaling(NGINX, count, maximum)
