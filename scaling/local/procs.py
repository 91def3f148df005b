"""Process supervision: start detached, recognise by (pid, start time), stop politely.

Every process is started as the leader of a process group of its own (a session of its own
when started directly, a group inside the run's session when started by the run's keeper,
scaling/local/keeper.py), so what it forks (nginx workers, a tool's helpers) can be found and
stopped with it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import psutil

from scaling.local import limits, pidns
from scaling.local.keeper import Keeper, KeeperError, set_open_files
from scaling.local.state import ProcessEntry, RunState

# Popen objects of the children this interpreter started: polling them reaps a child that
# died (a zombie would otherwise look alive), and keeping them referenced avoids
# "subprocess still running" warnings while the run is up.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}

BASE_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "TZ")

# Tells a stop to cut its grace periods short (a second interrupt during a cleanup).
Hurry = Callable[[], bool]
# The grace a process still gets once a stop is hurried, before it is killed.
HURRIED_GRACE = 2.0
# Processes that were not recorded (the run's session swept by `down`): SIGTERM, then this.
STRAY_GRACE = 10.0


def never() -> bool:
    return False


def running_as_root() -> bool:
    return os.geteuid() == 0


def account(user: str | None) -> pwd.struct_passwd | None:
    """The account to run as: only switched when we are root (PostgreSQL refuses root)."""
    if user is None or not running_as_root():
        return None
    return pwd.getpwnam(user)


def base_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in BASE_ENV_KEYS if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    return env


def _ids(user: str | None) -> tuple[int | None, int | None, list[int] | None]:
    """(uid, gid, supplementary groups) for Popen: all None unless we switch accounts."""
    acct = account(user)
    if acct is None:
        return None, None, None
    return acct.pw_uid, acct.pw_gid, []


def run_tool(
    argv: list[str],
    *,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    timeout: float = 60.0,
    cwd: str | None = None,
    log: str | None = None,
    keeper: Keeper | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a short-lived tool (initdb, psql, redis-cli...) and fail with its output, which
    is also appended to ``log`` when given. With ``keeper`` the tool runs in the run's
    session (so a kill -9 of the CLI cannot hide it), else as a child of this process."""
    full_env = base_env()
    acct = account(user)
    if acct is not None:
        full_env["HOME"] = acct.pw_dir
    full_env.update(env or {})
    uid, gid, groups = _ids(user)
    if keeper is not None:
        result = _run_in_session(keeper, argv, full_env, user, input_text, timeout, cwd, log)
    else:
        try:
            result = subprocess.run(
                argv,
                input=input_text,
                capture_output=True,
                text=True,
                env=full_env,
                timeout=timeout,
                cwd=cwd,
                check=False,
                user=uid,
                group=gid,
                extra_groups=groups,
            )
        except subprocess.TimeoutExpired as expired:
            output = _text(expired.stdout) + _text(expired.stderr)
            _append(log, output)
            raise _timed_out(argv, timeout, output) from None
    output = result.stdout + result.stderr
    _append(log, output)
    if result.returncode != 0:
        raise RuntimeError(
            f"{Path(argv[0]).name} exited {result.returncode}: {output.strip()[-2000:]}"
        )
    return result


def _run_in_session(
    keeper: Keeper,
    argv: list[str],
    env: dict[str, str],
    user: str | None,
    input_text: str | None,
    timeout: float,
    cwd: str | None,
    log: str | None,
) -> subprocess.CompletedProcess[str]:
    try:
        reply = keeper.run(
            argv, env=env, cwd=cwd, ids=_ids(user), input_text=input_text, timeout=timeout
        )
    except KeeperError as error:
        if "FileNotFoundError" in str(error):
            raise FileNotFoundError(str(error)) from None
        raise
    if reply["timed_out"]:
        output = reply["stdout"] + reply["stderr"]
        _append(log, output)
        raise _timed_out(argv, timeout, output)
    return subprocess.CompletedProcess(argv, reply["returncode"], reply["stdout"], reply["stderr"])


def _timed_out(argv: list[str], timeout: float, output: str) -> RuntimeError:
    return RuntimeError(
        f"{Path(argv[0]).name} did not finish within {timeout:.0f}s: {output.strip()[-2000:]}"
    )


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def _append(log: str | None, output: str) -> None:
    if log is not None:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as out:
            out.write(output)


