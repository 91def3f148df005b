"""Interrupting `sikka-scaling local up` while it starts a phase leaves nothing behind.

Each test runs the CLI as a subprocess in a session of its own (so a signal to its process
group is what Ctrl-C in a terminal sends), with its state under pytest's tmp dir, waits for
a progress line on stderr, then interrupts it:

- SIGINT, SIGINT twice (the second during the cleanup) and SIGTERM: the CLI stops what it
  started and removes its state, then exits 128 + the signal's number with one line;
- SIGKILL: nothing can run, so `local status` reports what was left (exit 1), `local up`
  refuses to start over it, and `local down` stops it.

"Nothing left" is checked three ways: by the pids seen while the run was starting (with their
start times), by the run's session (every process `up` starts is forked in it, see
scaling/local/keeper.py) and by a scan of every process for a command line that mentions the
run's folders; and the ports those processes listened on must not be held by any of them.
Every wait is bounded; the `tracker` fixture kills whatever a failing test left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from scaling.local import procs, runner
from scaling.local.keeper import Keeper
from scaling.local.state import STATE_FILE, ProcessEntry, RunState

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Generous bounds for a loaded 2-core machine: a progress line, the CLI's cleanup, a command.
PROGRESS_TIMEOUT = 240.0
EXIT_TIMEOUT = 180.0
COMMAND_TIMEOUT = 180.0


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "scaling.cli", "local", *args]


class Up:
    """`local up <stack>` running in a session of its own; stderr read line by line."""

    def __init__(self, stack: str, state_dir: Path) -> None:
        self.stack, self.state_dir = stack, state_dir
        self.proc = subprocess.Popen(
            cli("up", stack, "--state-dir", str(state_dir)),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._held = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_line(self, prefix: str, after: int = 0) -> int:
        """Index of the first stderr line from ``after`` on that starts with ``prefix``."""
        deadline = time.monotonic() + PROGRESS_TIMEOUT
        with self._changed:
            while True:
                for index in range(after, len(self.lines)):
                    if self.lines[index].startswith(prefix):
                        return index
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"`local up` exited before {prefix!r}: {self.lines}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {prefix!r} within {PROGRESS_TIMEOUT}s: {self.lines}")
                self._changed.wait(min(left, 1.0))

    def hold(self) -> None:
        """The CLI stopped where it is (SIGSTOP), so that what the test does before its
        interrupt cannot race the rest of the start (on a loaded machine `local up` may
        otherwise finish first); :meth:`interrupt` lets it go on, the signal pending."""
        self.proc.send_signal(signal.SIGSTOP)
        self._held = True

    def interrupt(self, sig: int, *, group: bool = True) -> None:
        """``sig`` to the CLI's process group (what a terminal sends), or to the CLI alone;
        a held CLI then goes on, and meets the signal first."""
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        if self._held and sig != signal.SIGKILL:
            self.proc.send_signal(signal.SIGCONT)
        self._held = False

    def finish(self) -> int:
        returncode = self.proc.wait(EXIT_TIMEOUT)
        self._reader.join(EXIT_TIMEOUT)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return returncode


class Tracker:
    """Everything the runs of one test started, found by pid, session and command line;
    :meth:`sweep` kills whatever is left (the teardown, even when the test failed)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ups: list[Up] = []
        self.seen: dict[int, float] = {}
        self.sessions: set[tuple[int, float | None]] = set()
        self.folders: set[str] = {str(root)}
        self.ports: set[tuple[str, int]] = set()

    def up(self, stack: str) -> Up:
        run = Up(stack, self.root / f"{stack}-state")
        self.ups.append(run)
        return run

    def observe(self, state_dir: Path) -> RunState | None:
        """Note the run's session, folders, processes and listening ports as they are now."""
        try:
            state = RunState.load(state_dir)
        except (OSError, ValueError):
            return None
        if state.session_id is not None:
            self.sessions.add((state.session_id, state.session_started))
        self.folders.update(state.extra_dirs)
        for proc in self.related():
            with contextlib.suppress(psutil.Error):
                self.seen[proc.pid] = proc.create_time()
                for conn in proc.net_connections(kind="inet"):
                    if conn.status == psutil.CONN_LISTEN:
                        self.ports.add((conn.laddr.ip, conn.laddr.port))
        return state

    def _ours(self, proc: psutil.Process) -> bool:
        try:
            if proc.pid in self.seen and abs(proc.create_time() - self.seen[proc.pid]) < 0.05:
                return True
            sid = os.getsid(proc.pid)
            if any(sid == s and proc.create_time() >= (t or 0) - 0.05 for s, t in self.sessions):
                return True
            command = " ".join(proc.cmdline())
        except (psutil.Error, ProcessLookupError, PermissionError):
            return False
        return any(folder in command for folder in self.folders)

    def related(self) -> list[psutil.Process]:
        """Live processes of the runs (and their descendants), never this test's own."""
        me = os.getpid()
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter():
            if proc.pid != me and self._ours(proc):
                found[proc.pid] = proc
                with contextlib.suppress(psutil.Error):
                    for child in proc.children(recursive=True):
                        found.setdefault(child.pid, child)
        return [p for p in found.values() if _live(p)]

    def left(self) -> list[str]:
        return [f"{p.pid} {procs.describe(p)}" for p in self.related()]

    def held_ports(self) -> list[tuple[str, int]]:
        """Ports a process of the runs listened on that one of them still holds."""
        listeners = {
            (c.laddr.ip, c.laddr.port): c.pid
            for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        }
        held = []
        for address in sorted(self.ports):
            pid = listeners.get(address)
            if pid is not None and self._ours(psutil.Process(pid)):
                held.append(address)
        return held

    def sweep(self) -> None:
        for run in self.ups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(run.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.finish()
            if (run.state_dir / STATE_FILE).exists():
                self.observe(run.state_dir)
                subprocess.run(
                    cli("down", run.stack, "--state-dir", str(run.state_dir)),
                    cwd=ROOT,
                    capture_output=True,
                    timeout=COMMAND_TIMEOUT,
                    check=False,
                )
        leftovers = self.related()
        for proc in leftovers:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(leftovers, timeout=10)


def _live(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[Tracker]:
    found = Tracker(tmp_path)
    try:
        yield found
    finally:
        found.sweep()


def assert_nothing_left(tracker: Tracker, state_dir: Path) -> None:
    assert tracker.seen, "the run was never seen running"
    assert tracker.left() == []
    assert tracker.held_ports() == []
    assert not state_dir.exists()
    assert not any(Path(folder).exists() for folder in tracker.folders - {str(tracker.root)})


def interrupted_line(run: Up, signame: str) -> str:
    last = run.lines[-1]
    assert last.startswith(f"local up {run.stack} interrupted by {signame} at "), run.lines
    assert not any(line.startswith("Traceback") for line in run.lines), run.lines
    return last


def test_sigint_while_starting_stops_everything(tracker: Tracker) -> None:
    run = tracker.up("launch")
    run.wait_line("[local] starting redis-0")
    run.hold()
    tracker.observe(run.state_dir)
    run.interrupt(signal.SIGINT)
    assert run.finish() == 128 + signal.SIGINT
    line = interrupted_line(run, "SIGINT")
    assert "stopped" in line and "postgres-0" in line and str(run.state_dir) in line
    assert_nothing_left(tracker, run.state_dir)


def test_a_second_sigint_does_not_abort_the_cleanup(tracker: Tracker) -> None:
    """Growth: etcd, the Patroni members, the routers and PgBouncers are up when the first
    Ctrl-C comes; the second comes while they are being stopped."""
    run = tracker.up("growth")
    run.wait_line("[local] starting redis-0")
    run.hold()
    tracker.observe(run.state_dir)
    run.interrupt(signal.SIGINT)
    first = run.wait_line("[local] interrupted by SIGINT")
    run.wait_line("[local] stopping ", after=first)
    run.interrupt(signal.SIGINT)
    assert run.finish() == 128 + signal.SIGINT
    line = interrupted_line(run, "SIGINT")
    for name in ("etcd-0", "postgres-0", "postgres-1", "postgres-2", "haproxy-0", "pgbouncer-0"):
        assert name in line
    assert_nothing_left(tracker, run.state_dir)


def test_sigterm_while_starting_stops_everything(tracker: Tracker) -> None:
    """`kill <pid>` of the CLI alone, as it starts the gateway."""
    run = tracker.up("launch")
    run.wait_line("[local] starting gateways")
    run.hold()
    tracker.observe(run.state_dir)
    run.interrupt(signal.SIGTERM, group=False)
    assert run.finish() == 128 + signal.SIGTERM
    line = interrupted_line(run, "SIGTERM")
    assert "postgres-0" in line and "redis-0" in line
    assert_nothing_left(tracker, run.state_dir)


def test_after_sigkill_status_reports_the_orphans_and_down_removes_them(
    tracker: Tracker,
) -> None:
    """kill -9 of the CLI as it starts the gateways (etcd x3, Patroni x3, HAProxy x2,
    PgBouncer x2, Redis x3 and three Sentinels are up, a gateway may be forked but not yet
    recorded)."""
    run = tracker.up("growth")
    run.wait_line("[local] starting gateways")
    run.interrupt(signal.SIGKILL, group=False)
    assert run.finish() == -signal.SIGKILL
    state = tracker.observe(run.state_dir)
    assert state is not None and not state.complete

    status = subprocess.run(
        cli("status", "growth", "--state-dir", str(run.state_dir), "--json"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert status.returncode == 1
    report = json.loads(status.stdout)
    assert report["interrupted"] and "local down growth" in report["interrupted"]
    alive = {row["pid"] for row in report["processes"] if row["alive"]}
    assert {row["name"] for row in report["processes"] if row["alive"]} >= {
        "postgres-0",
        "pgbouncer-0",
        "redis-0",
        "redis-sentinel-2",
    }
    # Every process of the run's session is reported: a recorded process, one of its
    # group (nginx workers, a Redis fork, a Patroni member's PID namespace launcher), the
    # keeper, or listed as not recorded.
    groups = alive | {os.getpgid(pid) for pid in alive if psutil.pid_exists(pid)}
    reported = alive | {row["pid"] for row in report["unrecorded"]} | {state.session_id}
    for proc in procs.session_processes(state):
        with contextlib.suppress(psutil.Error):
            assert proc.pid in reported or os.getpgid(proc.pid) in groups, procs.describe(proc)

    text = subprocess.run(
        cli("status", "growth", "--state-dir", str(run.state_dir)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert text.returncode == 1
    assert "interrupted run" in text.stderr and "postgres-0" in text.stdout

    again = subprocess.run(
        cli("up", "growth", "--state-dir", str(run.state_dir)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert again.returncode == 1
    assert "interrupted run" in again.stderr and "local down growth" in again.stderr
    assert RunState.load(run.state_dir).owner_pid == state.owner_pid  # nothing started over it

    down = subprocess.run(
        cli("down", "growth", "--state-dir", str(run.state_dir)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert down.returncode == 0, down.stderr
    assert "postgres-0" in down.stdout
    assert_nothing_left(tracker, run.state_dir)


def _orphaned_state(state_dir: Path, keeper: Keeper) -> RunState:
    state = RunState(
        stack="orphans",
        phase="launch",
        state_dir=str(state_dir),
        secrets_file=str(state_dir / "secrets.json"),
        session_id=keeper.session_id,
        session_started=keeper.create_time,
    )
    state.save()
    return state


def test_a_process_started_but_never_recorded_is_found_by_its_session(tmp_path: Path) -> None:
    """What a kill -9 between a spawn and its record leaves: a child of the run's keeper
    that no state entry names. `status` reports it, `down` stops it (and the keeper)."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    keeper = Keeper.start(state_dir, state_dir / "logs" / "keeper.log")
    recorded = ProcessEntry(
        name="recorded", role="test", tier="test", argv=["sleep", "60"], log=str(tmp_path / "r")
    )
    procs.spawn(recorded, {}, keeper=keeper)
    pid, started = keeper.spawn(
        ["sleep", "61"], env=procs.base_env(), log=str(tmp_path / "u"), cwd=None, ids=(None,) * 3
    )
    unrecorded = ProcessEntry(
        name="unrecorded", role="test", tier="test", argv=[], log="", pid=pid, create_time=started
    )
    try:
        keeper.detach()
        state = _orphaned_state(state_dir, keeper)
        state.processes.append(recorded)
        state.save()

        report = runner.status("orphans", state_dir=state_dir)
        assert [row["pid"] for row in report["unrecorded"]] == [pid]
        assert report["interrupted"] and "2 process(es)" in report["interrupted"]
        with pytest.raises(runner.AlreadyRunning, match="local down orphans"):
            runner.up(
                runner.load_spec(ROOT / "Pulumi.launch.yaml"), stack="orphans", state_dir=state_dir
            )

        rows = runner.down("orphans", state_dir=state_dir)
        assert [(r["name"], r["result"]) for r in rows if not r.get("unrecorded")] == [
            ("recorded", "stopped")
        ]
        assert [(r["pid"], r["result"]) for r in rows if r.get("unrecorded")] == [(pid, "stopped")]
        assert not procs.alive(recorded) and not procs.alive(unrecorded)
        assert not procs.is_running(keeper.pid, keeper.create_time)
        assert not state_dir.exists()
    finally:
        for entry in (recorded, unrecorded):
            procs.kill_now(entry)
        keeper.close(10)


def test_status_and_down_leave_a_run_that_is_still_starting_alone(tmp_path: Path) -> None:
    """An incomplete run whose `up` is alive (here: this test's process) is being started:
    `status` says so and `down` from another process refuses rather than pull it away."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    me = psutil.Process()
    RunState(
        stack="starting",
        phase="launch",
        state_dir=str(state_dir),
        secrets_file=str(state_dir / "secrets.json"),
        owner_pid=me.pid,
        owner_started=me.create_time(),
    ).save()
    status = subprocess.run(
        cli("status", "starting", "--state-dir", str(state_dir)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert status.returncode == 1 and f"`local up` (pid {me.pid})" in status.stdout
    down = subprocess.run(
        cli("down", "starting", "--state-dir", str(state_dir)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert down.returncode == 1 and "still starting" in down.stderr
    assert (state_dir / STATE_FILE).exists()


def test_interrupted_line_names_what_was_stopped_and_what_was_not() -> None:
    stopped = runner.Interrupted(signal.SIGTERM)
    stopped.part, stopped.state_dir = "redis-0", "/x/state"
    stopped.stopped = [
        {"name": "postgres-0", "pid": 1, "result": "stopped"},
        {"name": "sleep 60", "pid": 2, "result": "killed", "unrecorded": True},
    ]
    assert stopped.describe("launch") == (
        "local up launch interrupted by SIGTERM at redis-0: stopped 2 process(es) "
        "(postgres-0, 1 not recorded); removed /x/state"
    )
    stopped.stopped.append({"name": "redis-0", "pid": 3, "result": "still running"})
    stopped.hurried = True
    assert stopped.describe("launch").endswith(
        "(grace periods cut short by a second signal); could not stop redis-0 pid 3: state "
        "kept in /x/state, run `sikka-scaling local down launch`"
    )
