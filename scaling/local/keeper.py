"""The run's keeper: the one process that forks everything `local up` starts.

`local up` starts the keeper first, in a session of its own, and records that session (the
keeper's pid is its id) and the keeper's start time in the state file before it asks for any
child. Every server and every one-shot tool of the run (initdb, patroni --validate-config, the
Redis cluster script, ...) is then forked by the keeper, each in a process group of its own
inside that session. Whatever happens to the CLI afterwards — kill -9 between a spawn and its
record included — every process the run started can be found by the session id: `local
status` reports them and `local down` stops them. (PostgreSQL's backends leave for sessions
of their own, but they end with their postmaster, which stays in ours.)

The keeper stays while it has children, reaping them as an init would, and exits once the
CLI has closed its pipe and the last child is gone. Requests carry the children's
environment, secrets included: the keeper never logs them.

It runs as a script (``python -I keeper.py``) importing nothing from this project, so it
starts quickly and no project module runs in it. The same file holds the client,
:class:`Keeper`, which the local runner imports.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

# How often the keeper looks for exited children when no request arrives.
POLL_SECONDS = 0.2
READY_TIMEOUT = 60.0
SPAWN_TIMEOUT = 60.0
# Keeper processes this interpreter started: kept referenced, so that a keeper which outlives
# its client (it reaps the run's servers) never triggers "subprocess still running".
_STARTED: list[subprocess.Popen[bytes]] = []


class KeeperError(RuntimeError):
    pass


def reap() -> None:
    """Forget the keepers this interpreter started that have exited (reaping them)."""
    _STARTED[:] = [proc for proc in _STARTED if proc.poll() is None]


def started_at(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None


# ----------------------------------------------------------------------------- the keeper


def set_open_files(nofile: Sequence[int] | None) -> Callable[[], None] | None:
    """Popen's preexec_fn that gives the child the (soft, hard) open-file limit ``nofile``
    (scaling/local/limits.py), or None to leave it the inherited one."""
    if not nofile:
        return None
    soft, hard = nofile

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def _ids(request: dict[str, Any]) -> dict[str, Any]:
    """Popen's account switch: only present when the client switches accounts (as root)."""
    if request.get("uid") is None:
        return {}
    return {"user": request["uid"], "group": request["gid"], "extra_groups": request["groups"]}


