"""Bounded waits: every part of a run must answer before `up` reports it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import httpx
import redis

from scaling.local.procs import ProcessEntry, alive


class HealthTimeout(RuntimeError):
    pass


class ProcessDied(RuntimeError):
    pass


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    *,
    process: ProcessEntry | None = None,
    processes: Iterable[ProcessEntry] = (),
    interval: float = 0.2,
) -> float:
    """Poll ``check`` until true; returns seconds waited. Fails fast if ``process`` (or one
    of ``processes``) dies."""
    watched = [*([process] if process is not None else []), *processes]
    start = time.monotonic()
    last_error: Exception | None = None
    while True:
        try:
            if check():
                return time.monotonic() - start
            last_error = None
        except Exception as error:  # any failure to answer is "not yet"
            last_error = error
        for entry in watched:
            if not alive(entry):
                raise ProcessDied(f"{entry.name} exited while waiting for {what}")
        if time.monotonic() - start > timeout:
            detail = f" (last error: {last_error})" if last_error else ""
            raise HealthTimeout(f"{what}: not ready after {timeout:.0f}s{detail}")
        time.sleep(interval)


def http_ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


def redis_ping(host: str, port: int, password: str | None) -> bool:
    client = redis.Redis(
        host=host, port=port, password=password, socket_timeout=2, socket_connect_timeout=1
    )
    try:
        return bool(client.ping())
    finally:
        client.close()
