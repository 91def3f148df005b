"""Process supervision: `down` leaves nothing of a session behind, even when its leader
was killed with -9 and left children (as nginx leaves its workers)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from scaling.local import procs
from scaling.local.state import ProcessEntry

pytestmark = pytest.mark.integration

# A leader that starts two children and waits: killing the leader orphans them.
FAMILY = (
    "import subprocess, time; [subprocess.Popen(['sleep', '60']) for _ in range(2)]; time.sleep(60)"
)


def _family(tmp_path: Path) -> ProcessEntry:
    entry = ProcessEntry(
        name="family",
        role="test",
        tier="test",
        argv=[sys.executable, "-c", FAMILY],
        log=str(tmp_path / "family.log"),
    )
    procs.spawn(entry, {})
    deadline = time.monotonic() + 10
    while len(procs.group_members(entry)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return entry


def test_children_of_a_killed_leader_are_stopped(tmp_path: Path) -> None:
    entry = _family(tmp_path)
    children = procs.group_members(entry)
    assert len(children) == 2
    assert entry.pid is not None
    os.kill(entry.pid, signal.SIGKILL)
    time.sleep(0.2)
    assert procs.stop(entry) == "left-overs stopped"
    assert not any(
        child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children
    )


def test_a_live_leader_is_stopped_with_its_children(tmp_path: Path) -> None:
    entry = _family(tmp_path)
    children = procs.group_members(entry)
    assert procs.stop(entry) == "stopped"
    assert procs.group_members(entry) == []
    assert not any(
        child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children
    )


@pytest.mark.parametrize("through_keeper", [False, True])
def test_a_child_starts_with_the_open_files_it_needs(tmp_path: Path, through_keeper: bool) -> None:
    """The soft open-file limit is raised to the entry's need, directly and in the run's
    session (the keeper forks it); the hard limit stays."""
    import resource

    from scaling.local.keeper import Keeper

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    keeper = Keeper.start(tmp_path, tmp_path / "keeper.log") if through_keeper else None
    try:
        need = min(hard, 4096)
        entry = ProcessEntry(
            name="limits",
            role="test",
            tier="test",
            argv=[sys.executable, "-c", "import resource, time; time.sleep(30)"],
            log=str(tmp_path / "limits.log"),
            open_files=need,
        )
        procs.spawn(entry, {}, keeper=keeper)
        assert entry.pid is not None
        assert psutil.Process(entry.pid).rlimit(psutil.RLIMIT_NOFILE) == (need, hard)
        procs.stop(entry)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        if keeper is not None:
            keeper.close()
