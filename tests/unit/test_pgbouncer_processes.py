"""Several PgBouncer processes per pooler (pooler.processes): one address shared with
so_reuseport, the pooler's pools divided between the processes so that their sum still fits
PostgreSQL's connections, and the container's supervisor shell."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scaling.issues import ConfigError
from scaling.model import PhaseSpec
from scaling.render.endpoints import Endpoint
from scaling.render.pgbouncer import (
    PoolerLayout,
    config_name,
    process_share,
    render_pgbouncer_ini,
    supervise_sh,
)
from scaling.stackconfig import parse


def spec(phase: str, **pooler: object) -> PhaseSpec:
    values: dict[str, object] = {"sikka:phase": phase}
    if pooler:
        values["sikka:pooler"] = {"enabled": True, **pooler}
    return parse(values, stack=phase)


LAYOUT = PoolerLayout(
    listen=Endpoint("127.0.3.1", 6432),
    primary=Endpoint("127.0.2.1", 5432),
    replica_hosts=("127.0.2.1",),
    replica_port=5433,
)


def settings(ini: str) -> dict[str, str]:
    out = {}
    for line in ini.splitlines():
        if "=" in line and not line.startswith(";"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


@pytest.mark.parametrize("phase", ["growth", "scale"])
def test_growth_and_scale_run_two_processes_per_pooler(phase: str) -> None:
    assert spec(phase).pooler.processes == 2
    assert spec("launch").pooler.processes == 1


@pytest.mark.parametrize("processes", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("phase", ["launch", "growth", "scale"])
def test_process_shares_add_up_to_the_poolers_pools_within_postgres(
    phase: str, processes: int
) -> None:
    s = spec(phase, processes=processes)
    pool, pg = s.pooler, s.postgres
    shares = [process_share(s, k) for k in range(processes)]
    assert sum(x.default_pool_size for x in shares) == pool.default_pool_size
    assert sum(x.read_pool_size for x in shares) == pool.read_pool_size
    assert sum(x.reserve_pool_size for x in shares) == pool.reserve_pool_size
    # No process is starved, and none gets more than one connection above another.
    assert min(x.default_pool_size for x in shares) >= 1
    assert max(x.default_pool_size for x in shares) - min(x.default_pool_size for x in shares) <= 1
    # Every process of every pooler at its max_db_connections fits PostgreSQL's budget.
    assert pool.replicas * sum(x.max_db_connections for x in shares) <= pg.usable_connections
    assert all(x.max_db_connections >= x.default_pool_size for x in shares)
    # Pools plus reserves of all processes of all poolers fit it too (rules.py's check).
    used = sum(x.default_pool_size + x.reserve_pool_size for x in shares)
    assert pool.replicas * used <= pg.usable_connections


def test_every_process_shares_the_address_with_so_reuseport() -> None:
    s = spec("growth")
    inis = [settings(render_pgbouncer_ini(s, LAYOUT, k)) for k in range(2)]
    for ini in inis:
        assert ini["listen_addr"] == "127.0.3.1"
        assert ini["listen_port"] == "6432"
        assert ini["so_reuseport"] == "1"
        assert ini["max_client_conn"] == "1000"
        assert ini["max_db_connections"] == "24"  # 97 // (2 poolers x 2 processes)
    assert [ini["default_pool_size"] for ini in inis] == ["20", "20"]
    assert [ini["reserve_pool_size"] for ini in inis] == ["3", "2"]
    assert [config_name(s, k) for k in range(2)] == ["pgbouncer-0.ini", "pgbouncer-1.ini"]


def test_one_process_keeps_the_whole_pools_and_no_reuseport() -> None:
    s = spec("growth", processes=1)
    ini = settings(render_pgbouncer_ini(s, LAYOUT))
    assert "so_reuseport" not in ini
    assert ini["default_pool_size"] == "40"
    assert ini["reserve_pool_size"] == "5"
    assert ini["max_db_connections"] == "48"
    assert config_name(s) == "pgbouncer.ini"


def test_a_process_outside_the_pooler_is_refused() -> None:
    with pytest.raises(ValueError, match="process 2 of a pooler with 2"):
        process_share(spec("growth"), 2)


def test_more_processes_than_server_connections_is_an_error_naming_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        spec("growth", processes=16, defaultPoolSize=12, readPoolSize=40)
    assert [f"{i.key}: {i.message}" for i in caught.value.issues] == [
        "sikka:pooler.processes: 16 processes cannot share pooler.defaultPoolSize 12: each "
        "PgBouncer process needs a server connection of its own (at most 12 processes)"
    ]


def test_processes_do_not_loosen_the_postgres_budget() -> None:
    with pytest.raises(ConfigError) as caught:
        spec("growth", processes=4, defaultPoolSize=47)
    assert [i.key for i in caught.value.issues] == ["sikka:pooler.defaultPoolSize"]


# ----------------------------------------------------------------- the container's supervisor

needs_sh = pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")

# Stands in for pgbouncer: says it started, and on SIGINT says so and exits (as PgBouncer's
# safe shutdown does once its transactions are done). Python, as PgBouncer, installs its own
# handler: a shell's background children start with SIGINT ignored, and a shell script could
# not trap it.
FAKE = """#!{python}
import os, signal, sys, time
def log(word):
    with open(os.environ["LOG"], "a") as f:
        f.write(f"{{word}} {{sys.argv[1]}}\\n")
