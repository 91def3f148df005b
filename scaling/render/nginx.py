"""nginx.conf: WebSocket-aware reverse proxy over the gateway replicas.

Public connections first meet an *accept gate* (the stream module): nginx's HTTP
``limit_conn`` counts a connection only once its request header has been read, so
half-open requests (slowloris) escape it and can hold every worker connection. The stream
module counts a connection the moment it is accepted, so there one client address holds at
most ``nginx.perClientConnections`` connections (WebSockets, requests and half-open
requests alike) and the excess are closed at once. The gate hands every connection to the
HTTP server on a loopback listener, the client's address in a PROXY protocol header (the
realip module restores it). Half-open requests are then closed after
``nginx.clientTimeoutSeconds``; WebSocket upgrades are rate-limited per address (429).

Sizes, from the phase (one Nginx instance; each instance keeps its own counters):
  per-client connections  nginx.perClientConnections (default: at most workerConnections x
                          workerProcesses / 16; rules.py refuses more than a quarter)
  upgrades per address    a burst of perClientConnections (a client reconnecting all it
                          may hold at once), refilled at perClientConnections / 8 per second
  zones                   one state per address, at most one address per connection:
                          ceil(workerConnections x workerProcesses / 8000) MB (1 MB holds
                          8,000 limit_req or 16,000 limit_conn states)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scaling.model import NginxSpec, PhaseSpec
from scaling.rules import nginx_instance_workers, nginx_instances


@dataclass(frozen=True)
class NginxLayout:
    """Deployment-specific facts the config depends on."""

    listen: str  # "80", "8080" or "127.0.0.1:18080"
    status_listen: str  # internal-only listener for stub_status
    # Upstream server lines without "server" / ";", e.g. "gateway-1:8080 max_fails=2" or
    # "gateway.sikka.svc.cluster.local:8080 resolve" (re-resolves a headless Service).
    upstream_servers: tuple[str, ...]
    # Where the HTTP server listens behind the accept gate: loopback only, e.g.
    # "127.0.0.1:8089" (a TCP port, not a unix socket: a socket file left by a crash would
    # stop the next start).
    loopback_listen: str
    status_allow: tuple[str, ...] = ("127.0.0.1",)
    # load_module lines, e.g. Debian's dynamic stream module; the nginx image builds it in.
    modules: tuple[str, ...] = ()
    resolver: str | None = None  # required by "resolve": e.g. "kube-dns.kube-system.svc"
    runtime_dir: str = "/tmp"  # pid and temp files: writable even on a read-only root
    error_log: str = "stderr"
    access_log: str = "off"


def upgrade_rate_per_second(nginx: NginxSpec) -> int:
    return max(1, nginx.per_client_connections // 8)


def zone_megabytes(nginx: NginxSpec, workers: int) -> int:
    """Enough for one state per connection of an instance of ``workers`` workers."""
    return max(1, math.ceil(nginx.worker_connections * workers / 8000))


def upstream_max_conns(spec: PhaseSpec) -> int:
    """Connections one Nginx instance opens to one gateway at most: the gateway's
    ``connectionsPerReplica`` shared by the stack's Nginx instances. A gateway at this count
    is skipped by the consistent hash, which tries the next one on its ring: a client keeps
    its gateway across reconnects while it has room, and is never refused while another
    has some."""
    instances = nginx_instances(spec.nginx, spec.platform)
    return max(1, spec.gateway.connections_per_replica // instances)


UPSTREAM_NAME = "gateways"


def render_upstream_block(spec: PhaseSpec, upstream_servers: tuple[str, ...]) -> str:
    """The ``upstream gateways {...}`` block of nginx.conf over ``upstream_servers`` (lines
    as NginxLayout.upstream_servers), indented as render_nginx_conf places it."""
    # Stickiness: the same client_id lands on the same gateway across reconnects; clients
    # without one are spread by request id instead of all hashing to the empty key.
    balancing = (
        "        hash $sticky_key consistent;\n"
        if len(upstream_servers) > 1 or any(" resolve" in s for s in upstream_servers)
        else ""
    )
    max_conns = upstream_max_conns(spec)
    servers = "".join(
        f"        server {server} max_conns={max_conns};\n" for server in upstream_servers
    )
    return f"""\
    upstream {UPSTREAM_NAME} {{
        zone {UPSTREAM_NAME} 256k;
{balancing}{servers}    }}
"""


_UPSTREAM_OPEN = f"    upstream {UPSTREAM_NAME} {{\n"
_UPSTREAM_CLOSE = "\n    }\n"


def _upstream_span(conf: str) -> tuple[int, int]:
    start = conf.find(_UPSTREAM_OPEN)
    if start < 0 or conf.find(_UPSTREAM_OPEN, start + 1) >= 0:
        raise ValueError(
            f"expected exactly one 'upstream {UPSTREAM_NAME}' block as render_nginx_conf writes it"
        )
    end = conf.find(_UPSTREAM_CLOSE, start)
    if end < 0:
        raise ValueError(f"the 'upstream {UPSTREAM_NAME}' block is not closed")
    return start, end + len(_UPSTREAM_CLOSE)


def upstream_block(conf: str) -> str:
    """The ``upstream gateways`` block of a rendered nginx.conf (ValueError when there is
    not exactly one)."""
    start, end = _upstream_span(conf)
    return conf[start:end]


def replace_upstream_block(conf: str, block: str) -> str:
    """``conf`` (a rendered nginx.conf) with its ``upstream gateways`` block replaced by
    ``block`` (one rendered by render_upstream_block, e.g. taken from another phase's
    nginx.conf): the front door keeps its listeners, limits and URL and proxies to other
    gateways. Everything else is left byte for byte."""
    upstream_block(block)  # the replacement is one whole block itself
    start, end = _upstream_span(conf)
    return conf[:start] + block + conf[end:]


def upstream_servers(block: str) -> tuple[str, ...]:
    """The ``host:port`` of every server line of an upstream block."""
    return tuple(
        line.split()[1]
        for line in block.splitlines()
        if line.strip().startswith("server ") and len(line.split()) > 1
    )


def render_nginx_conf(spec: PhaseSpec, layout: NginxLayout) -> str:
    nginx = spec.nginx
    run = layout.runtime_dir
    # On a Docker host one container runs the workers of all nginx.replicas.
    workers = nginx_instance_workers(nginx, spec.platform)
    max_conns = upstream_max_conns(spec)
    upstream = render_upstream_block(spec, layout.upstream_servers)
    resolver = f"    resolver {layout.resolver} valid=10s ipv6=off;\n" if layout.resolver else ""
    allow = "".join(f"            allow {source};\n" for source in layout.status_allow)
    timeout = nginx.websocket_read_timeout_seconds
    client = nginx.client_timeout_seconds
    per_client = nginx.per_client_connections
    zone = zone_megabytes(nginx, workers)
    rate = upgrade_rate_per_second(nginx)
    modules = "".join(f"load_module {module};\n" for module in layout.modules)
    return f"""\
