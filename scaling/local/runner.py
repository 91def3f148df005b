"""`local up / down / status`: orchestration of the tier starters and the state file.

`up` builds the phase's topology once (scaling.local.topology) and every tier starter
realises its nodes from it: process names are node names, roles node roles.

Interrupts: while `up` runs, SIGINT, SIGTERM and SIGHUP stop everything it started and remove
its state (:class:`Interrupted` says what was stopped); a further signal during that cleanup
only cuts its grace periods short. A kill -9 leaves no chance to clean up: the state file
then names the `up` that died (`owner_pid`) and the session its processes were forked in, so
`status` reports what was left, `up` refuses to start over it and `down` stops it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import psutil

from scaling.local import keeper as keepers
from scaling.local import limits, patroni_api, procs
from scaling.local.context import Context
from scaling.local.credentials import (
    inherited_secrets,
    load_secrets,
    new_secrets,
    save_secrets,
)
from scaling.local.follow import Follow
from scaling.local.gateway import GatewayInstance, start_gateways
from scaling.local.keeper import Keeper
from scaling.local.monitoring import MonitoringEndpoints, start_monitoring
from scaling.local.nginx import NginxEndpoints, start_nginx
from scaling.local.pgsummary import postgres_summary
from scaling.local.ports import PortAllocator
from scaling.local.postgres import PostgresEndpoints, start_postgres
from scaling.local.redis import RedisEndpoints, start_redis
from scaling.local.state import (
    STATE_FILE,
    TRANSITION_FILES,
    ProcessEntry,
    RunState,
    remove_state_dir,
    state_dir_for,
)
from scaling.local.tokens import auth_summary, write_key
from scaling.local.topology import local_spec, local_topology
from scaling.model import POOLER_ADMIN_USER, SUPERUSER, PhaseSpec
from scaling.stackconfig import (
    NAMESPACE,
    decode,
    deep_merge,
    parse,
    read_stack_document,
    stack_from_path,
)

PROJECT_DIR = Path(__file__).resolve().parents[2]
SECRETS_FILE = "secrets.json"

# `down` stops the tiers in the reverse order of `up`: clients before servers; within a
# tier (topology roles) watchers, poolers and routers first, then replicas, then what they
# replicate (under Patroni: whoever leads when `down` runs), and the DCS they lock in last.
# Prometheus and its exporters go first: they only read the others (and a server gone
# before its exporter would only fill the exporter's log).
_STOP_ORDER = {"monitoring": -1, "nginx": 0, "gateway": 1, "redis": 2, "postgres": 3}
_ROLE_ORDER = {
    "prometheus": 0,
    "exporter": 1,
    "proxy": 0,
    "gateway": 0,
    "sentinel": 0,
    "pooler": 0,
    "router": 0,
    "replica": 1,
    "cluster-replica": 1,
    "master": 2,
    "cluster-master": 2,
    "standalone": 2,
    "primary": 2,
    "dcs": 3,
}
# Patroni members: the topology says which one bootstraps, Patroni who leads now.
_PATRONI_ROLES = ("primary", "replica")

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


class UpInProgress(AlreadyRunning):
    """`up` is still starting the stack (its process is alive)."""


class Interrupted(KeyboardInterrupt):
    """`up` was interrupted by a signal and stopped what it had started.

    ``stopped`` is the cleanup's report (one row per process, as `down` gives); ``removed``
    says whether the state folder is gone (it is kept when something could not be stopped).
    """

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.part = "setup"
        self.stopped: list[dict[str, Any]] = []
        self.state_dir: str | None = None
        self.removed = True
        self.hurried = False

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    def describe(self, stack: str) -> str:
        """One line: what was interrupted, what was stopped, what is left."""
        text = f"local up {stack} interrupted by {self.signal_name} at {self.part}: "
        done = [r for r in self.stopped if r["result"] != "still running"]
        left = [r for r in self.stopped if r["result"] == "still running"]
        named = [r["name"] for r in done if not r.get("unrecorded")]
        unrecorded = len(done) - len(named)
        if done:
            listed = ", ".join(named + ([f"{unrecorded} not recorded"] if unrecorded else []))
            text += f"stopped {len(done)} process(es) ({listed})"
        else:
            text += "nothing had been started yet"
        if self.hurried:
            text += " (grace periods cut short by a second signal)"
        if left:
            names = ", ".join(f"{r['name']} pid {r['pid']}" for r in left)
            text += (
                f"; could not stop {names}: state kept in {self.state_dir}, "
                f"run `sikka-scaling local down {stack}`"
            )
        elif self.state_dir:
            text += f"; removed {self.state_dir}"
        return text


_INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _InterruptGuard:
    """While `up` runs: the first SIGINT/SIGTERM/SIGHUP raises :class:`Interrupted` (the
    caller then cleans up); every later one, and any during a cleanup, only asks the cleanup
    to hurry. Signals the caller ignores (nohup, a background job) stay ignored. Only the
    main thread can handle signals: elsewhere this does nothing."""

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self._armed = True
        self.hurry_requested = False

    def __enter__(self) -> _InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in _INTERRUPTS:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._armed:
            self._armed = False
            raise Interrupted(signum)
        self.hurry_requested = True

    def disarm(self) -> None:
        """A cleanup starts, or the run is complete: from now on a signal raises nothing."""
        self._armed = False

    def hurried(self) -> bool:
        return self.hurry_requested


def load_spec(stack_file: Path, overrides: Mapping[str, Any] | None = None) -> PhaseSpec:
    """A stack file's PhaseSpec with ``overrides`` (camelCase sections, e.g.
    ``{"pooler": {"defaultPoolSize": 5}}``) laid over it and validated like any stack."""
    document = read_stack_document(stack_file)
    values = document.config
    for section, value in (overrides or {}).items():
        key = f"{NAMESPACE}:{section}"
        current = decode(values.get(key))
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            values[key] = deep_merge(current, value)
        elif isinstance(value, Mapping):
            values[key] = dict(value)
        else:
            values[key] = value
    return parse(
        values,
        stack=stack_from_path(stack_file),
        secret_keys=document.secret_keys,
        found=document.issues,
    )


def parse_set_options(items: list[str]) -> dict[str, Any]:
    """``["pooler.defaultPoolSize=5"]`` -> ``{"pooler": {"defaultPoolSize": 5}}``."""
    from scaling.stackyaml import load_value

    result: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected section.key=value")
        parts = key.split(".")
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ValueError(f"--set {item!r}: {part} was set to a value above")
        try:
            target[parts[-1]] = load_value(raw)  # read as a stack file's value would be
        except ValueError as error:
            raise ValueError(f"--set {item!r}: {error}") from None
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


def stop_key(entry: ProcessEntry, leader: str | None = None) -> tuple[int, int]:
    """Where ``entry`` comes in `down`'s order; ``leader``: the Patroni member leading now
    (None when no member answers: the recorded roles decide then)."""
    role = entry.role
    if leader is not None and entry.tier == "postgres" and role in _PATRONI_ROLES:
        role = "primary" if entry.name == leader else "replica"
    return _STOP_ORDER.get(entry.tier, 9), _ROLE_ORDER.get(role, 1)


def patroni_apis(state: RunState) -> list[str]:
    """The REST APIs of the run's Patroni members (from its summary)."""
    members = state.summary.get("postgres", {}).get("members", [])
    return [str(m["api"]) for m in members]


