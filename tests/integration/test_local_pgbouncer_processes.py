"""Several PgBouncer processes per pooler, for real: the launch phase with its pooler on and
``pooler.processes = 2``. Both processes listen on the one address (so_reuseport), both serve
clients, each is recorded for `local status` and `down`, and killing one leaves the address
serving through the other."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import psutil
import pytest
from local_fixtures import start_phase
from local_helpers import Phase, pg_connect, wait_for

from scaling.local import runner
from scaling.local.state import ProcessEntry

pytestmark = pytest.mark.integration

PROCESSES = 2
CLIENTS = 24


@pytest.fixture(scope="module")
def phase(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phase]:
    overrides = {"pooler": {"enabled": True, "processes": PROCESSES}}
    yield from start_phase("launch", tmp_path_factory, overrides)


def poolers(phase: Phase) -> list[ProcessEntry]:
    return [e for e in phase.run.state.processes if e.role == "pooler"]


def logins(entry: ProcessEntry) -> int:
    """Client logins to the application database this process's log records."""
    text = Path(entry.log).read_text(errors="replace")
    return len(re.findall(r"login attempt: db=sikka user=sikka", text))


def test_each_process_is_recorded_on_the_shared_address(phase: Phase) -> None:
    entries = poolers(phase)
    assert [e.name for e in entries] == ["pgbouncer", "pgbouncer.1"]
    assert len({(e.host, e.port) for e in entries}) == 1
    assert len({e.pid for e in entries}) == PROCESSES
    assert len({e.log for e in entries}) == PROCESSES
    report = runner.status(phase.run.state.stack, state_dir=Path(phase.run.state.state_dir))
    rows = {p["name"]: p["alive"] for p in report["processes"]}
    assert rows["pgbouncer"] is True and rows["pgbouncer.1"] is True
    for entry in entries:
        ini = Path(entry.argv[1]).read_text()
        assert "so_reuseport = 1\n" in ini
        # launch: defaultPoolSize 12 and reserve 3 split between the two processes.
        assert "pool_size=6" in ini


def test_both_processes_serve_clients(phase: Phase) -> None:
    entries = poolers(phase)
    before = [logins(e) for e in entries]
    url = phase.summary["postgres"]["pooler"]
    # Held open at once: each is a new connection the kernel hands to one of the listeners.
    with ExitStack() as stack:
        conns = [
            stack.enter_context(pg_connect(phase, url, autocommit=True)) for _ in range(CLIENTS)
        ]
        for conn in conns:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    wait_for(
        "every PgBouncer process logged some of the logins",
        lambda: all(logins(e) > b for e, b in zip(entries, before, strict=True)),
        10,
    )
    after = [logins(e) for e in entries]
    assert sum(after) - sum(before) >= CLIENTS


def test_killing_one_process_leaves_the_address_serving(phase: Phase) -> None:
    entries = poolers(phase)
    victim, survivor = entries
    phase.run.kill_process(victim.name)
    wait_for("the killed process is gone", lambda: not phase.run.alive(victim.name), 10)
    url = phase.summary["postgres"]["pooler"]
    # A connection that reached the killed process's listener as it died is reset by the
    # kernel (its accept queue goes with it: seen as the first connection after the kill, in
    # 3 runs of 4); clients retry, so the address must serve again within a few seconds, and
    # then every client.
    wait_for("the shared address serves again", lambda: _serves(phase, url), 5)
    for _ in range(CLIENTS):
        with pg_connect(phase, url, autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert psutil.pid_exists(int(survivor.pid or 0))
    phase.run.start_process(victim.name)
    assert phase.run.alive(victim.name)
    with pg_connect(phase, url, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def _serves(phase: Phase, url: str) -> bool:
    """One client served (wait_for counts a failed connection as not yet)."""
    with pg_connect(phase, url, autocommit=True) as conn:
        return conn.execute("SELECT 1").fetchone() == (1,)


def test_down_stops_every_process(phase: Phase) -> None:
    names = [e.name for e in poolers(phase)]
    report = {row["name"]: row["result"] for row in phase.run.down()}
    for name in names:
        assert name in report
        assert not phase.run.alive(name)
