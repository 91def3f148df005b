"""Nginx tier: the topology's proxy node, the rendered nginx.conf in front of the gateways
its "proxies-to" edge reaches (those started here)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from scaling.local import health
from scaling.local.context import Context
from scaling.local.state import ProcessEntry
from scaling.local.topology import local_spec, nodes
from scaling.render.endpoints import Endpoint
from scaling.render.nginx import NginxLayout, render_nginx_conf
from scaling.topology import Node

START_TIMEOUT = 15.0


@dataclass(frozen=True)
class NginxEndpoints:
    port: int
    status_port: int

    def summary(self) -> dict[str, str]:
        return {
            "url": f"http://127.0.0.1:{self.port}",
            "ws_url": f"ws://127.0.0.1:{self.port}/",
            "status_url": f"http://127.0.0.1:{self.status_port}/nginx_status",
        }


def upstreams(ctx: Context, proxy: Node) -> list[Endpoint]:
    return [
        endpoint
        for edge in ctx.topology.edges_from(proxy.name, "proxies-to")
        for endpoint in ctx.endpoints_of(edge.target)
    ]


def stream_modules(binary: str) -> tuple[str, ...]:
    """What the accept gate needs loaded: nothing where the stream module is built in (the
    nginx image), Debian's dynamic module (package libnginx-mod-stream) where it is not."""
    version = subprocess.run(
        [binary, "-V"], capture_output=True, text=True, timeout=10, check=False
    ).stderr.split()
    if "--with-stream" in version:
        return ()
    if "--with-stream=dynamic" in version:
        folder = next(
            (a.split("=", 1)[1] for a in version if a.startswith("--modules-path=")),
            "/usr/lib/nginx/modules",
        )
        module = Path(folder) / "ngx_stream_module.so"
        if module.is_file():
            return (str(module),)
        raise RuntimeError(
            f"{binary} loads its stream module from {module}, which is missing: install "
            "libnginx-mod-stream (Nginx's accept gate needs it)"
        )
    raise RuntimeError(f"{binary} was built without the stream module (Nginx's accept gate)")


def _proxy(ctx: Context) -> Node:
    """The topology's proxy: one Nginx, as on a Docker host, running the workers of all
    nginx.replicas (scaling/render/nginx.py): one instance with the capacity of all."""
    proxies = nodes(ctx.topology, "nginx", "proxy")
    nginx = ctx.spec.nginx
    if nginx.replicas > len(proxies):
        ctx.notes.append(
            f"nginx: the spec asks for {nginx.replicas} replicas of {nginx.worker_processes} "
            f"workers; locally {proxies[0].name} runs all "
            f"{nginx.replicas * nginx.worker_processes} workers, as on a Docker host."
        )
    return proxies[0]


def start_nginx(ctx: Context) -> NginxEndpoints:
    proxy = _proxy(ctx)
    ctx.begin(proxy.name, ctx.log_path(proxy.name))
    port, status_port, loopback_port = ctx.ports.take(), ctx.ports.take(), ctx.ports.take()
    folder = ctx.state_dir / proxy.name
    run = folder / "run"
    run.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    layout = NginxLayout(
        listen=f"127.0.0.1:{port}",
        status_listen=f"127.0.0.1:{status_port}",
        upstream_servers=tuple(
            f"{u.host}:{u.port} max_fails=2 fail_timeout=5s" for u in upstreams(ctx, proxy)
        ),
        loopback_listen=f"127.0.0.1:{loopback_port}",
        status_allow=("127.0.0.1",),
        runtime_dir=str(run),
        modules=stream_modules(binary),
    )
    conf = folder / "nginx.conf"
    # The container (Docker) rendering: one instance with the workers of all replicas.
    conf.write_text(render_nginx_conf(local_spec(ctx.spec), layout))
    entry = ctx.start(
        ProcessEntry(
            name=proxy.name,
            role=proxy.role,
            tier=proxy.tier,
            argv=[binary, "-p", str(folder), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"],
            log=ctx.log_path(proxy.name),
            port=port,
            cwd=str(folder),
        )
    )
    ctx.endpoints[proxy.name] = Endpoint("127.0.0.1", port)
    result = NginxEndpoints(port, status_port)
    for url in (f"http://127.0.0.1:{port}/healthz", result.summary()["status_url"]):
        health.wait_until(
            f"{proxy.name} answers {url}",
            lambda u=url: health.http_ok(u),  # type: ignore[misc]
            START_TIMEOUT,
            process=entry,
        )
    return result