def spawn(entry: ProcessEntry, secrets: Mapping[str, str], *, keeper: Keeper | None = None) -> None:
    """Start ``entry`` detached (it outlives the CLI), output appended to its log: forked by
    ``keeper`` in the run's session, else in a new session of its own."""
    env = base_env()
    acct = account(entry.user)
    if acct is not None:
        env["HOME"] = acct.pw_dir
    env.update(entry.env)
    for variable, secret in entry.secret_env.items():
        env[variable] = secrets[secret]
    Path(entry.log).parent.mkdir(parents=True, exist_ok=True)
    # Sentinel rewrites its config (auth-pass, requirepass) and Redis its AOF: files the
    # servers create must stay private like the ones we write.
    umask = 0o077
    nofile = None
    if entry.open_files:
        limits.raise_hard_limit(entry.open_files)
        nofile = limits.limit_for(entry.open_files)
    if keeper is not None:
        entry.pid, entry.create_time = keeper.spawn(
            entry.argv,
            env=env,
            log=entry.log,
            cwd=entry.cwd,
            ids=_ids(entry.user),
            umask=umask,
            nofile=nofile,
        )
        _record_namespace_init(entry)
        return
    uid, gid, groups = _ids(entry.user)
    with open(entry.log, "ab") as log:
        proc = subprocess.Popen(
            entry.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=entry.cwd,
            start_new_session=True,
            close_fds=True,
            user=uid,
            group=gid,
            extra_groups=groups,
            umask=umask,
            preexec_fn=set_open_files(nofile),
        )
    _CHILDREN[proc.pid] = proc
    entry.pid = proc.pid
    try:
        entry.create_time = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:
        entry.create_time = None
    _record_namespace_init(entry)


def _record_namespace_init(entry: ProcessEntry) -> None:
    """For a server started in a PID namespace, record its PID 1 instead of the launcher."""
    if entry.pid_namespace and entry.pid is not None:
        entry.pid, entry.create_time = pidns.namespace_init(entry.pid)


def _reap() -> None:
    """Reap the children of this interpreter that exited (a PID namespace's launcher leaves
    when its namespace ends; nothing else would collect it)."""
    for pid, child in list(_CHILDREN.items()):
        if child.poll() is not None:
            _CHILDREN.pop(pid, None)


