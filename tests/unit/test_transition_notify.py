"""The transition webhook against a local HTTP server: the body it posts on success and on
failure, bounded retries, and a webhook that never fails the transition."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from scaling.transition import notify


class Hook:
    """A local webhook receiver answering the statuses in ``answers`` in turn (then 200)."""

    def __init__(self, answers: list[int] | None = None) -> None:
        self.answers = list(answers or [])
        self.received: list[dict[str, Any]] = []
        self.paths: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                hook.received.append(json.loads(self.rfile.read(length)))
                hook.paths.append(self.path)
                status = hook.answers.pop(0) if hook.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/s3cr3t-token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Hook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    with Hook() as running:
        yield running


def body(outcome: str, failed: str | None) -> dict[str, Any]:
    return notify.body(
        source="launch",
        target="growth",
        outcome=outcome,
        failed_step=failed,
        transition="growth-20261129T081200Z-ab12",
        started_at="2026-11-29T08:12:00Z",
        ended_at="2026-11-29T08:14:00Z",
        measurements={"totalSeconds": 120.0},
        error=None if failed is None else "nginx -t failed",
    )


@pytest.mark.parametrize(
    ("outcome", "failed"),
    [("succeeded", None), ("rolled-back", "catch-up"), ("failed", "switch-front-door")],
)
def test_the_body_says_source_target_outcome_and_failed_step(
    hook: Hook, outcome: str, failed: str | None
) -> None:
    delivery = notify.send(hook.url, body(outcome, failed), sleep=lambda s: None)
    assert delivery.delivered and delivery.attempts == 1 and delivery.status == 200
    [got] = hook.received
    assert got["source"] == "launch" and got["target"] == "growth"
    assert got["outcome"] == outcome and got["failedStep"] == failed
    assert got["transition"] == "growth-20261129T081200Z-ab12"
    assert got["startedAt"] == "2026-11-29T08:12:00Z" and got["endedAt"] == "2026-11-29T08:14:00Z"
    assert got["measurements"] == {"totalSeconds": 120.0}
    assert hook.paths == ["/hooks/s3cr3t-token"]


def test_a_server_error_is_retried_a_bounded_number_of_times() -> None:
    pauses: list[float] = []
    with Hook([503, 500, 502, 500]) as hook:
        delivery = notify.send(hook.url, body("succeeded", None), sleep=pauses.append)
    assert not delivery.delivered
    assert delivery.attempts == notify.ATTEMPTS == 3 and len(hook.received) == 3
    assert delivery.status == 502 and delivery.error == "HTTP 502"
    assert pauses == [0.5, 1.0]


def test_a_retry_that_succeeds_is_delivered() -> None:
    with Hook([503]) as hook:
        delivery = notify.send(hook.url, body("succeeded", None), sleep=lambda s: None)
    assert delivery.delivered and delivery.attempts == 2


def test_a_client_error_is_not_retried() -> None:
    with Hook([404]) as hook:
        delivery = notify.send(hook.url, body("succeeded", None), sleep=lambda s: None)
    assert not delivery.delivered and delivery.attempts == 1 and delivery.error == "HTTP 404"


def test_an_unreachable_webhook_does_not_raise_and_hides_the_path() -> None:
    with Hook() as hook:
        url = hook.url
    # The server is gone: the port refuses.
    delivery = notify.send(url, body("failed", "promote-target"), sleep=lambda s: None)
    assert not delivery.delivered and delivery.attempts == 3
    assert delivery.error == "connection refused or unreachable"
    shown = json.dumps(delivery.as_dict())
    assert "s3cr3t" not in shown and delivery.url == url.split("/hooks")[0]


def test_a_malformed_url_does_not_raise() -> None:
    delivery = notify.send("not a url", body("succeeded", None), sleep=lambda s: None)
    assert not delivery.delivered


def test_the_url_comes_from_the_flag_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(notify.WEBHOOK_ENV, raising=False)
    assert notify.webhook_url(None) is None
    monkeypatch.setenv(notify.WEBHOOK_ENV, "http://env.example/x")
    assert notify.webhook_url(None) == "http://env.example/x"
    assert notify.webhook_url("http://flag.example/y") == "http://flag.example/y"
