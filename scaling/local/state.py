"""The per-stack state directory and the state file listing every process a run started."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_ENV = "SIKKA_STATE_DIR"
STATE_FILE = "state.json"
# What a phase transition keeps in its target's state folder (scaling/transition): its log,
# its lock and the target's rendered configs. They outlive the run's processes: `up`
# starts beside them and `down` (or a rollback's) leaves them where they are.
TRANSITION_FILES = ("transitions.jsonl", "transition.lock", "rendered")


def state_dir_for(stack: str, explicit: Path | None = None) -> Path:
    """``explicit``, else ``$SIKKA_STATE_DIR/<stack>``, else ``./.sikka/local/<stack>``."""
    if explicit is not None:
        return explicit.resolve()
    root = os.environ.get(STATE_ENV)
    base = Path(root) if root else Path.cwd() / ".sikka" / "local"
    return (base / stack).resolve()


def remove_state_dir(folder: Path | str) -> None:
    """Remove a run's state folder, but for a transition's files (TRANSITION_FILES)."""
    path = Path(folder)
    if not any((path / name).exists() for name in TRANSITION_FILES):
        shutil.rmtree(path, ignore_errors=True)
        return
    for child in list(path.iterdir()):
        if child.name in TRANSITION_FILES:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


@dataclass
class ProcessEntry:
    """One started process: how to start it again, and how to recognise and stop it."""

    name: str
    role: str
    tier: str
    argv: list[str]
    log: str
    host: str = "127.0.0.1"
    port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    # Environment variable -> secret name (postgres-password, ...), resolved at start.
    secret_env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    cwd: str | None = None
    stop: str = "signal"  # "signal" (SIGTERM then SIGKILL) or "pg_ctl" (pg_ctl stop -m fast)
    data_dir: str | None = None  # for pg_ctl
    stop_timeout: float = 10.0
    # Started through scaling.local.pidns: pid is PID 1 of its PID namespace (the launcher's
    # child), so one kill ends the whole server, as a container's death does.
    pid_namespace: bool = False
    # Soft open-file limit it starts with (scaling/render/limits.py); None: inherited.
    open_files: int | None = None
    pid: int | None = None
    create_time: float | None = None


@dataclass
class RunState:
    stack: str
    phase: str
    state_dir: str
    secrets_file: str
    processes: list[ProcessEntry] = field(default_factory=list)
    # Directories outside state_dir this run created (removed by `down` unless --keep).
    extra_dirs: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    complete: bool = False
    # The process running `up` (pid, start time). While it lives, an incomplete run is still
    # starting; once it is gone, an incomplete run was cut short without its cleanup (kill -9,
    # a crash): what it left running is orphaned until `down`.
    owner_pid: int | None = None
    owner_started: float | None = None
    # The run's session: every process `up` starts is forked in it by the run's keeper, whose
    # pid is the session id. Recorded before the keeper forks anything, so a process started
    # but not yet recorded in `processes` is still found by its session.
    session_id: int | None = None
    session_started: float | None = None

    @property
    def path(self) -> Path:
        return Path(self.state_dir) / STATE_FILE

    def entry(self, name: str) -> ProcessEntry:
        for process in self.processes:
            if process.name == name:
                return process
        raise KeyError(f"no process named {name!r} in this run")

    def save(self) -> None:
        path = self.path
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: Path) -> RunState:
        data = json.loads((state_dir / STATE_FILE).read_text())
        processes = [ProcessEntry(**p) for p in data.pop("processes", [])]
        return cls(processes=processes, **data)
