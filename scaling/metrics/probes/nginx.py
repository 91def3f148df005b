"""Every Nginx's stub_status: active connections against worker_connections x
worker_processes (the instance's capacity, from the stack: stub_status does not say it)."""

from __future__ import annotations

import re

import httpx

from scaling.metrics.model import Reading
from scaling.metrics.probes import TIMEOUT, unreachable

_ACTIVE = re.compile(r"^Active connections:\s*(\d+)", re.MULTILINE)
_STATES = re.compile(r"Reading:\s*(\d+)\s+Writing:\s*(\d+)\s+Waiting:\s*(\d+)")


class StubStatusError(ValueError):
    """A page that is not nginx's stub_status."""


def parse(text: str) -> dict[str, int]:
    active = _ACTIVE.search(text)
    states = _STATES.search(text)
    if active is None or states is None:
        raise StubStatusError(f"not a stub_status page: {text[:80]!r}")
    reading, writing, waiting = (int(v) for v in states.groups())
    return {
        "active": int(active.group(1)),
        "reading": reading,
        "writing": writing,
        "waiting": waiting,
    }


def probe_nginx(url: str, capacity: float | None) -> tuple[list[Reading], list[str]]:
    instance = httpx.URL(url).netloc.decode()
    try:
        response = httpx.get(url, timeout=TIMEOUT)
        response.raise_for_status()
        status = parse(response.text)
    except (httpx.HTTPError, StubStatusError) as error:
        return [
            unreachable("nginx.connections", "nginx", instance, error, "connections", capacity)
        ], []
    return [
        Reading(
            "nginx.connections", "nginx", instance, float(status["active"]), capacity, "connections"
        )
    ], []
