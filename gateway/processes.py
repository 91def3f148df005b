"""Several gateway processes on one port (``GATEWAY_PROCESSES``), for containers with
more than one core: each process is a whole gateway (its own event loop, Redis
connections and subscriptions) listening with SO_REUSEPORT, and the kernel spreads new
connections over them. They share one count of open connections, so
``WEBSOCKET_MAX_CONNECTIONS`` still bounds the container as a whole (the stacks set it to
the phase's ``connectionsPerReplica``), however unevenly the kernel deals them.

The first process forks the workers before any event loop exists and only supervises:
it forwards SIGTERM/SIGINT to them (each drains its own clients) and, should one die,
stops the others and exits 1 so the orchestrator restarts the container whole.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class ConnectionCount:
    """Open connections, counted in this process only or across the container's."""

    def __init__(self, shared: bool = False) -> None:
        self._value: Any = multiprocessing.Value("l", 0) if shared else None
        self._local = 0

    @property
    def value(self) -> int:
        return int(self._value.value) if self._value is not None else self._local

    def take(self, limit: int) -> bool:
        """Count one more connection unless ``limit`` are open already."""
        if self._value is None:
            if self._local >= limit:
                return False
            self._local += 1
            return True
        with self._value.get_lock():
            if self._value.value >= limit:
                return False
            self._value.value += 1
            return True

    def release(self) -> None:
        if self._value is None:
            self._local -= 1
            return
        with self._value.get_lock():
            self._value.value -= 1


def supervise(processes: int, worker: Callable[[int], int]) -> int:
    """Fork ``processes`` workers running ``worker(index)``; wait for them. Returns 0 when
    all exited 0, else 1 (2 if one reported a configuration error)."""
    children: dict[int, int] = {}
    for index in range(processes):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                code = worker(index)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = index

    def forward(signum: int, _frame: Any) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    stopping = False
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, -1)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            worst = max(worst, 2 if code == 2 else 1)
        if code != 0 and not stopping and children:
            log.error("gateway process %s exited with %d; stopping the others", index, code)
            stopping = True
            forward(signal.SIGTERM, None)
    return worst
