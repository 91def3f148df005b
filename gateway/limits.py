"""The gateway's open-file limit: one descriptor per WebSocket. A gateway started with a
soft limit of 1,024 (a shell's default, or a container runtime's) accepts ~1,013 clients
and then fails every accept with "Too many open files"; so at start it raises its own soft
limit to what ``WEBSOCKET_MAX_CONNECTIONS`` needs (+25 % for overlapping reconnects, +1,024
for Redis connections, listeners and logs: the figure scaling/render/limits.py gives the
platforms), within the hard limit, and warns when the hard limit is lower."""

from __future__ import annotations

import logging
import math
import resource

log = logging.getLogger("gateway")

RESERVED_FILES = 1024


def needed_open_files(max_connections: int) -> int:
    return math.ceil(max_connections * 1.25) + RESERVED_FILES


def raise_open_files(max_connections: int) -> int:
    """Raise the soft RLIMIT_NOFILE to what ``max_connections`` needs; returns it."""
    need = needed_open_files(max_connections)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return soft
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if target < need:
        log.warning(
            "open-file hard limit %d is below the %d that %d connections need: "
            "expect 'Too many open files' near %d clients",
            hard,
            need,
            max_connections,
            target - RESERVED_FILES,
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target