def is_running(pid: int | None, create_time: float | None) -> bool:
    """Whether ``pid`` is alive and still the process that started at ``create_time``."""
    if pid is None:
        return False
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.05:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def process_of(entry: ProcessEntry) -> psutil.Process | None:
    """The live process ``entry`` started, or None (gone, zombie, or a recycled pid)."""
    if entry.pid is None:
        return None
    _reap()
    child = _CHILDREN.get(entry.pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(entry.pid, None)
        return None
    try:
        proc = psutil.Process(entry.pid)
        if entry.create_time is not None and abs(proc.create_time() - entry.create_time) > 0.05:
            return None  # the pid now belongs to someone else
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.NoSuchProcess:
        return None


def alive(entry: ProcessEntry) -> bool:
    return process_of(entry) is not None


def _wait_gone(entry: ProcessEntry, timeout: float, hurry: Hurry = never) -> bool:
    """Wait until ``entry`` is gone; a hurried wait ends at most HURRIED_GRACE from then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(entry):
            return True
        if hurry():
            deadline = min(deadline, time.monotonic() + HURRIED_GRACE)
        time.sleep(0.05)
    return not alive(entry)


def kill_now(entry: ProcessEntry, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the process itself (tests use this to simulate a crash)."""
    proc = process_of(entry)
    if proc is not None:
        os.kill(proc.pid, sig)


def _live(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _members(key: Callable[[int], int], leader: int, since: float | None) -> list[psutil.Process]:
    """Live processes other than ``leader`` whose ``key`` (getpgid, getsid) is ``leader``,
    started no earlier than it (so a recycled id is not mistaken)."""
    members = []
    for proc in psutil.process_iter(["pid", "create_time"]):
        try:
            if proc.pid == leader or key(proc.pid) != leader:
                continue
        except (ProcessLookupError, PermissionError):
            continue
        created = proc.info["create_time"]
        if since is not None and (created is None or created < since - 0.05):
            continue
        if _live(proc):
            members.append(proc)
    return members


def group_members(entry: ProcessEntry) -> list[psutil.Process]:
    """Processes left in the process group ``entry`` leads (its group id is its pid): e.g.
    nginx workers whose master was killed with -9."""
    if entry.pid is None:
        return []
    return _members(os.getpgid, entry.pid, entry.create_time)


def session_processes(state: RunState) -> list[psutil.Process]:
    """Every live process of the run's session, its keeper included: everything `up`
    started through the keeper and what those forked without leaving the session."""
    sid, started = state.session_id, state.session_started
    if sid is None:
        return []
    try:
        leader = psutil.Process(sid)
        if started is not None and abs(leader.create_time() - started) > 0.05:
            # The id was given to another process: it is never reused while a process of
            # the session is left, so none is.
            return []
        leaders = [leader] if _live(leader) else []
    except psutil.NoSuchProcess:
        leaders = []
    return leaders + _members(os.getsid, sid, started)


def strays(state: RunState) -> list[psutil.Process]:
    """Processes of the run's session that are no recorded process, nor in the group of a
    live one, nor the keeper: the run started them but never recorded them (a kill -9 of
    the CLI between a spawn and its record, a tool it was running), or they outlived the
    recorded process that forked them."""
    recorded = {p.pid for p in state.processes if p.pid is not None and alive(p)}
    # A server in a PID namespace shares its launcher's group (scaling.local.pidns).
    for pid in list(recorded):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            recorded.add(os.getpgid(pid))
    found = []
    for proc in session_processes(state):
        try:
            if proc.pid == state.session_id or os.getpgid(proc.pid) in recorded:
                continue
        except (ProcessLookupError, PermissionError):
            continue
        found.append(proc)
    return found


def keeper_process(state: RunState) -> psutil.Process | None:
    if state.session_id is None or not is_running(state.session_id, state.session_started):
        return None
    return psutil.Process(state.session_id)


def describe(proc: psutil.Process) -> str:
    """``name`` or ``name: command line`` of a process, for reports."""
    try:
        words = " ".join(proc.cmdline()).split()
        return " ".join(words)[:80] or proc.name()
    except psutil.Error:
        return f"pid {proc.pid}"


def terminate(
    processes: Iterable[psutil.Process], grace: float = STRAY_GRACE, hurry: Hurry = never
) -> dict[int, str]:
    """SIGTERM ``processes``, SIGKILL them after ``grace`` and then whatever they forked that
    is still there; pid -> "stopped" | "killed" | "still running"."""
    targets = [p for p in processes if _live(p)]
    outcome = {p.pid: "stopped" for p in targets}
    # Seen before the signal: a server stops its own children, the rest are killed after it.
    family = _with_descendants(targets)
    for proc in targets:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    for proc in _wait_procs(targets, grace, hurry):
        outcome[proc.pid] = "killed"
    left = [p for p in family if _live(p)]
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
    for proc in _wait_procs(left, 5.0, never):
        if proc.pid in outcome:
            outcome[proc.pid] = "still running"
    return outcome


def _with_descendants(processes: Iterable[psutil.Process]) -> list[psutil.Process]:
    """The processes and all their descendants (PostgreSQL's backends leave the postmaster's
    session and group, not its tree)."""
    found: dict[int, psutil.Process] = {}
    for proc in processes:
        found[proc.pid] = proc
        with contextlib.suppress(psutil.Error):
            for child in proc.children(recursive=True):
                found.setdefault(child.pid, child)
    return list(found.values())


def _wait_procs(
    processes: list[psutil.Process], timeout: float, hurry: Hurry
) -> list[psutil.Process]:
    """Wait until every process is gone (or a zombie); returns those still alive."""
    deadline = time.monotonic() + timeout
    left = [p for p in processes if _live(p)]
    while left and time.monotonic() < deadline:
        if hurry():
            deadline = min(deadline, time.monotonic() + HURRIED_GRACE)
        time.sleep(0.05)
        left = [p for p in left if _live(p)]
    return left


def _stop_leftovers(entry: ProcessEntry, family: Iterable[psutil.Process] = ()) -> int:
    """SIGTERM, then SIGKILL, what remains of the process group and of ``family`` (the
    descendants seen before the stop); returns how many there were."""
    leftovers = {p.pid: p for p in group_members(entry)}
    for proc in family:
        if proc.pid != entry.pid and _live(proc):
            leftovers.setdefault(proc.pid, proc)
    found = list(leftovers.values())
    remaining = found
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not remaining:
            break
        for proc in remaining:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(sig)
        _, remaining = psutil.wait_procs(remaining, timeout=3)
    return len(found)


def stop(entry: ProcessEntry, hurry: Hurry = never) -> str:
    """Stop one process and whatever is left of its group and of what it forked; returns
    what happened ("stopped", "killed", "still running", "not running", "left-overs
    stopped"). Once ``hurry()`` is true, grace periods end HURRIED_GRACE later."""
    proc = process_of(entry)
    if proc is None:
        return "left-overs stopped" if _stop_leftovers(entry) else "not running"
    family = _with_descendants([proc])
    if entry.stop == "pg_ctl" and entry.data_dir and not hurry():
        with contextlib.suppress(Exception):
            run_tool(
                [
                    pg_bin("pg_ctl"),
                    "stop",
                    "-D",
                    entry.data_dir,
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    str(int(entry.stop_timeout)),
                ],
                user=entry.user,
                timeout=entry.stop_timeout + 5,
            )
    else:
        # SIGINT is PostgreSQL's fast shutdown (what pg_ctl -m fast sends), without waiting
        # for pg_ctl's own timeout; SIGTERM is every other server's clean stop.
        polite = signal.SIGINT if entry.stop == "pg_ctl" else signal.SIGTERM
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, polite)
    if _wait_gone(entry, entry.stop_timeout, hurry):
        _stop_leftovers(entry, family)
        return "stopped"
    # Still there: kill its whole group (it leads one), so no worker is left behind.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGKILL)
    gone = _wait_gone(entry, 5)
    _stop_leftovers(entry, family)
    return "killed" if gone else "still running"


PG_BIN_DIRS = (
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
)


def pg_bin(tool: str) -> str:
    """PostgreSQL's server tools are not on PATH on Debian; $PG_BIN overrides."""
    override = os.environ.get("PG_BIN")
    dirs = (override,) if override else PG_BIN_DIRS
    for folder in dirs:
        if folder and Path(folder, tool).exists():
            return str(Path(folder, tool))
    return tool


def log_tail(path: str | Path, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
