"""Growth phase under Patroni: PostgreSQL fails over by itself, and no acknowledged write is
lost.

One run for the whole module. A writer thread inserts numbered rows through the summary's
pooler URL (the application's front door: both PgBouncers, libpq tries them in order), one
autocommit INSERT each, reconnecting after any error; a row counts as acknowledged once its
INSERT returned. Each scenario, in order, reports its figures (printed, and written to a
JSON file whose path is printed): (a) kill -9 of the leader, (b) the killed member restarted,
(c) kill -9 of one PgBouncer, (d) a switchover, (e) kill -9 of one etcd member.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from local_helpers import Phase, pg_connect, wait_for

from scaling.local import patroni_api
from scaling.local.patroni import patroni_tool
from scaling.local.runner import patroni_apis
from scaling.local.state import RunState
from scaling.render.patroni import REST_API_USER

pytestmark = [pytest.mark.integration, pytest.mark.destructive]

TABLE = "failover_writes"
PROMOTION_TIMEOUT = 60.0
RESUME_TIMEOUT = 30.0
REJOIN_TIMEOUT = 90.0


class Writer:
    """Inserts 1, 2, 3... through ``url``; remembers when each INSERT was acknowledged."""

    def __init__(self, phase: Phase, url: str) -> None:
        self.phase, self.url = phase, url
        self.acked: list[tuple[int, float]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _connect(self) -> psycopg.Connection[Any]:
        return pg_connect(
            self.phase, self.url, autocommit=True, prepare_threshold=None, connect_timeout=2
        )

    def _run(self) -> None:
        number = 0
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            number += 1
            try:
                if conn is None:
                    conn = self._connect()
                conn.execute(f"INSERT INTO {TABLE} (n) VALUES (%s)", (number,))
            except psycopg.Error:
                self.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
                continue
            with self._lock:
                self.acked.append((number, time.monotonic()))
            time.sleep(0.01)
        if conn is not None:
            conn.close()

    def snapshot(self) -> list[tuple[int, float]]:
        with self._lock:
            return list(self.acked)

    def last_ack(self) -> float:
        acked = self.snapshot()
        return acked[-1][1] if acked else 0.0

    def longest_gap(self, since: float, until: float) -> float:
        """The longest time without an acknowledgement between ``since`` and ``until``."""
        times = [since, *(t for _, t in self.snapshot() if since < t < until), until]
        return max(b - a for a, b in itertools.pairwise(times))


@pytest.fixture(scope="module")
def phase(growth_phase: Phase) -> Phase:
    """The session's growth phase (conftest.py): every test here is destructive (the leader
    changes), so they run after the tests that leave it as found, before
    test_local_growth.py's own destructive ones and its `down`."""
    return growth_phase


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    found: dict[str, Any] = {}
    yield found
    path = tmp_path_factory.mktemp("failover") / "failover-figures.json"
    path.write_text(json.dumps(found, indent=2) + "\n")
    print(f"\n[growth] failover figures: {path}\n{json.dumps(found, indent=2)}")


@pytest.fixture(scope="module")
def writer(phase: Phase) -> Iterator[Writer]:
    with pg_connect(phase, phase.summary["postgres"]["primary"], autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (n bigint PRIMARY KEY, at timestamptz DEFAULT now())"
        )
    running = Writer(phase, phase.summary["postgres"]["pooler"])
    running.start()
    wait_for("the writer's first acknowledged row", lambda: bool(running.snapshot()), 20)
    yield running
    running.stop()


def cluster(phase: Phase) -> dict[str, Any]:
    found = patroni_api.fetch_cluster(patroni_apis(phase.run.state))
    assert found is not None, "no Patroni member answers"
    return found


def leader(phase: Phase) -> str | None:
    return patroni_api.leader(patroni_api.fetch_cluster(patroni_apis(phase.run.state)))


def members(phase: Phase) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in patroni_api.members(cluster(phase))}


def wait_resumed(writer: Writer, after: float) -> float:
    """Seconds from ``after`` to the first acknowledgement after it (writes resumed)."""
    wait_for("writes resume", lambda: writer.last_ack() > after, RESUME_TIMEOUT, 0.05)
    return next(t for _, t in writer.snapshot() if t > after) - after


