"""The transitions façade: what `sikka-scaling transition` and the scaling API call.

``prepare`` changes nothing but the target's rendered configs: it validates the target
stack, renders it, checks the running source, lists the steps, previews the target with
Pulumi when a preview function is given and the CLI is installed, and says whether an
earlier transition was left unfinished. ``execute`` runs the transition on the processes
of `local up` (``local=True``) under the target's lock; on Docker and Kubernetes a
transition is two `pulumi up` runs, which ``prepare`` lists as next steps.
"""

from __future__ import annotations

import importlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from scaling.issues import ConfigError
from scaling.local.state import state_dir_for
from scaling.model import PhaseSpec
from scaling.transition import log as tlog
from scaling.transition import notify, plan
from scaling.transition.errors import StepFailed
from scaling.transition.plan import TransitionRefused
from scaling.transition.runner import (
    LOCK_FILE,
    Record,
    Runner,
    RunResult,
    StepContext,
    TransitionBusy,
    TransitionLock,
    Undo,
    is_locked,
    iso,
    latest,
    records,
)

__all__ = [
    "TransitionBusy",
    "TransitionRefused",
    "TransitionResult",
    "execute",
    "is_running",
    "last_transition",
    "prepare",
    "transitions",
]

PROJECT_DIR = Path(__file__).resolve().parents[2]
RENDERED = "rendered"
# Seconds the target may take to catch up with the source, and the final sync (writes are
# stopped on the source during it: a bound on the write downtime before rolling back).
CATCH_UP_TIMEOUT = 600.0
FINAL_SYNC_TIMEOUT = 10.0
# Redis key the live validation writes (expires by itself).
PROBE_KEY = "sikka:transition:probe"

Progress = Callable[[str], None]
# (target stack, its stack file) -> (previewed, what to say)
Preview = Callable[[str, Path], tuple[bool, str]]

# Exit codes of `sikka-scaling transition` (README "Moving to the next phase").
EXIT_OK = 0
EXIT_REFUSED = 2
EXIT_ROLLED_BACK = 3
EXIT_FAILED_AFTER_CUTOVER = 4
EXIT_ROLLBACK_FAILED = 5
EXIT_BUSY = 75  # EX_TEMPFAIL: another transition of the target runs
_EXIT = {
    "prepared": EXIT_OK,
    "succeeded": EXIT_OK,
    "rolled-back": EXIT_ROLLED_BACK,
    "failed": EXIT_FAILED_AFTER_CUTOVER,
    "interrupted": EXIT_FAILED_AFTER_CUTOVER,
    "rollback-failed": EXIT_ROLLBACK_FAILED,
}


@dataclass
class TransitionResult:
    success: bool
    message: str
    actions: list[str]
    next_steps: list[str]
    outcome: str  # prepared | succeeded | rolled-back | failed | interrupted | rollback-failed
    failed_step: str | None
    log: str
    measurements: dict[str, Any]
    transition: str | None = None
    source: str | None = None
    target: str | None = None
    signal: int | None = None  # the signal that interrupted an execute
    webhook: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.signal is not None:
            return 128 + self.signal
        return _EXIT.get(self.outcome, 1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "message": self.message,
            "actions": list(self.actions),
            "nextSteps": list(self.next_steps),
            "outcome": self.outcome,
            "failedStep": self.failed_step,
            "transition": self.transition,
            "source": self.source,
            "target": self.target,
            "log": self.log,
            "steps": list(self.steps),
            "measurements": self.measurements,
            "webhook": self.webhook,
            "exitCode": self.exit_code,
        }


# --- where things are ----------------------------------------------------------------------


def stack_dir(stack: str, state_root: Path | None = None) -> Path:
    """The stack's state folder under ``state_root`` (default: as `local up`)."""
    return state_dir_for(stack, state_root / stack if state_root else None)


def log_file_of(target: str, state_root: Path | None, log_file: Path | None) -> Path:
    return tlog.log_path(target, log_file, stack_dir(target, state_root))


def is_running(to_stack: str, state_root: Path | None = None) -> bool:
    """Whether a transition to ``to_stack`` holds its lock now."""
    return is_locked(stack_dir(_name(to_stack), state_root) / LOCK_FILE)


def transitions(
    stack: str, *, state_root: Path | None = None, log_file: Path | None = None
) -> list[dict[str, Any]]:
    """Every line of the stack's transition log, oldest first."""
    return tlog.read(log_file_of(_name(stack), state_root, log_file))


