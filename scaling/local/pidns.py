"""A server in a PID namespace of its own, the way a container runs it.

Patroni starts PostgreSQL as a daemon of its own (a new session): stopping or killing Patroni
alone would leave the postmaster running, which a container never does. Run in its own PID
namespace, the server is that namespace's PID 1, and the kernel ends every process of the
namespace when PID 1 dies: ``kill -9`` of that one pid takes the whole server down like a
container that dies, and a SIGTERM to it (Patroni handles it) stops it gracefully.

``unshare --fork`` runs PID 1 as its child; ``setpriv`` then drops to the server's account.
The launcher (unshare) neither forwards SIGTERM nor takes the namespace with it when it is
killed (setpriv's account switch clears --kill-child's parent-death signal), so the process
to record, signal and kill is PID 1 — the launcher's child — never the launcher.

Creating a PID namespace needs root; elsewhere the server runs directly (see ``available``).
"""

from __future__ import annotations

import os
import time

import psutil

LAUNCHER = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "--")
FIND_TIMEOUT = 10.0


def available() -> bool:
    """Whether servers can get a PID namespace here (as root)."""
    return os.geteuid() == 0


def wrap(argv: list[str], user: str | None) -> list[str]:
    """``argv`` as PID 1 of a new PID namespace, run as ``user`` (when given)."""
    drop = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"] if user else []
    return [*LAUNCHER, *drop, *argv]


def namespace_init(launcher: int, timeout: float = FIND_TIMEOUT) -> tuple[int, float]:
    """(pid, start time) of PID 1 of the namespace ``launcher`` created: its child."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            children = psutil.Process(launcher).children()
        except psutil.NoSuchProcess:
            break
        if children:
            child = children[0]
            return child.pid, child.create_time()
        time.sleep(0.02)
    raise RuntimeError(f"no process started in the PID namespace of launcher pid {launcher}")
