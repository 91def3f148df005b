"""Free loopback ports, chosen below the kernel's ephemeral range.

Ports from the ephemeral range could be taken by any outgoing connection between the
moment we pick them and the moment the server binds; ports below it are only ever taken by
listeners, so two phases can run side by side without racing client sockets.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 15000
# Redis Cluster listens on port + 10000 for its bus: that port must be free too.
CLUSTER_BUS_OFFSET = 10000


def ephemeral_low() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def is_free(port: int, hosts: tuple[str, ...] = ("127.0.0.1",)) -> bool:
    for host in hosts:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


class PortAllocator:
    """Hands out distinct free ports for one run."""

    def __init__(self, seed: int | None = None) -> None:
        self._taken: set[int] = set()
        self._random = random.Random(seed)

    def take(
        self,
        hosts: tuple[str, ...] = ("127.0.0.1",),
        *,
        cluster_bus: bool = False,
        count: int = 1,
    ) -> int:
        """A free port; with ``count`` > 1 the first of that many consecutive free ports (a
        server whose processes listen on port + i, as the gateway's workers serve /metrics)."""
        high = ephemeral_low() - count
        if cluster_bus:
            high = min(high, 65535) - CLUSTER_BUS_OFFSET
        for _ in range(2000):
            port = self._random.randint(LOWEST, high)
            wanted = list(range(port, port + count))
            if cluster_bus:
                wanted.append(port + CLUSTER_BUS_OFFSET)
            if any(p in self._taken for p in wanted):
                continue
            if all(is_free(p, hosts) for p in wanted):
                self._taken.update(wanted)
                return port
        raise RuntimeError(f"no free port found between {LOWEST} and {high} on {hosts}")