def last_transition(
    stack: str, *, state_root: Path | None = None, state_dir: Path | None = None
) -> dict[str, Any] | None:
    """The latest transition into or out of ``stack``: its own log (into it), and the logs
    of its sibling state folders (out of it); None when there is none."""
    name = _name(stack)
    own = state_dir.resolve() if state_dir else stack_dir(name, state_root)
    found: list[tuple[float, Record, Path]] = []
    logs = [own / tlog.LOG_FILE]
    if own.parent.is_dir():
        logs += sorted(p for p in own.parent.glob(f"*/{tlog.LOG_FILE}") if p.parent != own)
    for path in logs:
        try:
            events = tlog.read(path)
        except (OSError, ValueError):
            continue
        for rec in records(events):
            if path.parent == own or rec.source == name:
                found.append((rec.started_at or 0.0, rec, path))
    if not found:
        return None
    _, rec, path = max(found, key=lambda item: item[0])
    summary = rec.summary()
    summary["role"] = "target" if rec.target == name else "source"
    summary["log"] = str(path)
    if rec.open and is_locked(path.parent / LOCK_FILE):
        summary["outcome"] = "running"
    return summary


# --- the two stacks ------------------------------------------------------------------------


def _name(stack: str) -> str:
    from scaling.stackfiles import StackFileNotFound, stack_name

    try:
        return stack_name(stack)
    except StackFileNotFound as error:
        raise TransitionRefused(str(error)) from None


def _load(stack: str, role: str) -> tuple[PhaseSpec, Path]:
    from scaling.stackconfig import load_stack_file
    from scaling.stackfiles import StackFileNotFound, stack_path

    try:
        path = stack_path(stack)
        return load_stack_file(path), path
    except StackFileNotFound as error:
        raise TransitionRefused(f"{role} stack {stack}: {error}") from None
    except ConfigError as error:
        raise TransitionRefused(f"{role} stack {stack}: {error}") from None


@dataclass
class _Pair:
    source: str
    target: str
    source_spec: PhaseSpec
    target_spec: PhaseSpec
    target_file: Path
    source_dir: Path
    target_dir: Path
    log: Path
    warnings: list[str]


def _pair(
    to_stack: str,
    from_stack: str | None,
    force: bool,
    state_root: Path | None,
    log_file: Path | None,
) -> _Pair:
    target_spec, target_file = _load(to_stack, "target")
    target = _name(to_stack)
    log = log_file_of(target, state_root, log_file)
    source_given = from_stack
    if source_given is None:
        pending = latest(tlog.read(log))
        if pending is not None and pending.open and pending.source:
            source_given = pending.source  # an unfinished transition is finished first
        else:
            before = plan.previous_phase(target_spec.phase)
            if before is None:
                raise TransitionRefused(
                    f"{target} is a {target_spec.phase.value} stack, the first phase: there "
                    "is no phase before it to move from; give --from STACK"
                )
            source_given = before.value
    source_spec, _ = _load(source_given, "source")
    source = _name(source_given)
    if source == target:
        raise TransitionRefused(f"--from {source}: the source and the target are one stack")
    warnings = plan.check_direction(source_spec.phase, target_spec.phase, force)
    return _Pair(
        source=source,
        target=target,
        source_spec=source_spec,
        target_spec=target_spec,
        target_file=target_file,
        source_dir=stack_dir(source, state_root),
        target_dir=stack_dir(target, state_root),
        log=log,
        warnings=warnings,
    )


# --- prepare -------------------------------------------------------------------------------


def render_target(spec: PhaseSpec, folder: Path) -> list[str]:
    """Write the target's configs and environment file (`render`'s files) into
    ``folder``; the names written."""
    from scaling.bundle import render_bundle

    folder.mkdir(parents=True, exist_ok=True)
    project = Path(os.path.relpath(PROJECT_DIR, folder.resolve())).as_posix()
    files = render_bundle(spec, project)
    for name, content in files.items():
        (folder / name).write_text(content)
    return sorted(files)


