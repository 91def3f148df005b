"""`check --prometheus` against a real Prometheus (Debian's) scraping a real launch phase
through the Debian exporters (postgres, redis, nginx) and the gateway's own /metrics: the
Prometheus and the direct check agree, part by part, within a tolerance; a part its
exporter reports down is unreachable, never zero."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
import yaml
from check_helpers import one, run_check
from local_helpers import Phase, new_marker, open_client, run_async, wait_for

from scaling.advisor.verdict import Verdict

EXPORTERS = ("prometheus", "prometheus-postgres-exporter", "prometheus-redis-exporter",
             "prometheus-nginx-exporter", "prometheus-node-exporter")  # fmt: skip
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        any(shutil.which(b) is None for b in EXPORTERS), reason="needs Debian's prometheus*"
    ),
]
HELD_WS = 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _hostport(url: str) -> str:
    return httpx.URL(url).netloc.decode()


@pytest.fixture(scope="module")
def phase(launch_phase: Phase) -> Phase:
    """The session's launch phase (conftest.py), left as this module found it."""
    return launch_phase


@pytest.fixture(scope="module")
def monitoring(phase: Phase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Prometheus and one exporter per part, each started here and stopped by its pid."""
    folder = tmp_path_factory.mktemp("prometheus")
    summary = phase.summary
    pg_port = int(summary["postgres"]["primary"].rsplit(":", 1)[1].split("/")[0])
    redis_addr = summary["redis"]["url"].removesuffix("/0")
    ports = {name: _free_port() for name in ("prometheus", "postgres", "redis", "nginx", "node")}
    # Passwords through the environment, never on a command line.
    dsn = (
        f"postgresql://postgres:{phase.superuser_password}@127.0.0.1:{pg_port}/"
        f"{phase.spec.postgres.database}?sslmode=disable"
    )
    commands = {
        "postgres": (
            ["prometheus-postgres-exporter", f"--web.listen-address=127.0.0.1:{ports['postgres']}"],
            {"DATA_SOURCE_NAME": dsn},
        ),
        "redis": (
            [
                "prometheus-redis-exporter",
                "-redis.addr",
                redis_addr,
                "-web.listen-address",
                f"127.0.0.1:{ports['redis']}",
            ],
            {"REDIS_PASSWORD": phase.redis_password},
        ),
        "nginx": (
            [
                "prometheus-nginx-exporter",
                f"-nginx.scrape-uri={summary['nginx']['status_url']}",
                f"-web.listen-address=127.0.0.1:{ports['nginx']}",
            ],
            {},
        ),
    }
    # The host: CPU and memory only, so the exporter stays light on a 2-core machine.
    commands["node"] = (
        [
            "prometheus-node-exporter",
            "--collector.disable-defaults",
            "--collector.cpu",
            "--collector.meminfo",
            f"--web.listen-address=127.0.0.1:{ports['node']}",
        ],
        {},
    )
    gateway = _hostport(summary["gateways"][0]["metrics_url"])
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
        "scrape_configs": [
            {"job_name": "gateway", "static_configs": [{"targets": [gateway]}]},
            *(
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{ports[job]}"]}]}
                for job in ("postgres", "redis", "nginx", "node")
            ),
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    commands["prometheus"] = (
        ["prometheus", f"--config.file={folder / 'prometheus.yml'}",
         f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{ports['prometheus']}"],
        {},
    )  # fmt: skip
    started: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, (argv, env) in commands.items():
            with (folder / f"{name}.log").open("wb") as log:
                started[name] = subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}
                )
        url = f"http://127.0.0.1:{ports['prometheus']}"

        def every_target_up() -> bool:
            targets = httpx.get(f"{url}/api/v1/targets", timeout=2).json()["data"]
            active = targets["activeTargets"]
            return len(active) == 5 and all(t["health"] == "up" for t in active)

        wait_for("Prometheus scrapes every target", every_target_up, 60)
        yield {"url": url, "processes": started, "folder": folder}
    finally:
        for process in started.values():
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        for process in started.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def test_prometheus_and_direct_checks_agree(phase: Phase, monitoring: dict[str, Any]) -> None:
    url = monitoring["url"]

    async def both() -> tuple[tuple[int, dict[str, Any]], tuple[int, dict[str, Any]]]:
        token = phase.token("rider")
        sockets = [
            (await open_client(phase.nginx_ws, f"prom-{new_marker()[:8]}", token))[0]
            for _ in range(HELD_WS)
        ]
        try:
            # Prometheus must have scraped the held sockets: 3 scrape intervals.
            await asyncio.sleep(3)
            prom = await asyncio.to_thread(
                run_check, phase, "--prometheus", url, "--window", "20s", "--step", "2s"
            )
            direct = await asyncio.to_thread(run_check, phase, "--local", "--no-history")
            return prom, direct
        finally:
            for ws in sockets:
                await ws.close()

    (code, prom), (_, direct) = run_async(both(), timeout=120)
    print(f"\nprometheus check: {[(r['key'], r['value'], r['limit']) for r in prom['readings']]}")
    assert prom["source"] == "prometheus" and not prom["unreachable"], prom["unreachable"]
    assert code == prom["exitCode"]
    # The window came from Prometheus's range queries (one sample per 2 s step since it
    # started scraping) and the instant query.
    evidence = prom["evidence"]
    assert evidence["samples"] >= 2 and evidence["historyFile"] is None
    assert evidence["to"] - evidence["from"] >= 2

    gw_p, gw_d = one(prom, "gateway.connections"), one(direct, "gateway.connections")
    assert gw_p["value"] == gw_d["value"] == HELD_WS
    assert gw_p["limit"] == gw_d["limit"] == phase.spec.gateway.connections_per_replica
    pg_p, pg_d = one(prom, "postgres.connections"), one(direct, "postgres.connections")
    assert pg_p["limit"] == pg_d["limit"] == phase.spec.postgres.max_connections
    assert abs(pg_p["value"] - pg_d["value"]) <= 3, (pg_p, pg_d)  # each its own connection
    redis_p, redis_d = one(prom, "redis.memory"), one(direct, "redis.memory")
    assert redis_p["limit"] == redis_d["limit"]
    assert redis_p["value"] == pytest.approx(redis_d["value"], rel=0.25)
    assert one(prom, "redis.clients")["limit"] == one(direct, "redis.clients")["limit"]
    nginx_p, nginx_d = one(prom, "nginx.connections"), one(direct, "nginx.connections")
    assert nginx_p["limit"] == nginx_d["limit"] == phase.spec.nginx.instance_capacity
    assert abs(nginx_p["value"] - nginx_d["value"]) <= 3, (nginx_p, nginx_d)
    assert one(prom, "gateway.messages_in")["unit"] == "messages/s"
    # The host, from node_exporter: memory is steady enough to agree within a few points.
    memory_p, memory_d = one(prom, "host.memory"), one(direct, "host.memory")
    assert abs(memory_p["value"] - memory_d["value"]) < 5, (memory_p, memory_d)
    assert 0 <= one(prom, "host.cpu")["value"] <= 100
    # Same levels where both judged the same numbers.
    assert gw_p["level"] == gw_d["level"] and pg_p["level"] == pg_d["level"]


def test_part_down_behind_its_exporter_is_unreachable(
    phase: Phase, monitoring: dict[str, Any]
) -> None:
    entry = phase.run.entry("redis-0")
    assert entry.pid is not None
    process = psutil.Process(entry.pid)
    process.kill()
    process.wait(10)
    try:
        url = monitoring["url"]

        def redis_reported_down() -> bool:
            query = httpx.get(f"{url}/api/v1/query", params={"query": "redis_up == 0"}, timeout=2)
            return bool(query.json()["data"]["result"])

        wait_for("redis_exporter reports redis_up 0", redis_reported_down, 20)
        code, doc = run_check(phase, "--prometheus", url, "--window", "10s", "--step", "2s")
        assert code == Verdict.UNREACHABLE, doc["verdict"]
        rows = [r for r in doc["readings"] if r["key"] == "redis.memory"]
        assert [r["value"] for r in rows] == [None], rows
        assert rows[0]["error"] == "its exporter reports redis_up 0"
        assert rows[0]["level"] == "unreachable"
    finally:
        phase.run.start_process("redis-0")
        node = phase.redis_client("127.0.0.1", entry.port or 0)
        wait_for("redis-0 answers again", lambda: bool(node.ping()), 30)


def test_prometheus_that_does_not_answer_is_unreachable(phase: Phase) -> None:
    code, doc = run_check(phase, "--prometheus", f"http://127.0.0.1:{_free_port()}")
    assert code == Verdict.UNREACHABLE
    (row,) = doc["readings"]
    assert row["key"] == "monitoring.prometheus" and row["value"] is None and row["error"]
