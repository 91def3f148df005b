"""Going back after the cut-over, on real servers: growth → launch (`--force`: backwards) by
the same mechanism as launch → growth, in reverse, while the load harness
(transition_load.py) writes rows and Redis keys and keeps WebSocket clients subscribed
through launch's Nginx (the clients' URL throughout: retired launch's Nginx fronts growth).

One chain for the module: launch is started and moved to growth (no load: this leg is
test_transition_local.py's); launch's run stays, retired; then
1. growth → launch with launch's PostgreSQL killed as final-sync begins: rolled back, growth
   (a Patroni source, its replicas stopped by freeze-source) serves writes again, nothing
   acknowledged is lost, and launch is retired again on its own retired data;
2. without a retired run (another folder), `up` itself starts launch as growth's standby;
3. growth → launch: the retired run starts again as growth's replica (its data set aside):
   its single PostgreSQL from a base backup of growth's read-write door as a hot standby,
   replaying growth's final checkpoint, promoted with pg_promote(); its Redis replicates
   growth's master, then takes over; launch's Nginx gets its own upstream back and growth's
   fronts launch's gateways. Rows acknowledged == present, keys acknowledged == present,
   the longest gaps between acknowledged writes under 5 s.

Every figure is printed (run with -s) and appended to the transition log as a
``client-load`` report.
"""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from local_fixtures import ROOT
from support.transition import LOCAL_STEPS as STEPS
from transition_load import Load, PhaseDoors, assert_gaps, assert_nothing_lost, report

from scaling.local import LocalRun, runner
from scaling.local.follow import Follow
from scaling.local.postgres import REPLICATION_PASSFILE, standby_streams
from scaling.local.state import STATE_FILE
from scaling.model import SUPERUSER
from scaling.render.endpoints import Endpoint
from scaling.transition import local_data, local_front, service

pytestmark = [pytest.mark.integration, pytest.mark.serial]

LOAD_BEFORE = 3.0  # seconds of load before the transition starts, and after it ends


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """launch up, moved to growth; launch's run stays, retired, its Nginx fronting growth."""
    base = tmp_path_factory.mktemp("reverse") / "state"
    spec = runner.load_spec(ROOT / "Pulumi.launch.yaml")
    runner.up(spec, stack="launch", state_dir=base / "launch", progress=runner.print_progress)
    try:
        forward = service.execute(
            "growth",
            from_stack="launch",
            local=True,
            state_root=base,
            progress=runner.print_progress,
        )
        assert forward.success, forward.message
        yield base
    finally:
        for stack in ("launch", "growth"):
            if (base / stack / STATE_FILE).exists():
                LocalRun.open(base / stack).down()