def check_phase(stack: str, spec: PhaseSpec, state_dir: Path) -> dict[str, Any]:
    """The checker (`check --local`) on a running `local up`: verdict, unreachable parts,
    reasons and recommendations. Raises EndpointsError when no complete run is there."""
    from scaling.advisor.levels import SUSTAINED_SECONDS
    from scaling.metrics import endpoints as ep
    from scaling.metrics.check import observe_direct
    from scaling.metrics.report import report

    endpoints = ep.from_local_state(state_dir, spec)
    window = float(SUSTAINED_SECONDS)
    observation = observe_direct(endpoints, spec, window, None)
    document, _ = report(stack, spec, observation, window)
    recommended = [
        r["title"]
        for bucket in ("immediate", "shortTerm")
        for r in document["recommendations"].get(bucket, [])
    ]
    return {
        "verdict": document["verdict"],
        "exitCode": document["exitCode"],
        "unreachable": list(document["unreachable"]),
        "reasons": list(document["reasons"])[:8],
        "recommendations": recommended,
    }


def _no_pulumi_preview(target: str) -> str:
    return (
        f"the Pulumi CLI is not on PATH: no `pulumi preview` of {target} "
        f"(`sikka-scaling preview {target}` lists its resources under the mock engine)"
    )


def _pending_line(rec: Record | None, target_dir: Path, cut_steps: set[str]) -> str | None:
    if rec is None or not rec.open:
        return None
    if is_locked(target_dir / LOCK_FILE):
        return f"transition {rec.id} ({rec.source} → {rec.target}) is running now"
    how = rec.outcome or f"killed during {rec.running or 'a step'}"
    if cut_steps & set(rec.started):
        then = "--execute resumes it after its cut-over (forward only)"
    else:
        then = "--execute rolls it back first (the source keeps serving), then starts over"
    return f"transition {rec.id} ({rec.source} → {rec.target}) is unfinished ({how}): {then}"


def _steps_doc(steps: list[plan.Step]) -> list[dict[str, Any]]:
    return [{"name": s.name, "description": s.description, "cutover": s.cutover} for s in steps]


def prepare(
    to_stack: str,
    *,
    from_stack: str | None = None,
    force: bool = False,
    local: bool = False,
    state_root: Path | None = None,
    log_file: Path | None = None,
    progress: Progress | None = None,
    preview: Preview | None = None,
) -> TransitionResult:
    """Validate, render, check the source, list the steps, preview: nothing else changes.
    ``preview``: runs `pulumi preview` of the target (components.automation.preview)."""
    say = progress or (lambda message: None)
    pair = _pair(to_stack, from_stack, force, state_root, log_file)
    src, dst = pair.source, pair.target
    platform = plan.LOCAL if local else pair.target_spec.platform.value
    steps = plan.steps(pair.source_spec, pair.target_spec, platform)
    actions = list(pair.warnings)
    measurements: dict[str, Any] = {}
    target = pair.target_spec
    actions.append(
        f"target {dst}: valid ({target.phase.value} phase on {target.platform.value}: "
        f"postgres {target.postgres.mode}, redis {target.redis.mode}, "
        f"{target.gateway.replicas} gateway(s))"
    )
    say("rendering the target's configs")
    out = pair.target_dir / RENDERED
    try:
        files = render_target(target, out)
    except OSError as error:
        raise TransitionRefused(f"cannot write {out}: {error.strerror or error}") from None
    actions.append(f"rendered {len(files)} files (configs, .env) of {dst} into {out}")
    say(f"checking the source {src}")
    measurements["source"] = _source_check(pair, local, actions)
    for index, step in enumerate(steps, start=1):
        mark = "  ← cut-over" if step.cutover else ""
        actions.append(f"step {index} {step.name}: {step.description}{mark}")
    for need in plan.schema_requirements(target):
        actions.append(f"schema (Citus target, on Kubernetes): {need}")
    if not local:
        for limit in plan.pulumi_limits(pair.source_spec, target):
            actions.append(f"pulumi: {limit}")
    if shutil.which("pulumi") is None:
        actions.append(_no_pulumi_preview(dst))
    elif preview is not None:
        say(f"pulumi preview of {dst}")
        try:
            ok, text = preview(dst, pair.target_file)
        except Exception as error:  # the Automation API's own failure: said, not fatal
            ok, text = False, f"`pulumi preview` of {dst} failed: {type(error).__name__}: {error}"
        actions.append(f"pulumi preview of {dst}: {text}" if ok else text)
        measurements["pulumiPreview"] = {"ok": ok, "said": text}
    else:
        actions.append(f"`pulumi preview` of {dst}: run `sikka-scaling transition {dst}`")
    cut = {s.name for s in steps[plan.cutover_index(steps) :]}
    pending = _pending_line(latest(tlog.read(pair.log)), pair.target_dir, cut)
    if pending:
        actions.append(pending)
    unfinished = _source_unfinished(pair)
    if unfinished:
        actions.append(f"{unfinished}; --execute refuses until then (unless --force)")
    if local:
        next_steps = [f"sikka-scaling transition {dst} --from {src} --execute --local"]
    else:
        next_steps = plan.pulumi_commands(
            src, dst, force=force, guarded_here=plan.guarded(pair.source_spec, target)
        )
    return TransitionResult(
        success=True,
        message=f"prepared {src} → {dst}: {len(steps)} steps ({platform}); nothing was changed"
        + (f"; {pending}" if pending else ""),
        actions=actions,
        next_steps=next_steps,
        outcome="prepared",
        failed_step=None,
        log=str(pair.log),
        measurements=measurements,
        source=src,
        target=dst,
        steps=_steps_doc(steps),
    )