# Generated by sikka-scaling for the {spec.phase.value} phase; do not edit by hand.
{modules}worker_processes {workers};
# worker_connections counts every connection a worker holds: a proxied WebSocket is its
# client side, the accept gate's loopback pair and its upstream side, so twice
# nginx.workerConnections ({nginx.worker_connections} client + upstream connections, sized by
# the phase's WebSockets with headroom: scaling/rules.py nginx_capacity). Descriptors: one
# per slot and an eighth more for logs and buffered bodies.
worker_rlimit_nofile {nginx.worker_rlimit_nofile};
pid {run}/nginx.pid;
error_log {layout.error_log} warn;

events {{
    worker_connections {nginx.worker_slots};
    multi_accept on;
}}

# Accept gate: counted when accepted (HTTP limit_conn would count a connection only once
# its request header is read, which a half-open request never is). One client address holds
# at most {per_client} connections; the excess are closed at once, so no client can take the
# worker connections the phase's WebSockets and health checks need.
stream {{
    limit_conn_zone $binary_remote_addr zone=per_client:{zone}m;
    limit_conn_log_level warn;

    server {{
        listen {layout.listen} reuseport;
        limit_conn per_client {per_client};
        proxy_pass {layout.loopback_listen};
        proxy_protocol on;
        proxy_connect_timeout 1s;
        # Idle limit of a gated connection: longer than the HTTP side's, which decide.
        proxy_timeout {timeout + client}s;
        # Frames are small JSON: 4k per direction instead of 16k per WebSocket.
        proxy_buffer_size 4k;
    }}
}}

http {{
    access_log {layout.access_log};
    client_body_temp_path {run}/client_body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    server_tokens off;
{resolver}
    # A client that is not a WebSocket (yet) gets {client}s for the request line and headers
    # (in total, however slowly they trickle), for a body, for a write it does not read,
    # and between two keep-alive requests; then the connection is closed.
    client_header_timeout {client}s;
    client_body_timeout {client}s;
    send_timeout {client}s;
    keepalive_timeout {client}s;
    lingering_time {client}s;
    reset_timedout_connection on;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}

    map $arg_client_id $sticky_key {{
        ''      $request_id;
        default $arg_client_id;
    }}

    # WebSocket upgrades per client address: a burst of {per_client} (a client reconnecting
    # everything it may hold at once), then {rate} per second; beyond that 429.
    # Other requests have an empty key, which is not limited.
    map $http_upgrade $upgrading_client {{
        default        "";
        "~*^websocket$" $binary_remote_addr;
    }}
    limit_req_zone $upgrading_client zone=upgrades:{zone}m rate={rate}r/s;
    limit_req_status 429;
    limit_req_log_level warn;

    # max_conns: at most {max_conns} connections from this instance to one gateway (its
    # gateway.connectionsPerReplica over the Nginx instances); the zone shares the count
    # between workers. The hash skips a gateway at its max_conns.
{upstream}
    # Public traffic, through the accept gate only.
    server {{
        # reuseport here too: the kernel spreads the HTTP side over the workers by the same
        # hash as the public side (one shared socket leaves it to whichever worker wakes).
        listen {layout.loopback_listen} proxy_protocol reuseport;
        set_real_ip_from 127.0.0.1;
        real_ip_header proxy_protocol;

        location = /healthz {{
            access_log off;
            default_type text/plain;
            return 200 "ok\\n";
        }}

        location / {{
            limit_req zone=upgrades burst={per_client} nodelay;
            proxy_pass http://gateways;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            # Trip screens stay open for a whole ride: do not cut idle WebSockets early.
            proxy_read_timeout {timeout}s;
            proxy_send_timeout {timeout}s;
            proxy_connect_timeout 5s;
            proxy_buffering off;
            # A gateway that cannot be reached, or is draining (503 before the upgrade),
            # passes the client to the next gateway on the ring; a full one is skipped
            # before it is asked (max_conns).
            proxy_next_upstream error timeout http_503;
        }}
    }}

    # Internal-only listener: never published, answered only for the private network.
    server {{
        listen {layout.status_listen};

        location = /nginx_status {{
            stub_status;
{allow}            deny all;
        }}

        location = /healthz {{
            access_log off;
            return 200 "ok\\n";
        }}
    }}
}}
"""
