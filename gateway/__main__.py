"""Entry point: ``python -m gateway``.

Exit codes: 0 after a clean SIGTERM/SIGINT drain, 2 for bad configuration,
1 when the server cannot start (e.g. the port is taken).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from gateway.config import ConfigError, Settings, load_settings
from gateway.limits import (
    AcceptErrorHandler,
    connection_cap,
    needed_open_files,
    raise_open_files_limit,
)
from gateway.processes import ConnectionCount, supervise
from gateway.server import Gateway

log = logging.getLogger("gateway")

# Give Redis this long at start-up before warning; the gateway serves (and
# reports 503 on /healthz) meanwhile rather than crash-looping.
STARTUP_REDIS_WAIT = 5.0


async def run(settings: Settings, count: ConnectionCount | None = None) -> int:
    gateway = Gateway(settings, count=count)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(AcceptErrorHandler(lambda: gateway.open_connections))
    try:
        await gateway.start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        await gateway.backend.close()
        return 1

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    if not await gateway.backend.wait_ready(STARTUP_REDIS_WAIT):
        log.warning("redis not reachable yet; /healthz reports 503 until it is")

    await stop.wait()
    log.info("shutdown signal received; draining for up to %gs", settings.drain_seconds)
    await gateway.drain()
    await gateway.stop()
    log.info("stopped")
    return 0


def run_loop(settings: Settings, main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on the configured event loop (uvloop unless GATEWAY_EVENT_LOOP=asyncio)."""
    if settings.event_loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def process_settings(settings: Settings, index: int) -> Settings:
    """Worker ``index``'s settings: its own id (it has its own subscriptions) and its own
    metrics port (each process counts its own traffic)."""
    if settings.processes == 1:
        return settings
    return dataclasses.replace(
        settings,
        gateway_id=f"{settings.gateway_id}-p{index}",
        metrics_port=settings.metrics_port + index,
    )


def main() -> int:
    logging.basicConfig(
        level=os.environ.get("GATEWAY_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    soft, _ = raise_open_files_limit(
        needed_open_files(settings.max_connections, settings.redis_max_connections)
    )
    cap = connection_cap(settings.max_connections, settings.redis_max_connections, soft)
    if cap < settings.max_connections:
        log.error(
            "serving at most %d connections instead of WEBSOCKET_MAX_CONNECTIONS=%d "
            "(open-file limit %d); the others are refused with 1013",
            cap,
            settings.max_connections,
            soft,
        )
        settings = dataclasses.replace(settings, max_connections=cap)
    if settings.processes == 1:
        return run_loop(settings, run(settings))
    count = ConnectionCount(shared=True)
    log.info("starting %d gateway processes on port %d", settings.processes, settings.port)

    def worker(index: int) -> int:
        mine = process_settings(settings, index)
        return run_loop(mine, run(mine, count))

    return supervise(settings.processes, worker)


if __name__ == "__main__":
    sys.exit(main())