def _source_check(pair: _Pair, local: bool, actions: list[str]) -> dict[str, Any]:
    from scaling.metrics.endpoints import EndpointsError

    try:
        found = check_phase(pair.source, pair.source_spec, pair.source_dir)
    except EndpointsError as error:
        where = "" if local else f"; a deployed stack: `sikka-scaling check {pair.source}`"
        actions.append(f"source {pair.source}: not checked: {error}{where}")
        return {"checked": False, "error": str(error)}
    unreachable = found["unreachable"]
    line = f"source {pair.source}: verdict {found['verdict']}"
    if found["reasons"]:
        line += f" ({'; '.join(found['reasons'][:2])})"
    line += f"; unreachable: {', '.join(unreachable)}" if unreachable else "; every part answers"
    if found["recommendations"]:
        line += f"; recommends: {'; '.join(found['recommendations'][:3])}"
    actions.append(line)
    return {"checked": True, **found}


# --- execute -------------------------------------------------------------------------------


def execute(
    to_stack: str,
    *,
    from_stack: str | None = None,
    force: bool = False,
    local: bool = False,
    state_root: Path | None = None,
    log_file: Path | None = None,
    progress: Progress | None = None,
    retire: bool = False,
    webhook_url: str | None = None,
) -> TransitionResult:
    """Run the transition (blocking) under the target's lock; resume or roll back an
    unfinished one first."""
    say = progress or (lambda message: None)
    if not local:
        pair = _pair(to_stack, from_stack, force, state_root, log_file)
        commands = "; ".join(
            plan.pulumi_commands(
                pair.source,
                pair.target,
                force=force,
                guarded_here=plan.guarded(pair.source_spec, pair.target_spec),
            )
        )
        raise TransitionRefused(
            f"--execute runs a transition on the processes of `local up` only (add --local); "
            f"on {pair.target_spec.platform.value} it is stack config and two `pulumi up` "
            f"runs: {commands}"
        )
    target_name = _name(to_stack)
    lock = TransitionLock(stack_dir(target_name, state_root) / LOCK_FILE).acquire(target_name)
    try:
        pair = _pair(to_stack, from_stack, force, state_root, log_file)
        _refuse_a_done_transition(pair, force)
        unfinished = _source_unfinished(pair)
        if unfinished and not force:
            raise TransitionRefused(f"{unfinished}; --force to move it anyway")
        steps = plan.steps(pair.source_spec, pair.target_spec, plan.LOCAL)
        runner = Runner(
            log_file=pair.log,
            source=pair.source,
            target=pair.target,
            platform=plan.LOCAL,
            plan=steps,
            actions=_local_actions(pair, force),
            undo=_local_undo(pair),
            progress=say,
            retire=retire,
        )
        outcome = runner.run()
        result = _result(pair, outcome, steps)
        url = notify.webhook_url(webhook_url)
        if url:
            result.webhook = _notify(url, pair, outcome, result.message).as_dict()
        return result
    finally:
        lock.release()


def _source_unfinished(pair: _Pair) -> str | None:
    """A line when the source is itself the target of an unfinished transition (its data
    may not all be there yet, or its front door not switched)."""
    rec = latest(tlog.read(pair.source_dir / tlog.LOG_FILE))
    if rec is None or not rec.open:
        return None
    how = "running now" if is_locked(pair.source_dir / LOCK_FILE) else "unfinished"
    return (
        f"{pair.source} is the target of transition {rec.id} ({rec.source} → {rec.target}), "
        f"{how}: finish it first (sikka-scaling transition {pair.source} --execute --local)"
    )


