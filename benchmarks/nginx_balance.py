"""How Nginx spreads the growth phase's 2,000 WebSockets over its 2 gateways: held and
refused per gateway with the rendered nginx.conf (each upstream server capped at
``max_conns``, the sticky hash falling through to the next gateway) and without the cap
(the hash alone), side by side in alternating rounds; and how evenly ``reuseport`` spreads
the connections over Nginx's workers.

    python -m benchmarks.nginx_balance [--phase growth] [--rounds 3] [--sources 40]

The real nginx runs the phase's rendered conf on 127.0.0.1 in front of two stand-in
gateways that answer like the gateway does (upgrade, then close 1013 "connection limit
reached" beyond ``connectionsPerReplica``; otherwise hold the connection). Each client has
its own ``client_id`` (the sticky key) and one of ``--sources`` loopback source addresses
(127.0.0.2, ...), so neither the per-address connection limit nor the upgrade rate limit is
what is measured. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import resource
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from scaling.local.nginx import stream_modules
from scaling.local.ports import PortAllocator
from scaling.model import PhaseSpec
from scaling.render.nginx import NginxLayout, render_nginx_conf
from scaling.stackconfig import parse

TRY_AGAIN_LATER = 1013


@dataclass
class StandIn:
    """A gateway stand-in: holds up to ``limit`` WebSockets, refuses more with 1013."""

    name: str
    limit: int
    held: int = 0
    refused: int = 0
    server: Server | None = None
    port: int = 0

    async def handle(self, ws: ServerConnection) -> None:
        if self.held >= self.limit:
            self.refused += 1
            await ws.close(TRY_AGAIN_LATER, "connection limit reached, try again later")
            return
        self.held += 1
        try:
            await ws.send(self.name)
            await ws.wait_closed()
        finally:
            self.held -= 1

    async def start(self) -> None:
        self.server = await serve(self.handle, "127.0.0.1", 0, ping_interval=None)
        self.port = next(iter(self.server.sockets)).getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    port: int
    conf: str
    log: Path
    folder: Path = field(default_factory=Path)

    def workers(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children()

    def connections_per_worker(self) -> list[int]:
        return sorted(
            sum(1 for c in w.net_connections("tcp") if c.status == psutil.CONN_ESTABLISHED)
            for w in self.workers()
        )


def phase_spec(phase: str, **overrides: object) -> PhaseSpec:
    return parse({"sikka:phase": phase, **overrides}, stack=phase)


def without_max_conns(conf: str) -> str:
    """The conf as it was before the cap: the consistent hash alone."""
    return re.sub(r" max_conns=\d+", "", conf)


def with_shared_loopback(conf: str) -> str:
    """The loopback listener as it was: one socket for all workers (no reuseport)."""
    return conf.replace(" proxy_protocol reuseport;", " proxy_protocol;")


VARIANTS = {
    "hash only (before)": without_max_conns,
    "max_conns, shared loopback": with_shared_loopback,
    "max_conns (rendered)": lambda conf: conf,
}


@contextlib.contextmanager
def running_nginx(
    spec: PhaseSpec,
    upstream_ports: list[int],
    folder: Path,
    edit: Callable[[str], str] = lambda conf: conf,
) -> Iterator[Nginx]:
    """The phase's rendered nginx.conf, run by the nginx installed here, in front of
    ``upstream_ports`` on 127.0.0.1; stopped (SIGQUIT, then killed) on exit."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    ports = PortAllocator()
    port, status, loopback = ports.take(), ports.take(), ports.take()
    run = folder / "run"
    run.mkdir(parents=True, exist_ok=True)
    layout = NginxLayout(
        listen=f"127.0.0.1:{port}",
        status_listen=f"127.0.0.1:{status}",
        upstream_servers=tuple(
            f"127.0.0.1:{p} max_fails=2 fail_timeout=5s" for p in upstream_ports
        ),
        loopback_listen=f"127.0.0.1:{loopback}",
        runtime_dir=str(run),
        modules=stream_modules(binary),
    )
    conf = edit(render_nginx_conf(spec, layout))
    path = folder / "nginx.conf"
    path.write_text(conf)
    log = folder / "nginx.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [binary, "-p", str(folder), "-c", str(path), "-e", "stderr", "-g", "daemon off;"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    nginx = Nginx(process, port, conf, log, folder)
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield nginx
    finally:
        process.send_signal(3)  # SIGQUIT: graceful
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


