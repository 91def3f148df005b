"""Open-file limits: what the gateway needs, raising its own soft limit to it at start,
and what happens when accept() still runs out of descriptors.

Every WebSocket is a socket, so a gateway allowed ``WEBSOCKET_MAX_CONNECTIONS`` clients
needs that many descriptors plus its Redis connections and some for everything else. A
shell's usual soft limit of 1,024 would stop it at ~1,000 clients; the hard limit is
usually far higher, and a process may raise its own soft limit up to it.
"""

from __future__ import annotations

import errno
import logging
import resource
from typing import Any

from gateway.throttle import ThrottledLog

log = logging.getLogger(__name__)

# Listeners, the metrics port, Redis pub/sub and cluster shard connections, logs, probes,
# connections being accepted while others close.
SPARE_FILES = 256

# accept() errors asyncio reports through the loop's exception handler and then backs
# off from (it stops accepting on that listener for a second).
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def needed_open_files(max_connections: int, redis_connections: int) -> int:
    """Descriptors one gateway process needs, however many share the port: all of the
    clients (SO_REUSEPORT does not balance exactly, so any process may end up holding
    any share of them), its Redis pool and spares."""
    return max_connections + redis_connections + SPARE_FILES


def connection_cap(max_connections: int, redis_connections: int, soft_limit: int) -> int:
    """The connections a process can really hold under ``soft_limit`` descriptors: when
    that is fewer than WEBSOCKET_MAX_CONNECTIONS the gateway refuses the rest with 1013
    (and /healthz says "full", so balancers go elsewhere) rather than let accept() fail."""
    if soft_limit == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, soft_limit - redis_connections - SPARE_FILES))


def raise_open_files_limit(needed: int) -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to ``needed`` (hard limit permitting) and
    return (soft, hard) afterwards. Logs an error when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.error("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.error(
            "open-file limit %d (hard limit %s) is below the %d this gateway needs for "
            "WEBSOCKET_MAX_CONNECTIONS: raise the hard limit (ulimit -Hn, Docker ulimits, "
            "the container runtime's default)",
            soft,
            "unlimited" if hard == resource.RLIM_INFINITY else hard,
            needed,
        )
    return soft, hard


class AcceptErrorHandler:
    """Event-loop exception handler that turns the loop's per-accept() "out of system
    resource" reports into one line per interval with their count and the limit; every
    other report goes to the default handler. (asyncio reports each failed accept() and
    pauses that listener for a second; uvloop's libuv accepts and closes such connections
    without reporting them, which connection_cap keeps from happening.)"""

    def __init__(self, open_connections: Any = None, interval: float = 10.0) -> None:
        self._throttled = ThrottledLog(
            log, "accept() failed: out of file descriptors", interval, logging.ERROR
        )
        self._open_connections = open_connections

    @property
    def count(self) -> int:
        return self._throttled.total

    def __call__(self, loop: Any, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in OUT_OF_RESOURCES:
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            held = self._open_connections() if self._open_connections else "?"
            self._throttled.event(f"{exc.strerror} (limit {soft}, {held} connections open)")
            return
        loop.default_exception_handler(context)