def _refuse_a_done_transition(pair: _Pair, force: bool) -> None:
    """The same move again, after it succeeded and nothing moved the source back since:
    refused without --force (the source is retired; its data would be copied over the
    target's newer data)."""
    done = latest(tlog.read(pair.log))
    if force or done is None or done.open or done.outcome != "succeeded":
        return
    if done.source != pair.source:
        return
    since = done.started_at or 0.0
    into_source = records(tlog.read(pair.source_dir / tlog.LOG_FILE))
    moved_back = any(
        r.outcome == "succeeded" and not r.open and (r.started_at or 0.0) > since
        for r in into_source
    )
    if not moved_back:
        raise TransitionRefused(
            f"{pair.source} → {pair.target} already succeeded (transition {done.id}, "
            f"ended {iso(done.ended_at)}); --force to run it again"
        )


def _notify(url: str, pair: _Pair, outcome: RunResult, message: str) -> notify.Delivery:
    document = notify.body(
        source=pair.source,
        target=pair.target,
        outcome=outcome.outcome,
        failed_step=outcome.failed_step,
        transition=outcome.transition,
        started_at=iso(outcome.started_at),
        ended_at=iso(outcome.ended_at),
        measurements=outcome.measurements,
        error=outcome.error,
        message=message,
    )
    delivery = notify.send(url, document)
    tlog.append(
        pair.log,
        {
            "transition": outcome.transition,
            "step": "notify",
            "event": "end",
            "at": round(time.time(), 3),
            "outcome": "ok" if delivery.delivered else "failed",
            "measurements": delivery.as_dict(),
        },
    )
    return delivery


def _result(pair: _Pair, run: RunResult, steps: list[plan.Step]) -> TransitionResult:
    src, dst = pair.source, pair.target
    figures = run.measurements
    retry = f"sikka-scaling transition {dst} --from {src} --execute --local"
    actions = [f"{name}: ok" for name in run.steps_done]
    if run.recovered is not None:
        rec = run.recovered
        how = rec.outcome or f"killed during {rec.running or 'a step'}"
        undone = ", ".join(run.recovered_undone) or "nothing left to undo"
        actions.insert(
            0, f"transition {rec.id} was unfinished ({how}): rolled back first ({undone})"
        )
    if run.resumed_from:
        actions.insert(0, f"resumed transition {run.transition} at {run.resumed_from}")
    actions += [f"rollback {name}: ok" for name in run.undone]
    next_steps: list[str] = []
    if run.outcome == "succeeded":
        total = figures.get("totalSeconds")
        stopped = figures.get("writesStoppedSeconds")
        message = f"{src} → {dst}: succeeded"
        message += f" in {total:.1f} s" if isinstance(total, int | float) else ""
        if isinstance(stopped, int | float):
            message += f" (database writes stopped for {stopped:.1f} s)"
        message += f"; {src} is stopped and kept intact, its Nginx still the front door"
        next_steps = _after_success(pair)
    elif run.outcome == "rolled-back":
        message = (
            f"{src} → {dst}: {run.failed_step} failed before the cut-over ({run.error}); "
            f"rolled back: the target was torn down and {src} keeps serving"
        )
        next_steps = [f"fix the cause, then: {retry}"]
    elif run.outcome == "rollback-failed":
        message = (
            f"{src} → {dst}: {run.failed_step} failed before the cut-over and the rollback "
            f"did not finish ({run.error}); run the same command again to finish the rollback"
        )
        next_steps = [retry]
    else:
        what = "was interrupted" if run.outcome == "interrupted" else "failed"
        message = (
            f"{src} → {dst}: {run.failed_step} {what} after the cut-over ({run.error}); "
            f"{dst} is the primary now and nothing was undone (no write is discarded); run "
            "the same command again to go on from there (forward only)"
        )
        next_steps = [
            retry,
            f"to go back instead: sikka-scaling transition {src} --from {dst} --execute "
            "--local --force (the same mechanism in reverse)",
        ]
    return TransitionResult(
        success=run.outcome == "succeeded",
        message=message,
        actions=actions,
        next_steps=next_steps,
        outcome=run.outcome,
        failed_step=run.failed_step,
        log=str(pair.log),
        measurements=figures,
        transition=run.transition,
        source=src,
        target=dst,
        signal=run.signal,
        steps=_steps_doc(steps),
    )


def _after_success(pair: _Pair) -> list[str]:
    src, dst = pair.source, pair.target
    lines = []
    url = client_url(pair)
    if url:
        lines.append(f"database clients: {url} (the writable host wins)")
    lines += [
        f"sikka-scaling status {dst}",
        f"point DNS / the load balancer at {dst}'s Nginx, then: sikka-scaling local down {src}",
    ]
    return lines