def stop(*_):
    log("stopped")
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
log("started")
while True:
    time.sleep(0.1)
"""


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The supervisor over two fake PgBouncers, in a session of its own: whatever a test
    asserts, its processes are killed at the end (a failed test leaves none running)."""
    proc, log = _supervisor(tmp_path)
    try:
        yield proc, log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _supervisor(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pgbouncer"
    fake.write_text(FAKE.format(python=sys.executable))
    fake.chmod(0o755)
    log = tmp_path / "log"
    log.touch()
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log)}
    script = supervise_sh(["a.ini", "b.ini"])
    with (tmp_path / "stderr").open("wb") as stderr:
        proc = subprocess.Popen(
            ["sh", "-c", script], env=env, stderr=stderr, start_new_session=True
        )
    _wait_for(lambda: log.read_text().count("started") == 2)
    return proc, log


def _wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_one_process_alone_is_execed() -> None:
    assert supervise_sh(["/etc/pgbouncer/pgbouncer.ini"]) == (
        "exec pgbouncer /etc/pgbouncer/pgbouncer.ini\n"
    )


@needs_sh
def test_supervisor_forwards_sigint_to_every_process(
    supervisor: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, log = supervisor
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    assert sorted(log.read_text().splitlines()) == [
        "started a.ini",
        "started b.ini",
        "stopped a.ini",
        "stopped b.ini",
    ]


@needs_sh
def test_supervisor_stops_the_pooler_when_one_process_ends(
    supervisor: tuple[subprocess.Popen[bytes], Path], tmp_path: Path
) -> None:
    proc, log = supervisor
    children = subprocess.run(
        ["pgrep", "-P", str(proc.pid), "-f", "pgbouncer"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(children) == 2
    os.kill(int(children[0]), signal.SIGKILL)
    assert proc.wait(timeout=10) == 1
    assert "a pgbouncer process ended" in (tmp_path / "stderr").read_text()
    # The other one was asked to stop (SIGINT), not left serving alone.
    assert log.read_text().count("stopped") == 1


def test_kubernetes_sidecar_keeps_the_whole_pools() -> None:
    """StackGres runs one PgBouncer per PostgreSQL pod: nothing to divide there."""
    from scaling.kubernetes.postgres import pgbouncer_ini

    ini = pgbouncer_ini(spec("scale", processes=4))
    assert ini["default_pool_size"] == "85"
    assert ini["reserve_pool_size"] == "10"
    assert "so_reuseport" not in ini
