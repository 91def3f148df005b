"""Storms of identical failures are logged as a few lines with their count: the
publish-failure log and the accept() "too many open files" handler."""

from __future__ import annotations

import errno
import logging
from typing import Any

import pytest

from gateway.limits import AcceptErrorHandler
from gateway.throttle import ThrottledLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_first_event_logged_then_one_summary_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    throttled = ThrottledLog(logging.getLogger("t"), "publish failed", 10.0, clock=clock)
    with caplog.at_level(logging.WARNING, "t"):
        assert throttled.event("boom") is True
        logged = [throttled.event("boom") for _ in range(999)]
        clock.now += 10.0
        assert throttled.event("boom again") is True
        clock.now += 3.0
        assert throttled.event() is False
    assert not any(logged)
    assert throttled.total == 1002
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "publish failed: boom",
        "publish failed: boom again (1000 times in the last 10.0 s)",
    ]


class FakeLoop:
    def __init__(self) -> None:
        self.defaults: list[dict[str, Any]] = []

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.defaults.append(context)


def test_accept_out_of_descriptors_is_counted_not_logged_each_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = AcceptErrorHandler(lambda: 1013)
    loop = FakeLoop()
    emfile = OSError(errno.EMFILE, "Too many open files")
    with caplog.at_level(logging.ERROR, "gateway.limits"):
        for _ in range(5000):
            handler(
                loop, {"message": "socket.accept() out of system resource", "exception": emfile}
            )
    assert handler.count == 5000
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "out of file descriptors: Too many open files" in lines[0]
    assert "1013 connections open" in lines[0]
    assert loop.defaults == []
    # Anything else still reaches the loop's default handler.
    other = {"message": "Task exception was never retrieved", "exception": ValueError("x")}
    handler(loop, other)
    assert loop.defaults == [other]