def client_url(pair: _Pair) -> str | None:
    """A libpq multi-host URL over the source's and the target's database front doors,
    ``target_session_attrs=read-write``: whichever is writable wins."""
    hosts: list[str] = []
    spec = pair.target_spec.postgres
    for folder in (pair.source_dir, pair.target_dir):
        try:
            from scaling.local.state import RunState

            summary = RunState.load(folder).summary.get("postgres") or {}
        except (OSError, ValueError, TypeError):
            continue
        door = summary.get("pooler") or summary.get("primary")
        if door:
            hosts += [h for h in urlsplit(str(door)).netloc.split("@")[-1].split(",") if h]
    if not hosts:
        return None
    return (
        f"postgresql://{spec.user}@{','.join(dict.fromkeys(hosts))}/{spec.database}"
        "?target_session_attrs=read-write"
    )


# --- the local steps -----------------------------------------------------------------------


def _data() -> ModuleType:
    return importlib.import_module("scaling.transition.local_data")


def _front() -> ModuleType:
    return importlib.import_module("scaling.transition.local_front")


def _source_run(pair: _Pair, ctx: StepContext) -> Any:
    from scaling.local.runner import LocalRun
    from scaling.local.state import STATE_FILE

    if "source_run" not in ctx.values:
        if not (pair.source_dir / STATE_FILE).exists():
            raise StepFailed("check-source", f"no local run of {pair.source} in {pair.source_dir}")
        ctx.values["source_run"] = LocalRun.open(pair.source_dir)
    return ctx.values["source_run"]


def _target_run(pair: _Pair, ctx: StepContext, step: str) -> Any:
    from scaling.local.runner import LocalRun
    from scaling.local.state import STATE_FILE

    if "target_run" not in ctx.values:
        if not (pair.target_dir / STATE_FILE).exists():
            raise StepFailed(step, f"no local run of {pair.target} in {pair.target_dir}")
        ctx.values["target_run"] = LocalRun.open(pair.target_dir)
    return ctx.values["target_run"]


def _local_actions(pair: _Pair, force: bool) -> dict[str, Any]:
    def validate_target(ctx: StepContext) -> dict[str, Any]:
        from scaling.local.state import STATE_FILE

        # The transition starts the target itself, and its rollback tears down what it
        # started: a run of the target that is already there is never taken for its own,
        # but for a retired run of the phase it goes back to, started again as a replica
        # (scaling.transition.local_revive; its rollback retires it again).
        revive = None
        if (pair.target_dir / STATE_FILE).exists():
            why = _revivable(pair)
            if why is not None:
                raise StepFailed("validate-target", occupied(pair, why))
            revive = str(pair.target_dir)
        files = render_target(pair.target_spec, pair.target_dir / RENDERED)
        found: dict[str, Any] = {"rendered": len(files), "folder": str(pair.target_dir / RENDERED)}
        if revive:
            found["revive"] = revive
        return found

    def check_source(ctx: StepContext) -> dict[str, Any]:
        from scaling.metrics.endpoints import EndpointsError

        _source_run(pair, ctx)
        try:
            found = check_phase(pair.source, pair.source_spec, pair.source_dir)
        except EndpointsError as error:
            raise StepFailed("check-source", str(error)) from None
        if found["unreachable"] and not force:
            raise StepFailed(
                "check-source",
                f"{pair.source} has parts that do not answer ({', '.join(found['unreachable'])})"
                "; --force to move it anyway",
            )
        return found

    def prepare_source(ctx: StepContext) -> Any:
        return _data().prepare_source(_source_run(pair, ctx))

    def start_target(ctx: StepContext) -> dict[str, Any]:
        from scaling.local.runner import LocalRun
        from scaling.local.state import STATE_FILE

        if (pair.target_dir / STATE_FILE).exists():
            why = _revivable(pair)
            if why is not None:
                raise StepFailed("start-target", occupied(pair, why))
            target = LocalRun.open(pair.target_dir)
            ctx.values["target_run"] = target
            return _revive().revive(
                target, _source_run(pair, ctx), pair.target_spec, ctx.transition
            )
        run = _data().start_target(
            pair.target_spec, pair.target, pair.target_dir, _source_run(pair, ctx), ctx.progress
        )
        ctx.values["target_run"] = run
        return {"processes": len(run.state.processes), "state_dir": str(pair.target_dir)}

    def catch_up(ctx: StepContext) -> Any:
        target = _target_run(pair, ctx, "catch-up")
        return _data().catch_up(_source_run(pair, ctx), target, CATCH_UP_TIMEOUT)

    def freeze_source(ctx: StepContext) -> Any:
        return _data().freeze_source(_source_run(pair, ctx))

    def final_sync(ctx: StepContext) -> Any:
        target = _target_run(pair, ctx, "final-sync")
        return _data().final_sync(_source_run(pair, ctx), target, FINAL_SYNC_TIMEOUT)

    def promote_target(ctx: StepContext) -> Any:
        target = _target_run(pair, ctx, plan.CUTOVER)
        result = _data().promote_target(_source_run(pair, ctx), target)
        _revive().finish(target)  # a revived run is the phase now: no rollback retires it
        return result

    def switch_front_door(ctx: StepContext) -> Any:
        target = _target_run(pair, ctx, "switch-front-door")
        return _front().switch_front_door(_source_run(pair, ctx), target)

    def validate_target_live(ctx: StepContext) -> dict[str, Any]:
        return validate_live(pair.target, pair.target_spec, pair.target_dir, ctx.transition)

    def retire_source(ctx: StepContext) -> dict[str, Any]:
        return retire(_source_run(pair, ctx), ctx.transition, pair.target, remove=ctx.retire)

    return {
        "validate-target": validate_target,
        "check-source": check_source,
        "prepare-source": prepare_source,
        "start-target": start_target,
        "catch-up": catch_up,
        "freeze-source": freeze_source,
        "final-sync": final_sync,
        plan.CUTOVER: promote_target,
        "switch-front-door": switch_front_door,
        "validate-target-live": validate_target_live,
        "retire-source": retire_source,
    }


