"""`local up / down / status`: orchestration of the tier starters and the state file.

`up` builds the phase's topology once (scaling.local.topology) and every tier starter
realises its nodes from it: process names are node names, roles node roles.
"""

from __future__ import annotations

import shutil
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from scaling.local import procs
from scaling.local.context import Context
from scaling.local.credentials import load_secrets, new_secrets, save_secrets
from scaling.local.gateway import start_gateways
from scaling.local.nginx import start_nginx
from scaling.local.ports import PortAllocator
from scaling.local.postgres import start_postgres
from scaling.local.redis import start_redis
from scaling.local.state import STATE_FILE, ProcessEntry, RunState, state_dir_for
from scaling.local.tokens import auth_summary, write_key
from scaling.local.topology import local_topology
from scaling.model import PhaseSpec
from scaling.render.pgbouncer import read_only_database
from scaling.stackconfig import (
    NAMESPACE,
    decode,
    deep_merge,
    parse,
    read_stack_file,
    stack_from_path,
)

PROJECT_DIR = Path(__file__).resolve().parents[2]
SECRETS_FILE = "secrets.json"

# `down` stops the tiers in the reverse order of `up`: clients before servers; within a
# tier (topology roles) watchers and poolers first, then replicas, then what they replicate.
_STOP_ORDER = {"nginx": 0, "gateway": 1, "redis": 2, "postgres": 3}
_ROLE_ORDER = {
    "proxy": 0,
    "gateway": 0,
    "sentinel": 0,
    "pooler": 0,
    "replica": 1,
    "cluster-replica": 1,
    "master": 2,
    "cluster-master": 2,
    "standalone": 2,
    "primary": 2,
}

Progress = Callable[[str], None]


class LocalUpError(RuntimeError):
    """`up` failed: names the part that failed and carries the tail of its log."""

    def __init__(self, part: str, reason: str, log_tail: str, log: str | None) -> None:
        self.part, self.reason, self.log_tail, self.log = part, reason, log_tail, log
        message = f"local up failed at {part}: {reason}"
        if log_tail:
            message += f"\n--- last lines of {log} ---\n{log_tail}"
        super().__init__(message)


class AlreadyRunning(RuntimeError):
    pass


def load_spec(stack_file: Path, overrides: Mapping[str, Any] | None = None) -> PhaseSpec:
    """A stack file's PhaseSpec with ``overrides`` (camelCase sections, e.g.
    ``{"pooler": {"defaultPoolSize": 5}}``) laid over it and validated like any stack."""
    values, secret_keys = read_stack_file(stack_file)
    for section, value in (overrides or {}).items():
        key = f"{NAMESPACE}:{section}"
        current = decode(values.get(key))
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            values[key] = deep_merge(current, value)
        elif isinstance(value, Mapping):
            values[key] = dict(value)
        else:
            values[key] = value
    return parse(values, stack=stack_from_path(stack_file), secret_keys=secret_keys)


def parse_set_options(items: list[str]) -> dict[str, Any]:
    """``["pooler.defaultPoolSize=5"]`` -> ``{"pooler": {"defaultPoolSize": 5}}``."""
    import yaml

    result: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected section.key=value")
        parts = key.split(".")
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = yaml.safe_load(raw)
    return result


class LocalRun:
    """A started run: its summary, and handles for tests (stop, start again, kill)."""

    def __init__(self, state: RunState, secrets: dict[str, str]) -> None:
        self.state = state
        self.secrets = secrets

    @classmethod
    def open(cls, state_dir: Path) -> LocalRun:
        state = RunState.load(state_dir)
        return cls(state, load_secrets(Path(state.secrets_file)))

    @property
    def summary(self) -> dict[str, Any]:
        return self.state.summary

    def entry(self, name: str) -> ProcessEntry:
        return self.state.entry(name)

    def alive(self, name: str) -> bool:
        return procs.alive(self.entry(name))

    def stop_process(self, name: str) -> str:
        return procs.stop(self.entry(name))

    def kill_process(self, name: str, sig: int = signal.SIGKILL) -> None:
        procs.kill_now(self.entry(name), sig)

    def start_process(self, name: str) -> ProcessEntry:
        """Start a stopped process again with the command it was first started with."""
        entry = self.entry(name)
        if procs.alive(entry):
            raise AlreadyRunning(f"{name} is already running (pid {entry.pid})")
        procs.spawn(entry, self.secrets)
        self._refresh_summary()
        self.state.save()
        return entry

    def _refresh_summary(self) -> None:
        self.state.summary["processes"] = _process_list(self.state)

    def down(self, *, keep: bool = False) -> list[dict[str, Any]]:
        return _teardown(self.state, keep=keep)


def _process_list(state: RunState) -> list[dict[str, Any]]:
    return [
        {
            "name": p.name,
            "role": p.role,
            "tier": p.tier,
            "pid": p.pid,
            "port": p.port,
            "host": p.host,
            "log": p.log,
        }
        for p in state.processes
    ]


def _stop_key(entry: ProcessEntry) -> tuple[int, int]:
    return _STOP_ORDER.get(entry.tier, 9), _ROLE_ORDER.get(entry.role, 1)


