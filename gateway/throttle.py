"""Logging a storm of identical failures as a few lines: once at the first, then at most
once per interval with how many happened meanwhile.

A gateway under trouble (Redis unreachable, out of file descriptors) fails the same way
thousands of times a second; one line per failure buries the log and costs CPU when it is
needed most. Pure bookkeeping with an injected clock, so it is tested without waiting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

DEFAULT_INTERVAL = 10.0


class ThrottledLog:
    """Counts events; :meth:`event` logs the first one and then at most one summary line
    per ``interval`` seconds ("... (N times in the last 9.8 s)")."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        interval: float = DEFAULT_INTERVAL,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._what = what
        self._interval = interval
        self._level = level
        self._clock = clock
        self._since: float | None = None  # when the current summary period began
        self._pending = 0  # events not reported yet
        self.total = 0

    def event(self, detail: str = "") -> bool:
        """Record one event; returns whether a line was logged for it."""
        self.total += 1
        self._pending += 1
        now = self._clock()
        if self._since is not None and now - self._since < self._interval:
            return False
        span = 0.0 if self._since is None else now - self._since
        suffix = f": {detail}" if detail else ""
        if self._pending == 1:
            self._logger.log(self._level, "%s%s", self._what, suffix)
        else:
            self._logger.log(
                self._level,
                "%s%s (%d times in the last %.1f s)",
                self._what,
                suffix,
                self._pending,
                span,
            )
        self._since = now
        self._pending = 0
        return True