def _revive() -> ModuleType:
    return importlib.import_module("scaling.transition.local_revive")


def _revivable(pair: _Pair) -> str | None:
    """None when the run in the target's folder is a retired run the transition starts
    again as the source's replica; else why it is not."""
    from scaling.local.runner import LocalRun

    try:
        run = LocalRun.open(pair.target_dir)
    except (OSError, ValueError, TypeError, KeyError) as error:
        return f"its state cannot be read ({type(error).__name__}: {error})"
    why: str | None = _revive().revivable(run, pair.target_spec, pair.source)
    return why


def occupied(pair: _Pair, why: str) -> str:
    """Why the target's state folder cannot take the transition's own run: a run is there,
    and ``why`` it is not a retired run the transition could start again."""
    return (
        f"a local run of {pair.target} is already in {pair.target_dir} and is not started "
        f"again as a replica of {pair.source} ({why}): the transition starts the target "
        f"itself; `sikka-scaling local down {pair.target}` first"
    )


def _local_undo(pair: _Pair) -> list[Undo]:
    def restore_front_door(ctx: StepContext) -> Any:
        return _front().restore_front_door(_source_run(pair, ctx))

    def unfreeze_source(ctx: StepContext) -> Any:
        return _data().unfreeze_source(_source_run(pair, ctx))

    def stop_target(ctx: StepContext) -> dict[str, Any]:
        from scaling.local.runner import LocalRun
        from scaling.local.state import STATE_FILE

        run = ctx.values.pop("target_run", None)
        if run is None:
            if not (pair.target_dir / STATE_FILE).exists():
                return {"stopped": 0, "note": "the target had left nothing running"}
            run = LocalRun.open(pair.target_dir)
        revive = _revive()
        if revive.RECORD in run.summary:
            return dict(revive.unrevive(run))  # retired again, on its own data
        if revive.RETIRED in run.summary:
            # A retired run this transition never started: never torn down by a rollback.
            return {"stopped": 0, "note": f"{pair.target}'s retired run left as it was"}
        report = run.down(keep=False)
        left = [r["name"] for r in report if r["result"] == "still running"]
        if left:
            raise StepFailed("stop-target", f"still running: {', '.join(left)}")
        return {"stopped": len(report)}

    def unprepare_source(ctx: StepContext) -> Any:
        # Last: only once no target follows the source does its replication login go.
        return _data().unprepare_source(_source_run(pair, ctx))

    return [
        Undo("restore-front-door", "switch-front-door", restore_front_door),
        Undo("unfreeze-source", "freeze-source", unfreeze_source),
        Undo("stop-target", "start-target", stop_target),
        Undo("unprepare-source", "prepare-source", unprepare_source),
    ]


