"""Process supervision: start detached, recognise by (pid, start time), stop politely."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from scaling.local.state import ProcessEntry

# Popen objects of the children this interpreter started: polling them reaps a child that
# died (a zombie would otherwise look alive), and keeping them referenced avoids
# "subprocess still running" warnings while the run is up.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}

BASE_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "TZ")


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
) -> subprocess.CompletedProcess[str]:
    """Run a short-lived tool (initdb, psql, redis-cli...) and fail with its output, which
    is also appended to ``log`` when given."""
    full_env = base_env()
    acct = account(user)
    if acct is not None:
        full_env["HOME"] = acct.pw_dir
    full_env.update(env or {})
    uid, gid, groups = _ids(user)
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
        raise RuntimeError(
            f"{Path(argv[0]).name} did not finish within {timeout:.0f}s: {output.strip()[-2000:]}"
        ) from None
    output = result.stdout + result.stderr
    _append(log, output)
    if result.returncode != 0:
        raise RuntimeError(
            f"{Path(argv[0]).name} exited {result.returncode}: {output.strip()[-2000:]}"
        )
    return result


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def _append(log: str | None, output: str) -> None:
    if log is not None:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as out:
            out.write(output)


def spawn(entry: ProcessEntry, secrets: Mapping[str, str]) -> None:
    """Start ``entry`` in a new session (it outlives the CLI), output appended to its log."""
    env = base_env()
    acct = account(entry.user)
    if acct is not None:
        env["HOME"] = acct.pw_dir
    env.update(entry.env)
    for variable, secret in entry.secret_env.items():
        env[variable] = secrets[secret]
    Path(entry.log).parent.mkdir(parents=True, exist_ok=True)
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
            # Sentinel rewrites its config (auth-pass, requirepass) and Redis its AOF: files
            # the servers create must stay private like the ones we write.
            umask=0o077,
        )
    _CHILDREN[proc.pid] = proc
    entry.pid = proc.pid
    try:
        entry.create_time = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:
        entry.create_time = None


def process_of(entry: ProcessEntry) -> psutil.Process | None:
    """The live process ``entry`` started, or None (gone, zombie, or a recycled pid)."""
    if entry.pid is None:
        return None
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


def _wait_gone(entry: ProcessEntry, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(entry):
            return True
        time.sleep(0.05)
    return not alive(entry)


def kill_now(entry: ProcessEntry, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the process itself (tests use this to simulate a crash)."""
    proc = process_of(entry)
    if proc is not None:
        os.kill(proc.pid, sig)


def session_members(entry: ProcessEntry) -> list[psutil.Process]:
    """Processes left in the session ``entry`` led (it was started as a session leader, so
    the session id is its pid): e.g. nginx workers whose master was killed with -9. Only
    processes started after the leader count, so a recycled session id is not mistaken."""
    if entry.pid is None:
        return []
    members = []
    for proc in psutil.process_iter(["pid", "create_time"]):
        try:
            if proc.pid == entry.pid or os.getsid(proc.pid) != entry.pid:
                continue
        except (ProcessLookupError, PermissionError):
            continue
        created = proc.info["create_time"]
        if entry.create_time is None or (created is not None and created >= entry.create_time):
            members.append(proc)
    return members


def _stop_leftovers(entry: ProcessEntry) -> int:
    """SIGTERM, then SIGKILL, what remains of the session; returns how many there were."""
    leftovers = session_members(entry)
    found = len(leftovers)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not leftovers:
            break
        for proc in leftovers:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(sig)
        _, leftovers = psutil.wait_procs(leftovers, timeout=3)
    return found


def stop(entry: ProcessEntry) -> str:
    """Stop one process and whatever is left of its session; returns what happened
    ("stopped", "killed", "not running", "left-overs stopped")."""
    proc = process_of(entry)
    if proc is None:
        return "left-overs stopped" if _stop_leftovers(entry) else "not running"
    if entry.stop == "pg_ctl" and entry.data_dir:
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
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
    if _wait_gone(entry, entry.stop_timeout):
        _stop_leftovers(entry)
        return "stopped"
    # Still there: kill its whole session (it leads one), so no worker is left behind.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGKILL)
    _wait_gone(entry, 5)
    _stop_leftovers(entry)
    return "killed"


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
