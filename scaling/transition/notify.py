"""The webhook a transition calls when it ends (succeeded, rolled back, failed).

POST of one JSON document::

    {"source", "target", "outcome", "failedStep", "transition", "startedAt", "endedAt",
     "measurements", "error", "message"}

to ``--webhook URL`` or ``$SIKKA_WEBHOOK_URL``. A connection error, a timeout, 429 or a 5xx
answer is retried (``attempts`` in all, with a doubling pause); any other answer is final.
A webhook that cannot be reached never fails the transition: the outcome says so and the
transition log records it. The URL often carries a token (chat webhooks do), so only its
scheme and host are ever logged or printed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

WEBHOOK_ENV = "SIKKA_WEBHOOK_URL"
ATTEMPTS = 3
TIMEOUT = 5.0  # seconds per attempt
PAUSE = 0.5  # seconds before the second attempt, doubled each time


@dataclass(frozen=True)
class Delivery:
    url: str  # scheme://host[:port] only
    delivered: bool
    attempts: int
    status: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "webhook": self.url,
            "delivered": self.delivered,
            "attempts": self.attempts,
            "status": self.status,
            "error": self.error,
        }


def webhook_url(explicit: str | None) -> str | None:
    return explicit or os.environ.get(WEBHOOK_ENV) or None


def redacted(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: no path, query or credentials."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def body(
    *,
    source: str,
    target: str,
    outcome: str,
    failed_step: str | None,
    transition: str | None,
    started_at: str | None,
    ended_at: str | None,
    measurements: Mapping[str, Any],
    error: str | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    return {
        "source": source,
        "target": target,
        "outcome": outcome,
        "failedStep": failed_step,
        "transition": transition,
        "startedAt": started_at,
        "endedAt": ended_at,
        "measurements": dict(measurements),
        "error": error,
        "message": message,
    }


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def send(
    url: str,
    document: Mapping[str, Any],
    *,
    attempts: int = ATTEMPTS,
    timeout: float = TIMEOUT,
    pause: float = PAUSE,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """POST ``document``; never raises."""
    shown = redacted(url)
    status: int | None = None
    error: str | None = None
    tried = 0
    try:
        client = httpx.Client(timeout=timeout, follow_redirects=False)
    except Exception as failed:  # a malformed proxy setting and the like
        return Delivery(shown, False, 0, None, f"{type(failed).__name__}: {failed}")
    with client:
        for tried in range(1, attempts + 1):
            try:
                answer = client.post(url, json=dict(document))
                status, error = answer.status_code, None
                if answer.is_success:
                    return Delivery(shown, True, tried, status)
                error = f"HTTP {status}"
                if not _retryable(status):
                    break
            except httpx.HTTPError as failed:
                status, error = None, _why(failed)
            except ValueError as failed:  # a URL httpx cannot use
                return Delivery(shown, False, tried, None, f"not a usable URL: {failed}")
            if tried < attempts:
                sleep(pause * 2 ** (tried - 1))
    return Delivery(shown, False, tried, status, error)


def _why(error: httpx.HTTPError) -> str:
    # httpx's messages may quote the request URL: say only what kind of failure it was.
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    if isinstance(error, httpx.ConnectError):
        return "connection refused or unreachable"
    return type(error).__name__
