"""Entry point: ``python -m gateway``.

Exit codes: 0 after a clean SIGTERM/SIGINT drain, 2 for bad configuration,
1 when the server cannot start (e.g. the port is taken).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from gateway.config import ConfigError, Settings, load_settings
from gateway.limits import raise_open_files
from gateway.server import Gateway

log = logging.getLogger("gateway")

# Give Redis this long at start-up before warning; the gateway serves (and
# reports 503 on /healthz) meanwhile rather than crash-looping.
STARTUP_REDIS_WAIT = 5.0


async def run(settings: Settings) -> int:
    gateway = Gateway(settings)
    try:
        await gateway.start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        await gateway.backend.close()
        return 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
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
    raise_open_files(settings.max_connections)
    return asyncio.run(run(settings))


if __name__ == "__main__":
    sys.exit(main())
