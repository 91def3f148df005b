"""Free loopback ports, chosen below the kernel's ephemeral range.

Ports from the ephemeral range could be taken by any outgoing connection between the
moment we pick them and the moment the server binds; ports below it are only ever taken by
listeners, so two phases can run side by side without racing client sockets.

Two runs in different processes (two phases side by side, parallel test workers) could still
pick the same free port before either server binds it: a port handed out is also claimed
machine-wide, by a file named after it under the temp dir (`CLAIMS`), and no other allocator
hands it out while the claim is fresh (`CLAIM_SECONDS`: ample time for a server to bind; after
that a bound port is simply not free).
"""

from __future__ import annotations

import os
import random
import socket
import tempfile
import time
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 15000
# Redis Cluster listens on port + 10000 for its bus: that port must be free too.
CLUSTER_BUS_OFFSET = 10000
CLAIMS = Path(tempfile.gettempdir()) / "sikka-scaling-ports"
CLAIM_SECONDS = 600.0


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


def claim(port: int, claims: Path = CLAIMS, now: float | None = None) -> bool:
    """Whether ``port`` is now claimed for this process: False when another allocator (of
    any process) claimed it less than CLAIM_SECONDS ago."""
    now = time.time() if now is None else now
    path = claims / str(port)
    try:
        if not claims.is_dir():
            claims.mkdir(parents=True, exist_ok=True)
            claims.chmod(0o1777)  # every account's runs claim here
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            if now - path.stat().st_mtime < CLAIM_SECONDS:
                return False
            # A stale claim: renew it (two renewers at once would both win: rare enough
            # to leave to the bind that follows, as without claims).
            os.utime(path, (now, now))
        except FileNotFoundError:
            return claim(port, claims, now)
        except PermissionError:
            return False
        return True
    except OSError:
        return True  # no claims here (a folder this account cannot write): the bind decides
    with os.fdopen(fd, "w") as out:
        out.write(f"{os.getpid()}\n")
    os.utime(path, (now, now))
    return True


class PortAllocator:
    """Hands out distinct free ports for one run, each claimed machine-wide (`claim`)."""

    def __init__(self, seed: int | None = None, claims: Path = CLAIMS) -> None:
        self._taken: set[int] = set()
        self._random = random.Random(seed)
        self._claims = claims

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
            if all(is_free(p, hosts) for p in wanted) and self._claim_all(wanted):
                self._taken.update(wanted)
                return port
        raise RuntimeError(f"no free port found between {LOWEST} and {high} on {hosts}")

    def _claim_all(self, ports: list[int]) -> bool:
        """Claims every port of ``ports`` or none (a partial claim is released)."""
        claimed: list[int] = []
        for port in ports:
            if not claim(port, self._claims):
                for mine in claimed:
                    (self._claims / str(mine)).unlink(missing_ok=True)
                return False
            claimed.append(port)
        return True
