"""Nginx tier: the rendered nginx.conf in front of the local gateways."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from scaling.local import health
from scaling.local.context import Context
from scaling.local.gateway import GatewayInstance
from scaling.local.state import ProcessEntry
from scaling.render.nginx import NginxLayout, render_nginx_conf

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


def start_nginx(ctx: Context, gateways: list[GatewayInstance]) -> NginxEndpoints:
    spec = ctx.spec
    if spec.nginx.replicas > 1:
        ctx.notes.append(
            f"nginx: the spec asks for {spec.nginx.replicas} replicas; locally one Nginx "
            "serves (a second would only share the same loopback port)."
        )
    ctx.begin("nginx", ctx.log_path("nginx"))
    port, status_port = ctx.ports.take(), ctx.ports.take()
    folder = ctx.state_dir / "nginx"
    run = folder / "run"
    run.mkdir(parents=True, exist_ok=True)
    layout = NginxLayout(
        listen=f"127.0.0.1:{port}",
        status_listen=f"127.0.0.1:{status_port}",
        upstream_servers=tuple(
            f"{g.endpoint.host}:{g.endpoint.port} max_fails=2 fail_timeout=5s" for g in gateways
        ),
        status_allow=("127.0.0.1",),
        runtime_dir=str(run),
    )
    conf = folder / "nginx.conf"
    conf.write_text(render_nginx_conf(spec, layout))
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    entry = ctx.start(
        ProcessEntry(
            name="nginx",
            role="proxy",
            tier="nginx",
            argv=[binary, "-p", str(folder), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"],
            log=ctx.log_path("nginx"),
            port=port,
            cwd=str(folder),
        )
    )
    result = NginxEndpoints(port, status_port)
    for url in (f"http://127.0.0.1:{port}/healthz", result.summary()["status_url"]):
        health.wait_until(
            f"nginx answers {url}",
            lambda u=url: health.http_ok(u),  # type: ignore[misc]
            START_TIMEOUT,
            process=entry,
        )
    return result
