"""Going back to a phase whose run is still there, retired: its processes restart as a
replica of the source, its Nginx (the clients' URL all along) keeps running.

After ``launch → growth`` launch's run is retired (retire-source): every process stopped but
its Nginx, which fronts growth; its data is a copy as of that cut-over. ``growth → launch``
(backwards, ``--force``) starts that same run again as growth's replica rather than a new
one, so the clients' URL stays where it was:

* revive (start-target): the retired data is set aside, never deleted (PostgreSQL's data
  folder renamed ``data.retired-<transition>``, Redis's ``data`` likewise); the PostgreSQL
  data folder is made again as a hot standby of the source's read-write door
  (scaling.local.postgres.make_standby_data: pg_basebackup, password file, standby.signal);
  the Redis server restarts with ``--replicaof`` the source's master; then the other
  processes (poolers, gateways, exporters, Prometheus) start again with their recorded
  commands. What was done is recorded in the run's summary (``revived``) before each change.
* catch-up, freeze-source, final-sync, promote-target, switch-front-door: as for a new
  target (switch-front-door gives the run's own Nginx its own upstream back).
* unrevive (the rollback's stop-target): the processes stop again (its Nginx kept), the
  copies made from the source are removed, the retired data put back, Redis's command line
  restored, the summary says "retired" again: the run is as it was before the transition.

Only a phase without Patroni and without Sentinel is revived (launch: the phase one goes
back to); any other run in the target's folder is refused (scaling.transition.service).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from scaling.local import health, procs
from scaling.local.follow import Follow
from scaling.local.postgres import (
    REPLICATION_PASSFILE,
    START_TIMEOUT,
    make_standby_data,
    standby_note,
    standby_streams,
)
from scaling.local.runner import LocalRun, stop_key
from scaling.local.state import ProcessEntry
from scaling.model import PhaseSpec
from scaling.render.endpoints import Endpoint
from scaling.transition.errors import StepFailed

RECORD = "revived"  # key of the run's summary while it is revived
RETIRED = "retired"  # key retire-source writes
STEP = "start-target"
UNDO = "stop-target"


def revivable(run: LocalRun, spec: PhaseSpec, source: str) -> str | None:
    """None when ``run`` (the target's folder) can be revived as ``source``'s replica, else
    why not."""
    summary = run.summary
    retired = summary.get(RETIRED) or (summary.get(RECORD) or {}).get(RETIRED)
    if not isinstance(retired, dict):
        return "it was not retired by a transition"
    if retired.get("target") != source:
        return f"it was retired by a transition to {retired.get('target')}, not to {source}"
    if spec.postgres.mode != "single" or spec.redis.mode != "standalone":
        return (
            f"it runs postgres {spec.postgres.mode} and redis {spec.redis.mode}: only a phase "
            "with one PostgreSQL and one Redis (launch) is started again as a replica"
        )
    alive = [e.name for e in run.state.processes if e.tier != "nginx" and procs.alive(e)]
    if alive and RECORD not in summary:
        return f"its {', '.join(alive)} still run"
    return None


def _one(run: LocalRun, tier: str, roles: tuple[str, ...]) -> ProcessEntry:
    (entry,) = [e for e in run.state.processes if e.tier == tier and e.role in roles]
    return entry


def _aside(path: Path, transition: str) -> Path:
    return path.with_name(f"{path.name}.retired-{transition}")


def _save(run: LocalRun) -> None:
    run.state.save()


def revive(target: LocalRun, source: LocalRun, spec: PhaseSpec, transition: str) -> dict[str, Any]:
    """Start the retired ``target`` again as a replica of ``source`` (see the module)."""
    from scaling.transition.local_data import replicaof_argv

    started = time.monotonic()
    summary = target.summary
    earlier = summary.get(RECORD)
    if earlier and earlier.get("transition") != transition:
        raise StepFailed(
            STEP,
            f"{target.state.stack} was started again by transition {earlier.get('transition')}"
            ", which neither finished nor was rolled back: finish that one first",
        )
    record: dict[str, Any] = earlier or {
        "transition": transition,
        RETIRED: summary.get(RETIRED),
        "aside": {},
        "redis_argv": None,
    }
    summary[RECORD] = record
    _save(target)  # before any change: the rollback reads it
    follow = Follow.of(source)
    pg = _one(target, "postgres", ("primary",))
    assert pg.data_dir is not None and pg.cwd is not None and pg.port is not None
    data = Path(pg.data_dir)
    aside = _aside(data, transition)
    try:
        if data.exists() and not aside.exists():
            data.rename(aside)
            record["aside"][str(data)] = str(aside)
            _save(target)
        elif data.exists():
            shutil.rmtree(data)  # a copy an interrupted revive began: the source has it all
        raised = make_standby_data(
            instance=Path(pg.cwd),
            name=pg.name,
            door=follow.postgres,
            password=target.secrets["replication-password"],
            spec=spec,
            pg_user=pg.user,
            run_tool=procs.run_tool,
            log=pg.log,
        )
        target.start_process(pg.name)
        health.wait_until(
            f"{pg.name} accepts connections as a standby of {follow.postgres}",
            lambda: standby_streams(
                Endpoint(pg.host, int(pg.port or 0)),
                target.secrets["postgres-superuser-password"],
            ),
            START_TIMEOUT,
            process=pg,
        )
        master = follow.redis_master
        if master is None:
            raise StepFailed(STEP, f"{source.state.stack}'s Redis has no single master")
        node = _one(target, "redis", ("standalone", "master"))
        assert node.cwd is not None
        redis_data = Path(node.cwd) / "data"
        redis_aside = _aside(redis_data, transition)
        if redis_data.exists() and not redis_aside.exists():
            redis_data.rename(redis_aside)
            record["aside"][str(redis_data)] = str(redis_aside)
        redis_data.mkdir(mode=0o700, exist_ok=True)
        if record["redis_argv"] is None:
            record["redis_argv"] = list(node.argv)
        node.argv = replicaof_argv(node.argv, master)
        _save(target)
        target.start_process(node.name)
        # Its Nginx too, should it have been stopped: it fronts the source until
        # switch-front-door gives it its own upstream back.
        rest = [
            e
            for e in sorted(target.state.processes, key=stop_key, reverse=True)
            if e.name not in (pg.name, node.name) and not procs.alive(e)
        ]
        for entry in rest:
            target.start_process(entry.name)
    except (OSError, RuntimeError, ValueError, health.HealthTimeout, health.ProcessDied) as error:
        if isinstance(error, StepFailed):
            raise
        raise StepFailed(STEP, f"{type(error).__name__}: {error}") from None
    summary.pop(RETIRED, None)
    summary["follows"] = follow.describe()
    if raised:
        notes = summary.setdefault("notes", [])
        note = standby_note(pg.name, follow.stack, raised)
        if note not in notes:
            notes.append(note)
    _save(target)
    return {
        "revived": target.state.stack,
        "data_set_aside": dict(record["aside"]),
        "processes_started": 2 + len(rest),
        "seconds": round(time.monotonic() - started, 3),
    }


def unrevive(target: LocalRun) -> dict[str, Any]:
    """The rollback of revive: the run retired again, exactly on its retired data."""
    record = target.summary.get(RECORD)
    if not isinstance(record, dict):
        return {"revived": False}
    stopped = []
    for entry in sorted(target.state.processes, key=stop_key):
        if entry.tier == "nginx":
            continue
        if procs.stop(entry) == "still running":
            raise StepFailed(UNDO, f"{entry.name} (pid {entry.pid}) did not stop")
        stopped.append(entry.name)
    restored = []
    for original, aside in record.get("aside", {}).items():
        here, kept = Path(original), Path(aside)
        if not kept.exists():
            continue
        if here.exists():
            shutil.rmtree(here)  # the copy made from the source (which holds it all)
        kept.rename(here)
        restored.append(original)
    pg = _one(target, "postgres", ("primary",))
    if pg.cwd:
        (Path(pg.cwd) / REPLICATION_PASSFILE).unlink(missing_ok=True)
    if record.get("redis_argv"):
        _one(target, "redis", ("standalone", "master")).argv = list(record["redis_argv"])
    summary = target.summary
    summary[RETIRED] = record.get(RETIRED)
    summary.pop("follows", None)
    summary.pop(RECORD, None)
    _save(target)
    return {"stopped": len(stopped), "restored": restored, "retired_again": True}


def finish(target: LocalRun) -> None:
    """After the cut-over: the revived run is the phase's primary; its record goes (the
    retired data stays set aside, removed with the run by `local down`). Anything but a
    revived run is left alone."""
    summary = getattr(target, "summary", None)
    if isinstance(summary, dict) and summary.pop(RECORD, None) is not None:
        _save(target)