def check_rows(phase: Phase, writer: Writer) -> dict[str, int]:
    """Every acknowledged row is in the database (read through the read-write door)."""
    acked = [n for n, _ in writer.snapshot()]
    with pg_connect(phase, phase.summary["postgres"]["primary"]) as conn:
        row = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE n = ANY(%s)", (acked,)).fetchone()
        total = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
    present = int(row[0]) if row else 0
    assert present == len(acked), f"{len(acked) - present} acknowledged rows are missing"
    return {"acknowledged": len(acked), "present": present, "rows_in_table": int(total[0])}


def report(figures: dict[str, Any], scenario: str, values: dict[str, Any]) -> None:
    figures[scenario] = values
    shown = ", ".join(
        f"{k} {v:.2f}s" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()
    )
    print(f"\n[growth] {scenario}: {shown}")


def rejoin_method(log: str) -> str:
    """How Patroni brought a former leader back, from its log since the restart."""
    if "Removing data directory" in log:
        return "reinit (new base backup)"
    if "running pg_rewind" in log:
        return "pg_rewind"
    return "none needed"


def pid_namespace_members(pid: int) -> list[int]:
    """Processes of the PID namespace ``pid`` is PID 1 of (PostgreSQL included)."""
    import psutil

    namespace = Path(f"/proc/{pid}/ns/pid").readlink()
    found = []
    for proc in psutil.process_iter():
        try:
            if Path(f"/proc/{proc.pid}/ns/pid").readlink() == namespace:
                found.append(proc.pid)
        except OSError:
            continue
    return found


