"""The rendered prometheus.yml run by a real Prometheus: the multi-target relabelling sends
``/scrape?target=redis://…`` to the exporter and names the series after the server, and a
gateway worker's port is a target of its own. Addresses come from a view that puts every
node on loopback, as the local runner does."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any, ClassVar

import pytest

from scaling.render.prometheus import render_prometheus_yml
from scaling.stackconfig import parse
from scaling.topology import Node, build_topology
from scaling.topology.monitoring import scrape_jobs

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PROMETHEUS is None, reason="needs prometheus"),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Recorder(BaseHTTPRequestHandler):
    """Any exporter: records what it was asked and answers one gauge."""

    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Recorder.seen.append(self.path)
        body = b"probe_answered 1\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def exporter() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def query(port: int, expression: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(expression)}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())["data"]["result"]  # type: ignore[no-any-return]


def test_prometheus_scrapes_the_rendered_jobs(exporter: int, tmp_path: Path) -> None:
    assert PROMETHEUS is not None
    spec = parse({"sikka:phase": "growth", "sikka:gateway": {"processes": 2}}, stack="growth")
    # The shortest interval the model allows (as `local up` does): the first scrape of each
    # target comes within one interval of the start, and the test waits for it.
    spec = spec.model_copy(
        update={"monitoring": spec.monitoring.model_copy(update={"scrape_interval_seconds": 5})}
    )
    topology = build_topology(spec)

    # The recording server stands in for every node's port; the probed servers keep names.
    def loopback(node: Node, port: int) -> str:
        return f"127.0.0.1:{exporter}"

    def named(node: Node, port: int) -> str:
        return f"{node.name}:{port}"

    jobs = {j.name: j for j in scrape_jobs(topology, loopback)}
    probes = {j.name: j for j in scrape_jobs(topology, named)}["redis"]
    # Every probe keeps its server's name; the exporter answers on loopback.
    redis = dataclasses.replace(
        jobs["redis"],
        targets=tuple(
            dataclasses.replace(t, probe=p.probe)
            for t, p in zip(jobs["redis"].targets, probes.targets, strict=True)
        ),
    )
    keep = [redis, jobs["gateway"]]
    config = tmp_path / "prometheus.yml"
    config.write_text(render_prometheus_yml(spec, keep, rule_files=()))
    port = free_port()
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                result = query(port, "probe_answered")
            except OSError:
                result = []
            if len(result) >= len(redis.targets) + 4:
                break
            time.sleep(1)
        by_job: dict[str, set[tuple[str, str]]] = {}
        for series in result:
            labels = series["metric"]
            by_job.setdefault(labels["job"], set()).add(
                (labels["instance"], labels.get("worker", ""))
            )
        servers = {t.labels["instance"] for t in redis.targets}
        assert by_job["redis"] == {(s, "") for s in servers}
        assert by_job["gateway"] == {(f"gateway-{g}", str(w)) for g in (0, 1) for w in (0, 1)}
        # The exporter was asked for each server by its own address.
        for target in probes.targets:
            assert target.probe is not None
            asked = "/scrape?target=" + urllib.parse.quote(target.probe, safe="")
            assert asked in Recorder.seen, (asked, Recorder.seen[:5])
    finally:
        process.terminate()
        process.wait(timeout=30)