def _back(root: Path, progress: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """growth → launch --force under load: (the result document, the load's figures)."""
    growth = LocalRun.open(root / "growth")
    launch = LocalRun.open(root / "launch")
    doors = PhaseDoors([root / "growth", root / "launch"])
    load = Load(
        pg_urls=doors.pg_urls,
        pg_password=growth.secrets["postgres-password"],
        redis_endpoints=doors.redis_endpoints,
        redis_password=growth.secrets["redis-password"],
        ws_url=str(launch.summary["nginx"]["ws_url"]),
        jwt_secret=growth.secrets["gateway-jwt-secret"],
        subscribers=4,
        duration=900,
    )
    load.start()
    try:
        time.sleep(LOAD_BEFORE)
        result = service.execute(
            "launch",
            from_stack="growth",
            force=True,
            local=True,
            state_root=root,
            progress=progress,
        ).as_dict()
        time.sleep(LOAD_BEFORE)
    finally:
        load.stop()
    figures = load.results()
    figures["transition_writes_stopped_seconds"] = result["measurements"].get(
        "writesStoppedSeconds"
    )
    report("growth → launch", result, figures)
    return result, figures


def _steps_logged(root: Path, transition: str | None) -> dict[str, str]:
    events = service.transitions("launch", state_root=root)
    return {
        str(e["step"]): str(e.get("outcome"))
        for e in events
        if e.get("transition") == transition and e.get("event") == "end"
    }


def _standby_files(launch: LocalRun) -> dict[str, Any]:
    """How launch's standby keeps the replication password: its password file's mode and
    owner, and whether the password shows in its postgresql.auto.conf or its log."""
    entry = launch.entry("postgres-0")
    passfile = Path(str(entry.cwd)) / REPLICATION_PASSFILE
    password = launch.secrets["replication-password"]
    auto = (Path(str(entry.data_dir)) / "postgresql.auto.conf").read_text()
    info = passfile.stat()
    return {
        "mode": oct(info.st_mode & 0o777),
        "owner": pwd.getpwuid(info.st_uid).pw_name,
        "conninfo_names_the_file": f"passfile={passfile}" in auto,
        "password_in_auto_conf": password in auto,
        "password_in_log": password in Path(str(entry.log)).read_text(),
    }


def _retired_data(root: Path) -> dict[str, Any]:
    """Launch's retired PostgreSQL data: where, and its last checkpoint."""
    entry = LocalRun.open(root / "launch").entry("postgres-0")
    control = local_data.controldata(str(entry.data_dir))
    return {
        "data_dir": entry.data_dir,
        "checkpoint": control["Latest checkpoint location"],
        "state": control["Database cluster state"],
        "standby_signal": (Path(str(entry.data_dir)) / "standby.signal").exists(),
    }


def test_a_failed_way_back_rolls_back_and_growth_keeps_serving(root: Path) -> None:
    retired = _retired_data(root)
    assert retired["state"] == "shut down" and not retired["standby_signal"], retired
    killed: list[str] = []
    standby: dict[str, Any] = {}

    def progress(message: str) -> None:
        runner.print_progress(message)
        if message.startswith("final-sync:") and not killed:
            standby.update(_standby_files(LocalRun.open(root / "launch")))
            LocalRun.open(root / "launch").kill_process("postgres-0")
            killed.append("postgres-0")
            runner.print_progress("test: killed launch's postgres-0 (SIGKILL)")

    result, figures = _back(root, progress)
    assert killed, "final-sync never began"
    assert standby == {
        "mode": "0o600",
        "owner": "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name,
        "conninfo_names_the_file": True,
        "password_in_auto_conf": False,
        "password_in_log": False,
    }, standby
    assert result["outcome"] == "rolled-back", result["message"]
    assert result["failedStep"] == "final-sync", result
    assert_nothing_lost(figures)
    growth = LocalRun.open(root / "growth")
    assert all(growth.alive(e.name) for e in growth.state.processes)
    assert local_front.fronted_stack(growth) is None
    # Launch is retired again, on its own retired data, its Nginx still fronting growth.
    launch = LocalRun.open(root / "launch")
    assert "retired" in launch.summary and "revived" not in launch.summary
    assert [e.name for e in launch.state.processes if launch.alive(e.name)] == ["nginx"]
    assert local_front.fronted_stack(launch) == "growth"
    assert _retired_data(root) == retired
    assert not list(Path(str(retired["data_dir"])).parent.glob("data.retired-*"))
    logged = _steps_logged(root, result["transition"])
    assert logged.get("rollback:unfreeze-source") == "ok", logged


def test_a_new_launch_run_starts_as_growth_s_standby(
    root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Without a retired run to start again (`local down launch` after the forward move),
    `up` itself starts launch as growth's replica: the same base backup and hot standby."""
    growth = LocalRun.open(root / "growth")
    spec = runner.load_spec(ROOT / "Pulumi.launch.yaml")
    folder = tmp_path_factory.mktemp("fresh-launch") / "launch"
    run = runner.up(spec, stack="launch", state_dir=folder, follow=Follow.of(growth))
    try:
        entry = run.entry("postgres-0")
        assert standby_streams(
            Endpoint(entry.host, int(entry.port or 0)), run.secrets["postgres-superuser-password"]
        )
        assert any(
            n.startswith("postgres: postgres-0 follows growth") for n in run.summary["notes"]
        )
        assert _standby_files(run)["mode"] == "0o600"
        assert run.summary["follows"]["stack"] == "growth"
    finally:
        run.down()


def test_growth_back_to_launch_carries_every_write(root: Path) -> None:
    result, figures = _back(root, runner.print_progress)
    assert result["success"], result["message"]
    assert_nothing_lost(figures)
    launch = LocalRun.open(root / "launch")
    # The keys ended on launch's Redis, the rows on launch's single server, which is a
    # primary now and no longer reaches growth (no conninfo, no password file).
    redis_node = urlsplit(str(launch.summary["redis"]["url"])).netloc.rpartition("@")[2]
    assert figures["redis_masters"][-1].endswith(redis_node), figures["redis_masters"]
    entry = launch.entry("postgres-0")
    with psycopg.connect(
        host=entry.host,
        port=entry.port,
        user=SUPERUSER,
        dbname="postgres",
        password=launch.secrets["postgres-superuser-password"],
        autocommit=True,
    ) as conn:
        row = conn.execute("SELECT pg_is_in_recovery(), current_setting('primary_conninfo')")
        assert row.fetchone() == (False, "")
    assert not (Path(str(entry.cwd)) / REPLICATION_PASSFILE).exists()
    # Launch's own max_connections is below growth's: a standby needs its primary's.
    assert any(n.startswith("postgres: postgres-0 follows growth") for n in launch.summary["notes"])
    logged = _steps_logged(root, result["transition"])
    assert [s for s in STEPS if logged.get(s) != "ok"] == [], logged
    # Launch's retired data is set aside, kept; its Nginx fronts its own gateways again.
    assert len(list(Path(str(entry.data_dir)).parent.glob("data.retired-*"))) == 1
    assert "retired" not in launch.summary and "revived" not in launch.summary
    assert local_front.fronted_stack(launch) is None
    assert all(launch.alive(e.name) for e in launch.state.processes)
    # Growth is retired; its Nginx stays, fronting launch's gateways.
    growth = LocalRun.open(root / "growth")
    assert growth.alive("nginx") and local_front.fronted_stack(growth) == "launch"
    assert not any(growth.alive(e.name) for e in growth.state.processes if e.tier == "postgres")
    # The WebSocket clients, on launch's Nginx throughout, were drained from growth's
    # gateways (1001) and reconnected to launch's.
    ws = figures["ws"]
    assert ws["close_codes"].get("1001", 0) >= ws["subscribers"], ws
    assert ws["connected_at_stop"] == ws["subscribers"], ws
    assert_gaps(figures)