def _teardown(state: RunState, *, keep: bool) -> list[dict[str, Any]]:
    report = []
    for entry in sorted(state.processes, key=_stop_key):
        outcome = procs.stop(entry)
        report.append({"name": entry.name, "pid": entry.pid, "result": outcome})
    if not keep:
        for folder in state.extra_dirs:
            shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(state.state_dir, ignore_errors=True)
    return report


def _prepare_state_dir(stack: str, state_dir: Path) -> None:
    if (state_dir / STATE_FILE).exists():
        previous = RunState.load(state_dir)
        running = [p.name for p in previous.processes if procs.alive(p)]
        if running:
            raise AlreadyRunning(
                f"stack {stack!r} already runs from {state_dir} ({', '.join(running)}); "
                f"run `sikka-scaling local down {stack}` first"
            )
        _teardown(previous, keep=False)  # stale leftovers of a crashed run
    elif state_dir.exists() and any(state_dir.iterdir()):
        raise AlreadyRunning(f"{state_dir} exists and is not a local-runner state dir")
    state_dir.mkdir(parents=True, exist_ok=True)
    # 0711: other accounts (postgres) may pass through to their own folders, not list ours.
    state_dir.chmod(0o711)


def up(
    spec: PhaseSpec,
    *,
    stack: str | None = None,
    state_dir: Path | None = None,
    progress: Progress | None = None,
) -> LocalRun:
    """Start the phase's topology on 127.0.0.1 and wait until every part is healthy.

    On any failure everything started so far is stopped again and :class:`LocalUpError`
    names the part that failed, with the tail of its log.
    """
    stack = stack or spec.phase.value
    folder = state_dir_for(stack, state_dir)
    _prepare_state_dir(stack, folder)
    secrets = new_secrets()
    secrets_file = folder / SECRETS_FILE
    save_secrets(secrets_file, secrets)
    # The gateways' HS256 key on its own (0600), for `sikka-scaling token` and clients.
    key_file = (
        write_key(folder, secrets["gateway-jwt-secret"])
        if spec.gateway.auth.shared_secret
        else None
    )
    state = RunState(
        stack=stack, phase=spec.phase.value, state_dir=str(folder), secrets_file=str(secrets_file)
    )
    state.save()
    ctx = Context(
        spec=spec,
        state=state,
        secrets=secrets,
        ports=PortAllocator(),
        topology=local_topology(spec),
        progress=progress or (lambda message: None),
    )
    try:
        postgres = start_postgres(ctx)
        redis = start_redis(ctx)
        ctx.begin("gateways")
        gateways = start_gateways(ctx, redis, str(PROJECT_DIR))
        nginx = start_nginx(ctx)
    except BaseException as error:
        tail = procs.log_tail(ctx.part_log) if ctx.part_log else ""
        _teardown(state, keep=False)
        if isinstance(error, KeyboardInterrupt):
            raise
        raise LocalUpError(
            ctx.part, str(error) or type(error).__name__, tail, ctx.part_log
        ) from error

    pg = spec.postgres

    def url(endpoint: object, database: str = pg.database) -> str:
        return f"postgresql://{pg.user}@{endpoint}/{database}"

    state.summary = {
        "stack": stack,
        "phase": spec.phase.value,
        "state_dir": str(folder),
        "secrets_file": str(secrets_file),
        "nginx": nginx.summary(),
        "gateways": [g.summary() for g in gateways],
        "gateway_auth": auth_summary(spec, key_file),
        "postgres": {
            "mode": "replicated" if postgres.replicas else "single",
            "spec_mode": pg.mode,
            "primary": url(postgres.primary),
            "replicas": [url(r) for r in postgres.replicas],
            "pooler": url(postgres.pooler) if postgres.pooler else None,
            "pooler_read_only": url(postgres.pooler, read_only_database(spec))
            if postgres.pooler and postgres.replicas
            else None,
        },
        "database": {"name": pg.database, "user": pg.user},
        "redis": redis.summary(),
        "processes": _process_list(state),
        "logs": str(ctx.log_dir),
        "notes": ctx.notes,
    }
    state.complete = True
    state.save()
    return LocalRun(state, secrets)


def down(stack: str, *, state_dir: Path | None = None, keep: bool = False) -> list[dict[str, Any]]:
    """Stop exactly the processes `up` recorded for ``stack`` (never anything else)."""
    folder = state_dir_for(stack, state_dir)
    if not (folder / STATE_FILE).exists():
        raise FileNotFoundError(f"no local run of {stack!r} recorded in {folder}")
    return _teardown(RunState.load(folder), keep=keep)


def status(stack: str, *, state_dir: Path | None = None) -> dict[str, Any]:
    folder = state_dir_for(stack, state_dir)
    if not (folder / STATE_FILE).exists():
        return {"stack": stack, "state_dir": str(folder), "running": False, "processes": []}
    state = RunState.load(folder)
    rows = []
    for p in state.processes:
        rows.append(
            {"name": p.name, "role": p.role, "pid": p.pid, "port": p.port, "alive": procs.alive(p)}
        )
    return {
        "stack": stack,
        "phase": state.phase,
        "state_dir": str(folder),
        "complete": state.complete,
        "running": any(r["alive"] for r in rows),
        "all_alive": bool(rows) and all(r["alive"] for r in rows),
        "processes": rows,
        "summary": state.summary,
    }


def print_progress(message: str) -> None:
    print(f"[local] {message}", file=sys.stderr, flush=True)