def _spawn(request: dict[str, Any], children: dict[int, subprocess.Popen[bytes]]) -> dict[str, Any]:
    with open(request["log"], "ab") as log:
        child = subprocess.Popen(
            request["argv"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=request["env"],
            cwd=request.get("cwd"),
            close_fds=True,
            process_group=0,
            umask=request.get("umask", -1),
            preexec_fn=set_open_files(request.get("nofile")),
            **_ids(request),
        )
    children[child.pid] = child
    return {"pid": child.pid, "create_time": started_at(child.pid)}


def _run(request: dict[str, Any], children: dict[int, subprocess.Popen[bytes]]) -> dict[str, Any]:
    text = request.get("input")
    child = subprocess.Popen(
        request["argv"],
        stdin=subprocess.PIPE if text is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=request["env"],
        cwd=request.get("cwd"),
        close_fds=True,
        process_group=0,
        **_ids(request),
    )
    children[child.pid] = child
    timed_out = False
    try:
        out, err = child.communicate(
            text.encode() if text is not None else None, timeout=request["timeout"]
        )
    except subprocess.TimeoutExpired:
        timed_out = True
        # The tool's own children (the cluster script's redis-cli...) are in its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        out, err = child.communicate()
    return {
        "pid": child.pid,
        "returncode": child.returncode,
        "timed_out": timed_out,
        "stdout": out.decode(errors="replace"),
        "stderr": err.decode(errors="replace"),
    }


def _handle(line: bytes, children: dict[int, subprocess.Popen[bytes]]) -> dict[str, Any]:
    try:
        request = json.loads(line)
        if request["op"] == "spawn":
            return _spawn(request, children)
        if request["op"] == "run":
            return _run(request, children)
        return {"error": f"unknown request {request['op']!r}"}
    except Exception as error:  # reported to the client, which raises it there
        return {"error": f"{type(error).__name__}: {error}"}


def _reply(message: dict[str, Any]) -> bool:
    """Write one reply line; False once the client is gone."""
    data = (json.dumps(message) + "\n").encode()
    try:
        while data:
            data = data[os.write(1, data) :]
    except (BrokenPipeError, OSError):
        return False
    return True


def serve() -> int:
    # Nothing reaches this session from a terminal; a stray SIGINT/SIGHUP must not end the
    # reaper of a running phase. SIGTERM (what `local down` sends last) ends it.
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    children: dict[int, subprocess.Popen[bytes]] = {}
    connected = _reply(
        {"pid": os.getpid(), "sid": os.getsid(0), "create_time": started_at(os.getpid())}
    )
    pending = b""
    while connected or children:
        if connected:
            readable, _, _ = select.select([0], [], [], POLL_SECONDS)
            if readable:
                chunk = os.read(0, 1 << 16)
                connected = bool(chunk)
                pending += chunk
                while connected and b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    connected = _reply(_handle(line, children))
        else:
            time.sleep(POLL_SECONDS)
        for pid, child in list(children.items()):
            if child.poll() is not None:
                del children[pid]
    return 0


# ----------------------------------------------------------------------------- the client


class Keeper:
    """The CLI's handle on a run's keeper (see the module docstring)."""

    def __init__(self, proc: subprocess.Popen[bytes], ready: dict[str, Any]) -> None:
        self._proc = proc
        self.pid: int = int(ready["pid"])
        self.session_id: int = int(ready["sid"])
        self.create_time: float | None = ready.get("create_time")
        self._pending = b""
        self._broken = False

    @classmethod
    def start(cls, state_dir: Path, log: Path) -> Keeper:
        reap()
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as err:
            proc = subprocess.Popen(
                # -I: no PYTHON* variables, no user site, and not this folder on sys.path
                # (whose redis.py, state.py... would shadow libraries).
                [sys.executable, "-I", str(Path(__file__).resolve()), str(state_dir)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
        _STARTED.append(proc)
        try:
            keeper = cls(proc, {"pid": proc.pid, "sid": proc.pid})
            ready = keeper._receive(READY_TIMEOUT)
            keeper.session_id, keeper.create_time = int(ready["sid"]), ready.get("create_time")
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        return keeper

    def spawn(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        log: str,
        cwd: str | None,
        ids: tuple[int | None, int | None, list[int] | None],
        umask: int = -1,
        nofile: tuple[int, int] | None = None,
    ) -> tuple[int, float | None]:
        """Start a server in the run's session; returns (pid, start time)."""
        uid, gid, groups = ids
        reply = self._request(
            {
                "op": "spawn",
                "argv": argv,
                "env": env,
                "log": log,
                "cwd": cwd,
                "uid": uid,
                "gid": gid,
                "groups": groups,
                "umask": umask,
                "nofile": list(nofile) if nofile else None,
            },
            SPAWN_TIMEOUT,
        )
        return int(reply["pid"]), reply.get("create_time")

    def run(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: str | None,
        ids: tuple[int | None, int | None, list[int] | None],
        input_text: str | None,
        timeout: float,
    ) -> dict[str, Any]:
        """Run a tool in the run's session until it exits (killed after ``timeout``)."""
        uid, gid, groups = ids
        return self._request(
            {
                "op": "run",
                "argv": argv,
                "env": env,
                "cwd": cwd,
                "uid": uid,
                "gid": gid,
                "groups": groups,
                "input": input_text,
                "timeout": timeout,
            },
            timeout + SPAWN_TIMEOUT,
        )

    def detach(self) -> None:
        """No more requests: the keeper exits once the run's last process is gone."""
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._broken = True

    def close(self, timeout: float = 5.0) -> None:
        """Detach and wait for the keeper to leave (it does once it has no child left);
        kill it if it has not within ``timeout``. For a run that was stopped."""
        self.detach()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def _request(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self._broken or self._proc.stdin is None:
            raise KeeperError("the run's keeper no longer takes requests")
        # Until the reply is read, the pipe is in an unknown state: a request cut short (an
        # interrupt) leaves the keeper unusable, never half-read.
        self._broken = True
        try:
            self._proc.stdin.write((json.dumps(message) + "\n").encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as error:
            raise KeeperError(f"the run's keeper is gone ({error})") from None
        reply = self._receive(timeout)
        self._broken = False
        if "error" in reply:
            raise KeeperError(str(reply["error"]))
        return reply

    def _receive(self, timeout: float) -> dict[str, Any]:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KeeperError(f"the run's keeper did not answer within {timeout:.0f}s")
            readable, _, _ = select.select([fd], [], [], left)
            if readable:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise KeeperError("the run's keeper exited (see logs/keeper.log)")
                self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply


if __name__ == "__main__":
    sys.exit(serve())