def validate_live(stack: str, spec: PhaseSpec, state_dir: Path, transition: str) -> dict[str, Any]:
    """The checker on the promoted target (every part answers) and one write through its
    database front door and to its Redis master."""
    from scaling.local.runner import LocalRun
    from scaling.metrics.endpoints import EndpointsError

    step = "validate-target-live"
    try:
        found = check_phase(stack, spec, state_dir)
    except EndpointsError as error:
        raise StepFailed(step, str(error)) from None
    if found["unreachable"]:
        raise StepFailed(step, f"parts do not answer: {', '.join(found['unreachable'])}")
    run = LocalRun.open(state_dir)
    found["databaseWrite"] = _database_write(run, step)
    found["redisWrite"] = _redis_write(run, step, transition)
    return found


def _database_write(run: Any, step: str) -> dict[str, Any]:
    import psycopg

    pg = run.summary.get("postgres") or {}
    url = pg.get("pooler") or pg.get("primary")
    began = time.monotonic()
    try:
        with psycopg.connect(
            str(url), password=run.secrets.get("postgres-password"), connect_timeout=10
        ) as conn:
            conn.execute("CREATE TEMP TABLE sikka_transition_probe (at timestamptz) ON COMMIT DROP")
            conn.execute("INSERT INTO sikka_transition_probe VALUES (now())")
    except psycopg.Error as error:
        raise StepFailed(step, f"a write through {url} failed: {error}".strip()) from None
    return {"through": str(url), "ms": round((time.monotonic() - began) * 1000, 1)}


def _redis_write(run: Any, step: str, transition: str) -> dict[str, Any]:
    import redis

    summary = run.summary.get("redis") or {}
    password = run.secrets.get("redis-password")
    key = f"{PROBE_KEY}:{transition}"
    try:
        if summary.get("mode") == "cluster":
            host, _, port = str(summary["nodes"][0]).rpartition(":")
            cluster = redis.RedisCluster(host=host, port=int(port), password=password)
            try:
                cluster.set(key, "1", ex=60)
            finally:
                cluster.close()
            return {"cluster": True}
        nodes = (
            [urlsplit(str(summary["url"])).netloc]
            if summary.get("mode") == "standalone"
            else [str(n) for n in summary.get("nodes", [])]
        )
        for node in nodes:
            host, _, port = node.rpartition(":")
            client = redis.Redis(host=host, port=int(port), password=password, socket_timeout=5)
            try:
                if client.info("replication").get("role") == "master":
                    client.set(key, "1", ex=60)
                    return {"master": node}
            finally:
                client.close()
    except (redis.RedisError, KeyError, ValueError, IndexError) as error:
        raise StepFailed(step, f"a Redis write failed: {type(error).__name__}: {error}") from None
    raise StepFailed(step, f"no Redis master among {', '.join(nodes) or 'no nodes'}")


def retire(run: Any, transition: str, target: str, *, remove: bool) -> dict[str, Any]:
    """Stop every process of the source but its Nginx (still the clients' front door); its
    data is kept for a fallback unless ``remove``. Recorded in the source's state."""
    from scaling.local import procs
    from scaling.local.runner import stop_key

    state = run.state
    stopped, kept = [], []
    for entry in sorted(state.processes, key=lambda e: stop_key(e)):
        if entry.tier == "nginx":
            kept.append(entry.name)
            continue
        outcome = procs.stop(entry)
        if outcome == "still running":
            raise StepFailed("retire-source", f"{entry.name} (pid {entry.pid}) did not stop")
        stopped.append(entry.name)
    removed: list[str] = []
    if remove:
        folder = Path(state.state_dir)
        # Where `local up` keeps data: PostgreSQL (and Patroni) under postgres/ or a
        # folder outside the state dir (extra_dirs), etcd under etcd/, Redis under
        # redis/<node>/data, Prometheus under prometheus/data.
        candidates = [Path(d) for d in state.extra_dirs]
        candidates += [folder / "postgres", folder / "etcd"]
        for entry in state.processes:
            if entry.tier == "nginx":
                continue
            if entry.data_dir:
                candidates.append(Path(entry.data_dir))
            candidates += [folder / entry.name / "data", folder / entry.tier / entry.name / "data"]
        for path in dict.fromkeys(candidates):
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(str(path))
    state.summary["retired"] = {
        "transition": transition,
        "target": target,
        "at": iso(time.time()),
        "stopped": stopped,
        "front_door_kept": kept,
        "data_removed": removed if remove else None,
    }
    state.save()
    return {"stopped": len(stopped), "frontDoorKept": kept, "dataRemoved": len(removed)}