def _current_leader(state: RunState) -> str | None:
    apis = patroni_apis(state)
    return patroni_api.leader(patroni_api.fetch_cluster(apis)) if apis else None


def _teardown(
    state: RunState,
    *,
    keep: bool,
    hurry: procs.Hurry = procs.never,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Stop the recorded processes (clients first), then whatever else is left in the run's
    session, then its keeper; remove the state unless ``keep`` or something survived.

    One row per recorded process (name, pid, result), plus one per process of the session
    that was never recorded (``unrecorded: True``)."""
    say = progress or (lambda message: None)
    report = []
    leader = _current_leader(state)
    for entry in sorted(state.processes, key=lambda e: stop_key(e, leader)):
        if procs.alive(entry):
            say(f"stopping {entry.name}")
        outcome = procs.stop(entry, hurry)
        report.append({"name": entry.name, "pid": entry.pid, "result": outcome})
    strays = procs.strays(state)
    if strays:
        names = {p.pid: procs.describe(p) for p in strays}
        say(f"stopping {len(strays)} process(es) the run started but had not recorded")
        for pid, outcome in procs.terminate(strays, hurry=hurry).items():
            report.append({"name": names[pid], "pid": pid, "result": outcome, "unrecorded": True})
    keeper = procs.keeper_process(state)
    if keeper is not None:
        # Its children are gone, so it is about to leave by itself: SIGTERM only hastens it.
        procs.terminate([keeper], grace=5.0)
        keepers.reap()  # when this process started it
    survivors = [row for row in report if row["result"] == "still running"]
    if not keep and not survivors:
        for folder in state.extra_dirs:
            shutil.rmtree(folder, ignore_errors=True)
        remove_state_dir(state.state_dir)
    return report


def _owner_alive(state: RunState) -> bool:
    return procs.is_running(state.owner_pid, state.owner_started)


def _left_running(state: RunState) -> tuple[list[str], list[psutil.Process]]:
    """(names of the recorded processes alive, processes of the session never recorded)."""
    return [p.name for p in state.processes if procs.alive(p)], procs.strays(state)


def _interrupted_line(stack: str, state: RunState, advice: str = "stops them") -> str | None:
    """For a run whose `up` died before it finished (kill -9, a crash) and left processes
    running: one line saying so and what to do. None for any other run."""
    if state.complete or _owner_alive(state):
        return None
    recorded, strays = _left_running(state)
    if not recorded and not strays:
        return None
    owner = f" (pid {state.owner_pid})" if state.owner_pid else ""
    parts = recorded + ([f"{len(strays)} not recorded"] if strays else [])
    return (
        f"interrupted run: `local up`{owner} of {stack!r} ended before it finished and left "
        f"{len(recorded) + len(strays)} process(es) running ({', '.join(parts)}); "
        f"`sikka-scaling local down {stack}` {advice}"
    )


def _check_previous(stack: str, state_dir: Path) -> None:
    """Refuse to start over a run that still has processes (finished, still starting, or
    interrupted by a kill -9); clear what is left of one that has none."""
    if (state_dir / STATE_FILE).exists():
        previous = RunState.load(state_dir)
        if not previous.complete and _owner_alive(previous):
            raise UpInProgress(
                f"stack {stack!r} is being started right now by `local up` (pid "
                f"{previous.owner_pid}) in {state_dir}; wait for it, or interrupt it "
                "(it stops what it started)"
            )
        interrupted = _interrupted_line(stack, previous, "stops them; then start it again")
        if interrupted:
            raise AlreadyRunning(interrupted)
        running, _ = _left_running(previous)
        if running:
            raise AlreadyRunning(
                f"stack {stack!r} already runs from {state_dir} ({', '.join(running)}); "
                f"run `sikka-scaling local down {stack}` first"
            )
        _teardown(previous, keep=False)  # stale leftovers of a crashed run
    elif state_dir.exists() and any(p.name not in TRANSITION_FILES for p in state_dir.iterdir()):
        raise AlreadyRunning(f"{state_dir} exists and is not a local-runner state dir")


def _make_state_dir(state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    # 0711: other accounts (postgres) may pass through to their own folders, not list ours.
    state_dir.chmod(0o711)


def up(
    spec: PhaseSpec,
    *,
    stack: str | None = None,
    state_dir: Path | None = None,
    progress: Progress | None = None,
    follow: Follow | None = None,
) -> LocalRun:
    """Start the phase's topology on 127.0.0.1 and wait until every part is healthy.

    With ``follow`` the phase starts as a replica of that running source (its secrets, a
    Patroni standby cluster or a single hot standby, a Redis master replicating the source's; see
    scaling.local.follow): what cannot answer before the promotion is not waited for.

    On any failure everything started so far is stopped again and :class:`LocalUpError`
    names the part that failed, with the tail of its log. SIGINT, SIGTERM or SIGHUP (on the
    main thread) stop it the same way and raise :class:`Interrupted`; a second signal during
    that cleanup only shortens its grace periods.
    """
    stack = stack or spec.phase.value
    folder = state_dir_for(stack, state_dir)
    say = progress or (lambda message: None)
    # Before anything starts: every server's open files fit in the inherited hard limit.
    try:
        limits.check(local_spec(spec), local_topology(spec))
    except limits.TooFewOpenFiles as error:
        raise LocalUpError("open-file limits", str(error), "", None) from None
    with _InterruptGuard() as guard:
        _check_previous(stack, folder)
        state: RunState | None = None
        keeper: Keeper | None = None
        ctx: Context | None = None
        try:
            _make_state_dir(folder)
            secrets = inherited_secrets(dict(follow.secrets)) if follow else new_secrets()
            secrets_file = folder / SECRETS_FILE
            save_secrets(secrets_file, secrets)
            # The gateways' HS256 key on its own (0600), for `sikka-scaling token` and clients.
            key_file = (
                write_key(folder, secrets["gateway-jwt-secret"])
                if spec.gateway.auth.shared_secret
                else None
            )
            me = psutil.Process()
            state = RunState(
                stack=stack,
                phase=spec.phase.value,
                state_dir=str(folder),
                secrets_file=str(secrets_file),
                owner_pid=me.pid,
                owner_started=me.create_time(),
            )
            state.save()
            keeper = Keeper.start(folder, folder / "logs" / "keeper.log")
            # Recorded before the keeper forks anything: see RunState.session_id.
            state.session_id, state.session_started = keeper.session_id, keeper.create_time
            state.save()
            ctx = Context(
                spec=spec,
                state=state,
                secrets=secrets,
                ports=PortAllocator(),
                topology=local_topology(spec),
                progress=say,
                keeper=keeper,
                follow=follow,
            )
            postgres = start_postgres(ctx)
            redis = start_redis(ctx)
            ctx.begin("gateways")
            gateways = start_gateways(ctx, redis, str(PROJECT_DIR))
            nginx = start_nginx(ctx)
            monitoring = start_monitoring(ctx, gateways, nginx, str(PROJECT_DIR))
            state.summary = _summary(
                spec, stack, ctx, postgres, redis, gateways, nginx, monitoring, key_file
            )
            if follow is not None:
                state.summary["follows"] = follow.describe()
            state.complete = True
            state.save()
            # Complete: an interrupt from here on must not tear it down.
            guard.disarm()
            keeper.detach()
        except BaseException as error:
            guard.disarm()
            say = _best_effort(say)
            part = ctx.part if ctx else "setup"
            tail = procs.log_tail(ctx.part_log) if ctx and ctx.part_log else ""
            interrupted = isinstance(error, KeyboardInterrupt)
            if interrupted:
                name = error.signal_name if isinstance(error, Interrupted) else "SIGINT"
                say(
                    f"interrupted by {name} at {part}: stopping what was started "
                    "(a second interrupt only cuts the grace periods short)"
                )
            if keeper is not None:
                keeper.detach()
            report = _abort(state, folder, guard.hurried, say if interrupted else None)
            if keeper is not None:
                keeper.close()
            if interrupted:
                stopped = error if isinstance(error, Interrupted) else Interrupted(signal.SIGINT)
                stopped.part, stopped.stopped, stopped.state_dir = part, report, str(folder)
                stopped.removed = not folder.exists()
                stopped.hurried = guard.hurried()
                if stopped is error:
                    raise
                raise stopped from None
            part_log = ctx.part_log if ctx else None
            raise LocalUpError(part, str(error) or type(error).__name__, tail, part_log) from error
    return LocalRun(state, secrets)


def _best_effort(progress: Progress) -> Progress:
    """``progress`` that never fails: after a SIGHUP the terminal is gone, and writing to it
    (EIO) must not cut a cleanup short."""

    def emit(message: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            progress(message)

    return emit


def _abort(
    state: RunState | None, folder: Path, hurry: procs.Hurry, progress: Progress | None
) -> list[dict[str, Any]]:
    """Stop what a failed or interrupted `up` started and remove its state."""
    if state is not None:
        return _teardown(state, keep=False, hurry=hurry, progress=progress)
    # Cut short before the state file was written: only the folder (and secrets) exist.
    remove_state_dir(folder)
    return []


def _summary(
    spec: PhaseSpec,
    stack: str,
    ctx: Context,
    postgres: PostgresEndpoints,
    redis: RedisEndpoints,
    gateways: list[GatewayInstance],
    nginx: NginxEndpoints,
    monitoring: MonitoringEndpoints,
    key_file: Path | None,
) -> dict[str, Any]:
    pg = spec.postgres
    state = ctx.state
    apis = [m.api_url for m in postgres.members]
    return {
        "stack": stack,
        "phase": spec.phase.value,
        "state_dir": state.state_dir,
        "secrets_file": state.secrets_file,
        "nginx": nginx.summary(),
        "gateways": [g.summary() for g in gateways],
        "gateway_auth": auth_summary(spec, key_file),
        "postgres": postgres_summary(
            spec, postgres, patroni_api.fetch_cluster(apis) if apis else None
        ),
        "database": {
            "name": pg.database,
            "user": pg.user,
            "superuser": SUPERUSER,
            "pooler_admin": POOLER_ADMIN_USER if postgres.poolers else None,
        },
        "redis": redis.summary(),
        # Prometheus (url, targets and rules APIs, TSDB folder) and every exporter's /metrics.
        "prometheus": monitoring.summary(),
        "processes": _process_list(state),
        "logs": str(ctx.log_dir),
        "notes": ctx.notes,
    }


def start_node(stack: str, name: str, *, state_dir: Path | None = None) -> ProcessEntry:
    """Start one recorded process of a complete run again, as `up` first started it: a
    killed server comes back on its own data (a former Patroni leader rejoins as a replica,
    rewound if it must be)."""
    folder = state_dir_for(stack, state_dir)
    if not (folder / STATE_FILE).exists():
        raise FileNotFoundError(f"no local run of {stack!r} recorded in {folder}")
    run = LocalRun.open(folder)
    if not run.state.complete:
        raise UpInProgress(f"the local run of {stack!r} in {folder} never finished starting")
    return run.start_process(name)


def down(stack: str, *, state_dir: Path | None = None, keep: bool = False) -> list[dict[str, Any]]:
    """Stop exactly the processes `up` recorded for ``stack`` (never anything else)."""
    folder = state_dir_for(stack, state_dir)
    if not (folder / STATE_FILE).exists():
        raise FileNotFoundError(f"no local run of {stack!r} recorded in {folder}")
    state = RunState.load(folder)
    if not state.complete and _owner_alive(state) and state.owner_pid != os.getpid():
        raise UpInProgress(
            f"`local up` (pid {state.owner_pid}) is still starting {stack!r} from {folder}: "
            f"interrupt it (Ctrl-C, or kill {state.owner_pid}) and it stops what it started"
        )
    return _teardown(state, keep=keep)


def status(stack: str, *, state_dir: Path | None = None) -> dict[str, Any]:
    folder = state_dir_for(stack, state_dir)
    if not (folder / STATE_FILE).exists():
        return {"stack": stack, "state_dir": str(folder), "running": False, "processes": []}
    state = RunState.load(folder)
    rows = []
    for p in state.processes:
        rows.append(
            {
                "name": p.name,
                "role": p.role,
                "pid": p.pid,
                "host": p.host,
                "port": p.port,
                "alive": procs.alive(p),
            }
        )
    patroni = patroni_status(state)
    if patroni is not None:
        live = {m["name"]: m for m in patroni["members"]}
        for row in rows:
            if row["name"] in live:
                row["patroni"] = live[row["name"]]
                row["leader"] = row["name"] == patroni["leader"]
    unrecorded = [{"pid": p.pid, "command": procs.describe(p)} for p in procs.strays(state)]
    starting = not state.complete and _owner_alive(state)
    return {
        "stack": stack,
        "phase": state.phase,
        "state_dir": str(folder),
        "complete": state.complete,
        # `up` is still starting it (its process is alive).
        "starting": starting,
        "owner_pid": state.owner_pid,
        # One line when `up` died before it finished and left processes running; None else.
        "interrupted": _interrupted_line(stack, state),
        "running": any(r["alive"] for r in rows) or bool(unrecorded),
        "all_alive": bool(rows) and all(r["alive"] for r in rows) and not unrecorded,
        "processes": rows,
        # Processes of the run's session that no row names (see procs.strays).
        "unrecorded": unrecorded,
        "session": {
            "id": state.session_id,
            "keeper_alive": procs.keeper_process(state) is not None,
        },
        "summary": state.summary,
        # Under Patroni: who leads now and every member's live role, state, timeline, lag
        # (None when no member answers); the process rows of members carry theirs too.
        "patroni": patroni,
    }


def patroni_status(state: RunState) -> dict[str, Any] | None:
    """What the run's Patroni members say now; None without Patroni or when none answers."""
    apis = patroni_apis(state)
    cluster = patroni_api.fetch_cluster(apis) if apis else None
    if cluster is None:
        return None
    return {"leader": patroni_api.leader(cluster), "members": patroni_api.members(cluster)}


def print_progress(message: str) -> None:
    print(f"[local] {message}", file=sys.stderr, flush=True)
