"""The Redis exporter as the Topology configures it (its arguments, the password from its
environment alone), against a real password-protected Redis on 127.0.0.1, read the way
prometheus.yml reads it: ``/scrape?target=redis://…`` per server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from scaling.stackconfig import parse
from scaling.topology import build_topology

EXPORTER = shutil.which("prometheus-redis-exporter")
SERVER = shutil.which("redis-server") or shutil.which("valkey-server")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(EXPORTER is None or SERVER is None, reason="needs Redis and its exporter"),
]
PASSWORD = "s3cr'et"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(url: str, expected: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
            if expected in text:
                return text
        except OSError:
            pass
        time.sleep(0.3)
    return text


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[int]:
    assert SERVER is not None
    port = free_port()
    conf = tmp_path / "redis.conf"
    conf.write_text(
        f'port {port}\nbind 127.0.0.1\nrequirepass "{PASSWORD}"\nsave ""\nappendonly no\n'
        f"dir {tmp_path}\n"
    )
    process = subprocess.Popen(
        [SERVER, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_exporter_reads_a_server_through_scrape_with_the_password_from_its_env(
    redis: int,
) -> None:
    assert EXPORTER is not None
    node = build_topology(parse({"sikka:phase": "growth"}, stack="growth")).node("redis-exporter")
    (variable,) = node.secret_env
    listen = free_port()
    arguments = [a for a in node.command if not a.startswith("--web.listen-address")]
    process = subprocess.Popen(
        [EXPORTER, *arguments, f"--web.listen-address=127.0.0.1:{listen}"],
        env={"PATH": "/usr/bin:/bin", **node.env, variable: PASSWORD},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        target = urllib.parse.quote(f"redis://127.0.0.1:{redis}", safe="")
        text = wait_for(f"http://127.0.0.1:{listen}/scrape?target={target}", "\nredis_up 1")
        assert "\nredis_up 1" in text, text[-1500:]
        # What the RedisMemoryHigh rule divides.
        assert "redis_memory_used_bytes " in text and "redis_memory_max_bytes " in text
        # Its own /metrics reads no server (no address of its own).
        own = wait_for(f"http://127.0.0.1:{listen}/metrics", "redis_exporter_build_info")
        assert "\nredis_up " not in own
    finally:
        process.terminate()
        process.wait(timeout=10)