async def open_websocket(url: str, source: str, opened: list[ClientConnection]) -> str:
    """Open one WebSocket through Nginx and keep it; returns the gateway that holds it, or
    how it was refused ("1013", "http 502", "error: ...")."""
    try:
        ws = await connect(url, local_addr=(source, 0), open_timeout=15, ping_interval=None)
    except InvalidStatus as error:
        return f"http {error.response.status_code}"
    except (OSError, TimeoutError, InvalidHandshake) as error:
        return f"error: {type(error).__name__}"
    try:
        name = await asyncio.wait_for(ws.recv(), 15)
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd else None
        return str(code) if code == TRY_AGAIN_LATER else f"closed {code}"
    except TimeoutError:
        await ws.close()
        return "error: no greeting"
    opened.append(ws)
    return str(name)


async def open_many(
    port: int, count: int, sources: int, *, client_id: str | None = None, parallel: int = 50
) -> tuple[Counter[str], list[ClientConnection]]:
    """``count`` WebSockets through Nginx, ``parallel`` at a time, each from one of
    ``sources`` loopback addresses (127.0.0.2, ...) with its own client_id (or all with
    ``client_id``)."""
    gate = asyncio.Semaphore(parallel)
    opened: list[ClientConnection] = []

    async def one(index: int) -> str:
        source = f"127.0.0.{2 + index % sources}"
        key = client_id or f"rider-{uuid.uuid4().hex[:12]}"
        async with gate:
            return await open_websocket(f"ws://127.0.0.1:{port}/?client_id={key}", source, opened)

    outcomes = await asyncio.gather(*(one(i) for i in range(count)))
    return Counter(outcomes), opened


async def close_all(opened: list[ClientConnection]) -> None:
    await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)


async def one_round(
    spec: PhaseSpec, edit: Callable[[str], str], sources: int, folder: Path
) -> dict[str, object]:
    gateways = [
        StandIn(f"gateway-{i}", spec.gateway.connections_per_replica)
        for i in range(spec.gateway.replicas)
    ]
    for gateway in gateways:
        await gateway.start()
    try:
        with running_nginx(spec, [g.port for g in gateways], folder, edit) as nginx:
            started = time.monotonic()
            outcomes, opened = await open_many(nginx.port, spec.gateway.max_connections, sources)
            seconds = time.monotonic() - started
            per_worker = nginx.connections_per_worker()
            held = {g.name: g.held for g in gateways}
            refused = {g.name: g.refused for g in gateways}
            await close_all(opened)
    finally:
        for gateway in gateways:
            await gateway.stop()
    return {
        "held": sum(held.values()),
        "held_per_gateway": held,
        "refused_1013_per_gateway": refused,
        "outcomes": dict(outcomes),
        "per_worker": per_worker,
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase", default="growth")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sources", type=int, default=40)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    spec = phase_spec(args.phase)
    print(
        f"{args.phase}: {spec.gateway.max_connections} WebSockets through Nginx to "
        f"{spec.gateway.replicas} stand-in gateways of {spec.gateway.connections_per_replica}; "
        f"{spec.nginx.worker_processes} workers x {2 * spec.nginx.worker_connections} slots"
    )
    with tempfile.TemporaryDirectory(prefix="nginx-balance-") as tmp:
        for round_number in range(1, args.rounds + 1):
            for index, (name, edit) in enumerate(VARIANTS.items()):
                folder = Path(tmp) / f"r{round_number}-{index}"
                result = asyncio.run(one_round(spec, edit, args.sources, folder))
                print(f"round {round_number} {name:>26}: {result}")
                time.sleep(2)  # let the previous round's sockets leave TIME_WAIT churn


if __name__ == "__main__":
    main()