def test_leader_killed_a_replica_takes_over(
    phase: Phase, writer: Writer, figures: dict[str, Any]
) -> None:
    old = leader(phase)
    assert old is not None
    entry = phase.run.entry(old)
    assert entry.pid is not None
    server = pid_namespace_members(entry.pid)
    assert len(server) > 3, "the member's PostgreSQL runs in its PID namespace"
    wait_for("a few rows acknowledged", lambda: len(writer.snapshot()) > 20, 10)
    phase.run.kill_process(old)
    killed = time.monotonic()
    promoted = wait_for(
        "a replica is promoted",
        lambda: (
            leader(phase) not in (None, old)
            and members(phase)[str(leader(phase))]["state"] == "running"
        ),
        PROMOTION_TIMEOUT,
        0.1,
    )
    wait_for(
        "the killed member's PostgreSQL is gone too",
        lambda: not any(_alive(pid) for pid in server),
        10,
    )
    resumed = wait_resumed(writer, killed)
    time.sleep(1)
    rows = check_rows(phase, writer)
    report(
        figures,
        "a_kill_leader",
        {
            "killed": old,
            "new_leader": leader(phase),
            "promotion": promoted,
            "writes_resumed_after": resumed,
            "longest_gap": writer.longest_gap(killed - 1, time.monotonic()),
            **rows,
        },
    )


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_killed_member_rejoins_as_a_replica(
    phase: Phase, writer: Writer, figures: dict[str, Any]
) -> None:
    killed = next(
        e.name
        for e in phase.run.state.processes
        if e.role in ("primary", "replica") and not phase.run.alive(e.name)
    )
    log = Path(phase.run.entry(killed).log)
    offset = log.stat().st_size
    started = time.monotonic()
    # As an operator brings it back: `sikka-scaling local start <stack> <node>`.
    folder = Path(phase.run.state.state_dir)
    command = [sys.executable, "-m", "scaling.cli", "local", "start", "growth", killed]
    result = subprocess.run(
        [*command, "--state-dir", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"{killed}" in result.stdout and "started" in result.stdout
    phase.run.state = RunState.load(folder)  # the pid the command recorded
    rejoined = wait_for(
        f"{killed} streams as a replica",
        lambda: members(phase).get(killed, {}).get("state") == "streaming",
        REJOIN_TIMEOUT,
        0.2,
    )
    assert members(phase)[killed]["role"] in ("replica", "sync_standby")
    how = rejoin_method(log.read_text(errors="replace")[offset:])
    rows = check_rows(phase, writer)
    report(
        figures,
        "b_restart_killed_member",
        {
            "member": killed,
            "streaming_after_restart": rejoined,
            "since_start_call": time.monotonic() - started,
            "how": how,
            **rows,
        },
    )


def test_pgbouncer_killed_writes_continue_through_the_other(
    phase: Phase, writer: Writer, figures: dict[str, Any]
) -> None:
    poolers = [e for e in phase.run.state.processes if e.role == "pooler"]
    assert len(poolers) == 2 * phase.spec.pooler.processes
    # The URL's first host (where the writer is connected): every process of that pooler.
    first = poolers[0]
    victims = [e.name for e in poolers if (e.host, e.port) == (first.host, first.port)]
    assert len(victims) == phase.spec.pooler.processes
    victim = first.name
    for name in victims:
        phase.run.kill_process(name)
    killed = time.monotonic()
    resumed = wait_resumed(writer, killed)
    time.sleep(1)
    gap = writer.longest_gap(killed - 1, time.monotonic())
    rows = check_rows(phase, writer)
    for name in victims:
        phase.run.start_process(name)
    report(
        figures,
        "c_kill_pgbouncer",
        {"killed": victim, "writes_resumed_after": resumed, "longest_gap": gap, **rows},
    )


def test_switchover_hands_the_lead_over(
    phase: Phase, writer: Writer, figures: dict[str, Any]
) -> None:
    wait_for(
        "every member streams before the switchover",
        lambda: patroni_api.healthy(cluster(phase), list(members(phase))),
        REJOIN_TIMEOUT,
    )
    old = leader(phase)
    current = members(phase)
    candidate = next(name for name, m in sorted(current.items()) if m["role"] == "sync_standby")
    config = Path(str(phase.run.entry(str(old)).cwd)) / "patroni.yml"
    started = time.monotonic()
    result = subprocess.run(
        [
            patroni_tool("patronictl"),
            "-c",
            str(config),
            "switchover",
            "--leader",
            str(old),
            "--candidate",
            candidate,
            "--force",
        ],
        env={
            "PATH": "/usr/bin:/bin",
            "PATRONI_RESTAPI_USERNAME": REST_API_USER,
            "PATRONI_RESTAPI_PASSWORD": phase.run.secrets["patroni-api-password"],
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    wait_for(f"{candidate} leads", lambda: leader(phase) == candidate, PROMOTION_TIMEOUT, 0.1)
    switched = time.monotonic() - started
    wait_resumed(writer, time.monotonic())
    time.sleep(1)
    gap = writer.longest_gap(started - 1, time.monotonic())
    rows = check_rows(phase, writer)
    report(
        figures,
        "d_switchover",
        {
            "from": old,
            "to": candidate,
            "switchover_took": switched,
            "longest_gap": gap,
            **rows,
        },
    )


def test_etcd_member_killed_nothing_happens(
    phase: Phase, writer: Writer, figures: dict[str, Any]
) -> None:
    before = leader(phase)
    victim = "etcd-2"
    phase.run.kill_process(victim)
    killed = time.monotonic()
    changes = []
    while time.monotonic() - killed < 8:
        now = leader(phase)
        if now != before:
            changes.append(now)
        time.sleep(0.2)
    assert not changes, f"the leader changed after one etcd member died: {changes}"
    wait_resumed(writer, time.monotonic())
    gap = writer.longest_gap(killed, time.monotonic())
    rows = check_rows(phase, writer)
    phase.run.start_process(victim)
    report(
        figures,
        "e_kill_etcd_member",
        {"killed": victim, "leader_unchanged": before, "longest_gap": gap, **rows},
    )
    # Two members keep the quorum: Patroni never notices, the writes never stop.
    assert gap < 5.0


def test_etcd_lost_entirely_the_leader_keeps_writing(
    phase: Phase, writer: Writer, figures: dict[str, Any]
) -> None:
    """Every etcd member down for longer than the leader's lock lives: Patroni's failsafe
    mode keeps the leader leading (every member still answers it), so writes go on, and the
    cluster carries on once etcd is back."""
    before = leader(phase)
    api = next(m["api"] for m in phase.summary["postgres"]["members"] if m["name"] == before)
    etcd = [e.name for e in phase.run.state.processes if e.role == "dcs"]
    for name in etcd:
        phase.run.kill_process(name)
    killed = time.monotonic()
    outage = phase.spec.postgres.leader_ttl_seconds + 10
    while time.monotonic() - killed < outage:
        time.sleep(0.5)
    gap = writer.longest_gap(killed, time.monotonic())
    still_primary = httpx.get(f"{api}/primary", timeout=2).status_code
    for name in etcd:
        phase.run.start_process(name)
    back = wait_for(
        "the cluster back on etcd with the same leader",
        lambda: leader(phase) == before,
        RESUME_TIMEOUT,
        0.2,
    )
    rows = check_rows(phase, writer)
    report(
        figures,
        "f_lose_every_etcd_member",
        {
            "killed": etcd,
            "outage": outage,
            "leader_unchanged": before,
            "longest_gap": gap,
            "cluster_back_after_restart": back,
            **rows,
        },
    )
    assert still_primary == 200
    assert gap < 5.0
