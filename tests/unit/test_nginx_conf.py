"""nginx.conf's limits: the accept gate, the client timeouts and the upgrade rate, with the
values of each phase; the settings' rules; and `nginx -t` on every phase's Docker and
Kubernetes conf with the nginx installed here."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from scaling.issues import ConfigError
from scaling.local.nginx import stream_modules
from scaling.local.ports import PortAllocator
from scaling.model import NGINX_RESERVED_CONNECTIONS, PhaseSpec, needed_worker_connections
from scaling.rules import nginx_instances
from scaling.stackconfig import parse
from scaling.topology import build_topology

NGINX = shutil.which("nginx")


def spec_of(phase: str, **overrides: Any) -> PhaseSpec:
    return parse({"sikka:phase": phase, **overrides}, stack=phase)


def conf_of(spec: PhaseSpec) -> str:
    (node, *_) = build_topology(spec).group("nginx")
    (conf,) = node.files
    return conf.content


def block(conf: str, header: str) -> str:
    """The text of the first top-level-or-nested block opened by ``header {``."""
    start = conf.index(f"{header} {{")
    depth = 0
    for index in range(start, len(conf)):
        if conf[index] == "{":
            depth += 1
        elif conf[index] == "}":
            depth -= 1
            if depth == 0:
                return conf[start : index + 1]
    raise AssertionError(f"unclosed block {header!r}")


def directives(text: str, name: str) -> list[str]:
    return re.findall(rf"(?m)^\s*{name} ([^;]*);", text)


ON_THEIR_PLATFORM = {
    # phase: (public listen, per-client connections, upgrades per second, zone MB)
    "launch": ("80", 64, 8, 1),
    "growth": ("80", 256, 32, 1),
    "scale": ("8080", 1024, 128, 3),
}


@pytest.mark.parametrize("phase", list(ON_THEIR_PLATFORM))
def test_limits_follow_the_phase(phase: str) -> None:
    spec = spec_of(phase)
    listen, per_client, rate, zone = ON_THEIR_PLATFORM[phase]
    assert spec.nginx.per_client_connections == per_client
    conf = conf_of(spec)
    slots = 2 * spec.nginx.worker_connections
    assert directives(conf, "worker_connections") == [str(slots)]
    # One descriptor per slot, and an eighth more (at least 256) for logs and bodies.
    assert directives(conf, "worker_rlimit_nofile") == [str(slots + max(256, slots // 8))]

    # The public port belongs to the accept gate, counted per address when accepted.
    gate = block(conf, "stream")
    assert directives(gate, "listen") == [f"{listen} reuseport"]
    assert directives(gate, "limit_conn_zone") == [f"$binary_remote_addr zone=per_client:{zone}m"]
    assert directives(gate, "limit_conn") == [f"per_client {per_client}"]
    assert directives(gate, "proxy_pass") == ["127.0.0.1:8089"]
    assert directives(gate, "proxy_protocol") == ["on"]
    # A gated WebSocket is not cut before the HTTP side's own idle limit.
    (idle,) = directives(gate, "proxy_timeout")
    assert int(idle.rstrip("s")) > spec.nginx.websocket_read_timeout_seconds

    http = block(conf, "http")
    for name in (
        "client_header_timeout",
        "client_body_timeout",
        "send_timeout",
        "keepalive_timeout",
    ):
        assert directives(http, name) == ["10s"], name
    assert directives(http, "reset_timedout_connection") == ["on"]
    assert directives(http, "limit_req_zone") == [
        f"$upgrading_client zone=upgrades:{zone}m rate={rate}r/s"
    ]
    assert directives(http, "limit_req_status") == ["429"]
    # The HTTP server is reached only through the gate: loopback, PROXY protocol first,
    # and the client's address restored from it.
    public = block(http, "server")
    assert directives(public, "listen") == ["127.0.0.1:8089 proxy_protocol reuseport"]
    assert directives(public, "set_real_ip_from") == ["127.0.0.1"]
    assert directives(public, "real_ip_header") == ["proxy_protocol"]
    assert directives(block(public, "location /"), "limit_req") == [
        f"zone=upgrades burst={per_client} nodelay"
    ]
    # Only upgrade requests carry a key; the rest are not rate-limited.
    upgrading = block(http, "map $http_upgrade $upgrading_client")
    assert 'default        "";' in upgrading
    assert '"~*^websocket$" $binary_remote_addr;' in upgrading
    # The status listener stays outside the gate and answers /healthz itself.
    status = block(http[http.index("Internal-only") :], "server")
    assert directives(status, "listen") == [str(spec.nginx.status_port)]
    assert "location = /healthz" in status


def test_overrides_reach_the_conf() -> None:
    conf = conf_of(
        spec_of(
            "growth", **{"sikka:nginx": {"perClientConnections": 100, "clientTimeoutSeconds": 4}}
        )
    )
    assert directives(block(conf, "stream"), "limit_conn") == ["per_client 100"]
    http = block(conf, "http")
    assert directives(http, "client_header_timeout") == ["4s"]
    assert directives(http, "send_timeout") == ["4s"]
    assert "rate=12r/s" in directives(http, "limit_req_zone")[0]
    assert directives(http, "limit_req") == ["zone=upgrades burst=100 nodelay"]


def problems(phase: str, nginx: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        spec_of(phase, **{"sikka:nginx": nginx})
    return [f"{i.key}: {i.message}" for i in caught.value.issues]


def test_one_address_may_hold_at_most_a_quarter_of_an_instance() -> None:
    # launch: 1024 x 2 workers.
    assert spec_of("launch", **{"sikka:nginx": {"perClientConnections": 512}})
    assert problems("launch", {"perClientConnections": 513}) == [
        "sikka:nginx.perClientConnections: 513 connections per client address would let one "
        "address hold 1026 of one Nginx instance's 2048 (workerConnections x workerProcesses); "
        "at most 512"
    ]
    # Per instance: more workers, more room (scale: 4096 x 4 workers).
    assert spec_of("scale", **{"sikka:nginx": {"perClientConnections": 4096}})
    assert problems("scale", {"perClientConnections": 4097})[0].endswith("at most 4096")


def test_bounds_and_the_loopback_port() -> None:
    assert problems("launch", {"perClientConnections": 1}) == [
        "sikka:nginx.perClientConnections: input should be greater than or equal to 2 (got 1)"
    ]
    assert problems("launch", {"clientTimeoutSeconds": 0}) == [
        "sikka:nginx.clientTimeoutSeconds: input should be greater than or equal to 1 (got 0)"
    ]
    assert problems("launch", {"statusPort": 8089}) == [
        "sikka:nginx.statusPort: 8089 is where Nginx's accept gate hands connections to its "
        "HTTP server (loopback only); choose another port"
    ]


# ------------------------------------------------------------------------------ nginx -t


def _version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False).stderr
    found = re.search(r"nginx/([\d.]+)", out)
    assert found, out
    return tuple(int(part) for part in found[1].split("."))


def localized(conf: str, folder: Path, binary: str) -> str:
    """The conf as this machine can load it, changed only where it names the container's
    world: its listeners move to free loopback ports (the gate's proxy_pass follows its
    loopback listener), the gateways' hosts (names on the container network or in the
    cluster) become 127.0.0.1, pid and temp files move into ``folder``, Debian's dynamic
    stream module is loaded, and where this nginx predates 1.27.3 (Debian's 1.22) the
    upstream's ``resolve`` parameter is dropped and the resolver is 127.0.0.1."""
    ports = PortAllocator()
    moved: dict[str, str] = {}

    def port_for(address: str) -> str:
        return moved.setdefault(address, f"127.0.0.1:{ports.take()}")

    conf = re.sub(r"(?m)^(\s*listen )([^\s;]+)", lambda m: m[1] + port_for(m[2]), conf)
    conf = re.sub(r"(?m)^(\s*proxy_pass )([\d.]+:\d+);", lambda m: f"{m[1]}{port_for(m[2])};", conf)
    conf = re.sub(r"(?m)^(\s*server )[\w.-]+:\d+", r"\g<1>127.0.0.1:9", conf)
    conf = re.sub(
        r"(?m)^(\s*(?:pid|\w+_temp_path) )\S+/([^/;\s]+);",
        lambda m: f"{m[1]}{folder}/{m[2]};",
        conf,
    )
    if _version(binary) < (1, 27, 3):
        conf = conf.replace(" resolve ", " ")
        conf = re.sub(r"(?m)^(\s*resolver )\S+", r"\g<1>127.0.0.1", conf)
    modules = "".join(f"load_module {module};\n" for module in stream_modules(binary))
    return modules + conf


@pytest.mark.skipif(NGINX is None, reason="needs nginx")
@pytest.mark.parametrize("platform", ["docker", "kubernetes"])
@pytest.mark.parametrize("phase", list(ON_THEIR_PLATFORM))
def test_nginx_accepts_the_rendered_conf(phase: str, platform: str, tmp_path: Path) -> None:
    assert NGINX is not None
    overrides: dict[str, Any] = {"sikka:platform": platform}
    if platform == "docker" and phase == "scale":
        overrides |= {
            "sikka:autoscaling": {"enabled": False},
            "sikka:postgres": {"mode": "replicated"},
        }
    conf = conf_of(spec_of(phase, **overrides))
    path = tmp_path / "nginx.conf"
    path.write_text(localized(conf, tmp_path, NGINX))
    result = subprocess.run(
        [NGINX, "-t", "-q", "-p", str(tmp_path), "-e", "stderr", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# ----------------------------------------------------------------- the local stream module


def _fake_nginx(folder: Path, configure: str) -> str:
    script = folder / "nginx"
    script.write_text(
        f"#!/bin/sh\necho 'nginx version: nginx/1.22.1' >&2\necho '{configure}' >&2\n"
    )
    script.chmod(0o755)
    return str(script)


def test_stream_module_is_found_or_named(tmp_path: Path) -> None:
    built_in = _fake_nginx(tmp_path, "configure arguments: --with-stream --with-http_realip_module")
    assert stream_modules(built_in) == ()
    modules = tmp_path / "modules"
    modules.mkdir()
    dynamic = _fake_nginx(
        tmp_path, f"configure arguments: --modules-path={modules} --with-stream=dynamic"
    )
    with pytest.raises(RuntimeError, match="install libnginx-mod-stream"):
        stream_modules(dynamic)
    (modules / "ngx_stream_module.so").write_text("")
    assert stream_modules(dynamic) == (str(modules / "ngx_stream_module.so"),)
    without = _fake_nginx(tmp_path, "configure arguments: --with-http_realip_module")
    with pytest.raises(RuntimeError, match="built without the stream module"):
        stream_modules(without)


@pytest.mark.parametrize("phase", list(ON_THEIR_PLATFORM))
def test_kubernetes_memory_holds_a_full_instance_of_websockets(phase: str) -> None:
    """Measured: ~29 KiB of worker memory per WebSocket through the accept gate."""
    from scaling.kubernetes.nginx import nginx_resources

    spec = spec_of(phase, **{"sikka:platform": "kubernetes"})
    requested = int(nginx_resources(spec)["requests"]["memory"].removesuffix("Mi"))
    websockets = spec.nginx.instance_capacity // 2
    assert requested >= websockets * 29 / 1024


@pytest.mark.parametrize("phase", list(ON_THEIR_PLATFORM))
def test_each_phase_holds_its_websockets_with_headroom(phase: str) -> None:
    """Every worker has room for its share of the phase's WebSockets (4 slots each: client
    side, the gate's loopback pair, upstream side) + 25 %, with the busiest worker's excess
    and reserved slots on top: at the promise, Nginx is at most 80 % full."""
    spec = spec_of(phase)
    nginx = spec.nginx
    instances = nginx_instances(nginx, spec.platform)
    workers = instances * nginx.worker_processes
    websockets_per_worker = spec.gateway.max_connections / workers
    slots = 2 * nginx.worker_connections
    assert 4 * websockets_per_worker * 1.25 <= slots - 2 * NGINX_RESERVED_CONNECTIONS
    assert nginx.worker_rlimit_nofile > slots


@pytest.mark.parametrize(
    ("websockets", "workers", "needed"),
    # 500 on one worker: 625 with the margin, no spread, 2 each, 32 reserved.
    [(500, 1, 1282), (500, 2, 726), (2000, 3, 1826), (10_000, 8, 3356)],
)
def test_needed_worker_connections(websockets: int, workers: int, needed: int) -> None:
    assert needed_worker_connections(websockets, workers) == needed


def test_too_few_workers_are_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError) as error:
        spec_of("launch", **{"sikka:nginx": {"workerProcesses": 1}})
    text = str(error.value)
    assert "sikka:nginx.workerConnections: 1024 per worker x 1 workers x 1 replicas" in text
    assert "each worker needs 1282" in text


@pytest.mark.parametrize(
    ("phase", "platform", "max_conns", "servers"),
    [
        ("launch", "docker", 500, 1),
        ("growth", "docker", 1000, 2),
        # Two Nginx replicas share each gateway's 2,500.
        ("scale", "kubernetes", 1250, 1),
        ("growth", "kubernetes", 1000, 1),
    ],
)
def test_upstream_servers_are_capped_and_fall_through(
    phase: str, platform: str, max_conns: int, servers: int
) -> None:
    """A gateway at its share of connectionsPerReplica is skipped by the sticky hash, which
    tries the next: nobody is refused while another gateway has room."""
    conf = conf_of(spec_of(phase, **{"sikka:platform": platform}))
    upstream = block(conf, "upstream gateways")
    found = directives(upstream, "server")
    assert len(found) == servers
    assert all(line.endswith(f" max_conns={max_conns}") for line in found), found
    assert directives(upstream, "zone") == ["gateways 256k"]  # counts shared by workers
    if servers > 1 or platform == "kubernetes":
        assert directives(upstream, "hash") == ["$sticky_key consistent"]
    location = block(block(conf, "http"), "location /")
    assert directives(location, "proxy_next_upstream") == ["error timeout http_503"]
