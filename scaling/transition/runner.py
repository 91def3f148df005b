"""Runs a transition's named steps, each logged, resumable after an interruption.

Every step appends a ``start`` line to the transition log before it acts and an ``end``
line (outcome, measurements, error) after; the transition itself has ``start``, ``resume``
and ``end`` lines (``step: "transition"``). The log is the journal: a run that finds the
target's latest transition unfinished (its process was killed, interrupted after the
cut-over, or its rollback failed) recovers it before anything else:

* the cut-over step had started: **forward only** — the steps that ended ``ok`` are skipped,
  the rest run again from the first one that did not (every step is idempotent);
* it had not: **rollback** — the undo actions of the steps that had started run (those the
  log shows done are not run twice), the transition ends ``rolled-back``, and a new one
  starts.

In-process, a step that fails (or an interrupt: SIGINT, SIGTERM, SIGHUP) before the
cut-over rolls back at once: the target is torn down and the source serves again; from the
cut-over on, a failure ends the run ``failed`` (``interrupted``) without undoing anything,
and the next run resumes it. No write the target acknowledged is ever discarded.

A lock file (``flock``) held for the whole run keeps two transitions of one target apart; a
killed process releases it with its last breath, so "unfinished in the log and nobody holds
the lock" is exactly "interrupted".
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

from scaling.transition import log as tlog
from scaling.transition.errors import StepFailed
from scaling.transition.plan import CUTOVER, Step, cutover_index

LOCK_FILE = "transition.lock"
TRANSITION = "transition"  # the `step` of the transition's own lines
ROLLBACK_PREFIX = "rollback:"
NOTIFY = "notify"  # the webhook's delivery, logged after the transition's end
# Transition outcomes after which nothing is left to do.
FINAL = ("succeeded", "rolled-back")
# Writes stop on the source when this step starts (and resume on the target at the cut-over).
FREEZE = "freeze-source"

Progress = Callable[[str], None]


class TransitionBusy(RuntimeError):
    """Another transition of the same target holds its lock."""


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP arrived while a step ran."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class StepContext:
    """What a step's action gets: who moves where, the progress printer, and ``values``
    shared between the steps of one run (the service keeps its running phases there)."""

    transition: str
    source: str
    target: str
    progress: Progress
    retire: bool = False
    values: dict[str, Any] = field(default_factory=dict)
    measurements: dict[str, dict[str, Any]] = field(default_factory=dict)


Action = Callable[[StepContext], Mapping[str, Any] | None]


@dataclass(frozen=True)
class Undo:
    """Rolls back what the step ``after`` did, if that step had started."""

    name: str
    after: str
    run: Action


# --- the log read as transitions (pure) ----------------------------------------------------


@dataclass
class Record:
    """One transition as its log lines tell it."""

    id: str
    source: str | None = None
    target: str | None = None
    platform: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    outcome: str | None = None  # of the latest `end` line; None while it runs (or was killed)
    failed_step: str | None = None
    error: str | None = None
    open: bool = True  # not ended with an outcome of FINAL
    started: list[str] = field(default_factory=list)  # steps with a start line, in order
    done: list[str] = field(default_factory=list)  # steps whose latest line is `end ok`
    running: str | None = None  # a step started and never ended (killed mid-step)
    undone: list[str] = field(default_factory=list)  # undo actions that ended ok
    measurements: dict[str, dict[str, Any]] = field(default_factory=dict)
    # step -> (latest start, latest end or None), unix seconds
    times: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    resumes: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "transition": self.id,
            "source": self.source,
            "target": self.target,
            "platform": self.platform,
            "outcome": self.outcome if not self.open or self.outcome else "unfinished",
            "failedStep": self.failed_step,
            "error": self.error,
            "startedAt": iso(self.started_at),
            "endedAt": iso(self.ended_at),
            "stepsDone": list(self.done),
            "interruptedStep": self.running,
            "resumes": self.resumes,
            "measurements": derived(self),
        }


def iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def records(events: Sequence[Mapping[str, Any]]) -> list[Record]:
    """The transitions of a log, in the order they started."""
    found: dict[str, Record] = {}
    for event in events:
        tid = str(event.get("transition") or "")
        if not tid:
            continue
        rec = found.setdefault(tid, Record(tid))
        step, kind = str(event.get("step") or ""), event.get("event")
        at = event.get("at")
        if step == TRANSITION:
            if kind == "start":
                rec.source, rec.target = event.get("source"), event.get("target")
                rec.platform = event.get("platform")
                rec.started_at = at
            elif kind == "resume":
                rec.resumes += 1
                rec.open = True
                rec.outcome = rec.failed_step = rec.error = rec.ended_at = None
            elif kind == "end":
                rec.outcome = event.get("outcome")
                rec.failed_step = event.get("failed_step")
                rec.error = event.get("error")
                rec.ended_at = at
                rec.open = rec.outcome not in FINAL
            continue
        if step == NOTIFY:
            continue
        if kind == "report":  # figures others add to a transition (a load harness's)
            rec.measurements[step] = dict(event.get("measurements") or {})
            continue
        if step.startswith(ROLLBACK_PREFIX):
            name = step[len(ROLLBACK_PREFIX) :]
            if kind == "end" and event.get("outcome") == "ok" and name not in rec.undone:
                rec.undone.append(name)
            continue
        if kind == "start" and isinstance(at, int | float):
            rec.times[step] = (float(at), None)
        elif kind == "end" and step in rec.times and isinstance(at, int | float):
            rec.times[step] = (rec.times[step][0], float(at))
        if kind == "start":
            if step not in rec.started:
                rec.started.append(step)
            if step in rec.done:
                rec.done.remove(step)
            rec.running = step
        elif kind == "end":
            if rec.running == step:
                rec.running = None
            if event.get("outcome") == "ok":
                if step not in rec.done:
                    rec.done.append(step)
                rec.measurements[step] = dict(event.get("measurements") or {})
            elif step in rec.done:
                rec.done.remove(step)
    return list(found.values())


def latest(events: Sequence[Mapping[str, Any]]) -> Record | None:
    found = records(events)
    return found[-1] if found else None


def derived(rec: Record) -> dict[str, Any]:
    """The figures of a transition: each step's measurements, the total time and how long
    writes were stopped on the database (from freeze-source's ``writes_stopped_at``, else its
    start, to promote-target's end)."""
    out: dict[str, Any] = {"steps": {k: v for k, v in rec.measurements.items() if v}}
    if rec.started_at is not None and rec.ended_at is not None:
        out["totalSeconds"] = round(rec.ended_at - rec.started_at, 3)
    freeze, promote = rec.times.get(FREEZE), rec.times.get(CUTOVER)
    if freeze is not None and promote is not None and promote[1] is not None:
        # The step may do things first that leave writes flowing (a Patroni source's
        # replicas stop); it says when writes stopped.
        stopped_at = rec.measurements.get(FREEZE, {}).get("writes_stopped_at", freeze[0])
        out["writesStoppedSeconds"] = round(promote[1] - float(stopped_at), 3)
    return out


# --- the lock ------------------------------------------------------------------------------


class TransitionLock:
    """An exclusive ``flock`` on ``path``, held from ``acquire`` to ``release``; the file
    says who holds it (pid, since when), for the message another run prints."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self, target: str) -> TransitionLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise TransitionBusy(
                f"a transition to {target} is already running ({holder}; lock {self.path})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {iso(time.time())}\n")
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> TransitionLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_locked(path: Path) -> bool:
    """Whether some process holds the lock at ``path`` now."""
    if not path.exists():
        return False
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


# --- signals -------------------------------------------------------------------------------

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Signals:
    """While armed, SIGINT/SIGTERM/SIGHUP raise :class:`Interrupted` in the main thread;
    while a rollback runs they are only noted (a rollback is not left half-done by a second
    Ctrl-C). Signals the caller ignores stay ignored; off the main thread nothing changes."""

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self.armed = True
        self.noted: int | None = None

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.armed:
            raise Interrupted(signum)
        self.noted = signum

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        armed, self.armed = self.armed, False
        try:
            yield
        finally:
            self.armed = armed


# --- the run -------------------------------------------------------------------------------


@dataclass
class RunResult:
    transition: str
    outcome: str  # succeeded | rolled-back | failed | interrupted | rollback-failed
    failed_step: str | None = None
    error: str | None = None
    measurements: dict[str, Any] = field(default_factory=dict)
    steps_done: list[str] = field(default_factory=list)
    undone: list[str] = field(default_factory=list)
    resumed_from: str | None = None  # the step a resumed transition went on from
    recovered: Record | None = None  # an interrupted transition rolled back first
    recovered_undone: list[str] = field(default_factory=list)  # its undo actions run now
    signal: int | None = None  # the signal that interrupted the run
    started_at: float | None = None
    ended_at: float | None = None
    cutover_passed: bool = False


class Runner:
    """Runs ``plan`` with ``actions`` (step name → function) and ``undo`` (in the order a
    rollback runs them), logging to ``log_file``. The caller holds the target's lock."""

    def __init__(
        self,
        *,
        log_file: Path,
        source: str,
        target: str,
        platform: str,
        plan: Sequence[Step],
        actions: Mapping[str, Action],
        undo: Sequence[Undo] = (),
        progress: Progress | None = None,
        retire: bool = False,
        values: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        missing = [s.name for s in plan if s.name not in actions]
        if missing:
            raise ValueError(f"no action for step(s) {', '.join(missing)}")
        self.log_file = log_file
        self.plan = list(plan)
        self.actions = actions
        self.undo = list(undo)
        self.platform = platform
        self.say = _best_effort(progress or (lambda message: None))
        self.clock = clock
        self.new_id = new_id or (lambda: _new_id(target, clock()))
        self.cut = cutover_index(self.plan)
        self.ctx = StepContext(
            transition="",
            source=source,
            target=target,
            progress=self.say,
            retire=retire,
            values=values if values is not None else {},
        )

    # The log ---------------------------------------------------------------------------
    def _log(self, step: str, event: str, **fields: Any) -> None:
        line: dict[str, Any] = {"transition": self.ctx.transition, "step": step}
        line.update(event=event, at=round(self.clock(), 3))
        line.update({k: v for k, v in fields.items() if v is not None})
        tlog.append(self.log_file, line)

    def pending(self) -> Record | None:
        """The target's latest transition when it is unfinished."""
        rec = latest(tlog.read(self.log_file))
        return rec if rec is not None and rec.open else None

    def cutover_started(self, rec: Record) -> bool:
        return any(s.name in rec.started for s in self.plan[self.cut :])

    # The run ---------------------------------------------------------------------------
    def run(self) -> RunResult:
        with _Signals() as signals:
            previous = self.pending()
            recovered: RunResult | None = None
            if previous is not None:
                self._check_same(previous)
                if self.cutover_started(previous):
                    return self._resume(previous, signals)
                recovered = self._recover(previous, signals)
                if recovered.outcome != "rolled-back":
                    return recovered
            result = self._fresh(signals)
            if recovered is not None:
                result.recovered = previous
                result.recovered_undone = recovered.undone
            return result

    def _check_same(self, previous: Record) -> None:
        from scaling.transition.plan import TransitionRefused

        if previous.source not in (None, self.ctx.source):
            raise TransitionRefused(
                f"transition {previous.id} ({previous.source} → {previous.target}) is "
                f"unfinished: finish it first (--from {previous.source})"
            )

    def _fresh(self, signals: _Signals) -> RunResult:
        self.ctx.transition = self.new_id()
        started = self.clock()
        self._log(
            TRANSITION,
            "start",
            source=self.ctx.source,
            target=self.ctx.target,
            platform=self.platform,
            steps=[s.name for s in self.plan],
            pid=os.getpid(),
            retire=self.ctx.retire,
        )
        self.say(f"transition {self.ctx.transition}: {self.ctx.source} → {self.ctx.target}")
        return self._steps(set(), set(), signals, started, None)

    def _resume(self, previous: Record, signals: _Signals) -> RunResult:
        self.ctx.transition = previous.id
        self.ctx.measurements.update(previous.measurements)
        first = next((s.name for s in self.plan if s.name not in previous.done), None)
        why = previous.outcome or f"killed during {previous.running or 'a step'}"
        self._log(TRANSITION, "resume", from_step=first, previous=why, pid=os.getpid())
        self.say(
            f"transition {previous.id} was {why} after its cut-over: resuming (forward "
            f"only) at {first}"
        )
        started = previous.started_at if previous.started_at is not None else self.clock()
        return self._steps(set(previous.done), set(previous.started), signals, started, first)

    def _recover(self, previous: Record, signals: _Signals) -> RunResult:
        """Roll back an unfinished transition that never reached its cut-over."""
        self.ctx.transition = previous.id
        why = previous.outcome or f"killed during {previous.running or 'a step'}"
        self._log(TRANSITION, "resume", previous=why, rollback=True, pid=os.getpid())
        self.say(
            f"transition {previous.id} was {why} before its cut-over: rolling it back "
            "(the source keeps serving)"
        )
        undone, error = self._rollback(set(previous.started), set(previous.undone), signals)
        outcome = "rolled-back" if error is None else "rollback-failed"
        failed = previous.failed_step or previous.running
        self._end(outcome, failed, error or previous.error or f"interrupted ({why})")
        rec = latest(tlog.read(self.log_file))
        return RunResult(
            transition=previous.id,
            outcome=outcome,
            failed_step=failed,
            error=error,
            undone=undone,
            measurements=derived(rec) if rec else {},
            started_at=previous.started_at,
            ended_at=self.clock(),
        )

    def _steps(
        self,
        done: set[str],
        started: set[str],
        signals: _Signals,
        started_at: float,
        resumed_from: str | None,
    ) -> RunResult:
        result = RunResult(
            self.ctx.transition, "succeeded", resumed_from=resumed_from, started_at=started_at
        )
        for index, step in enumerate(self.plan):
            if step.name in done:
                continue
            forward = index >= self.cut
            started.add(step.name)
            self._log(step.name, "start", cutover=step.cutover or None)
            self.say(f"{step.name}: {step.description}")
            began = self.clock()
            try:
                measured = dict(self.actions[step.name](self.ctx) or {})
            except KeyboardInterrupt as stop:
                # Ours, or the local runner's own Interrupted (it carries the signal too).
                signum = int(getattr(stop, "signum", signal.SIGINT))
                result.signal = signum
                text = f"interrupted by {signal.Signals(signum).name}"
                self._log(step.name, "end", outcome="interrupted", error=text)
                return self._failed(result, step.name, text, forward, started, signals, True)
            except Exception as error:  # a step's failure, whatever its kind
                text = error.reason if isinstance(error, StepFailed) else _describe(error)
                self._log(
                    step.name,
                    "end",
                    outcome="failed",
                    error=text,
                    seconds=round(self.clock() - began, 3),
                )
                return self._failed(result, step.name, text, forward, started, signals, False)
            measured.setdefault("seconds", round(self.clock() - began, 3))
            self.ctx.measurements[step.name] = measured
            self._log(step.name, "end", outcome="ok", measurements=measured)
            done.add(step.name)
            if forward:
                result.cutover_passed = True
        result.steps_done = [s.name for s in self.plan if s.name in done]
        self._end("succeeded", None, None)
        return self._close(result)

    def _failed(
        self,
        result: RunResult,
        step: str,
        error: str,
        forward: bool,
        started: set[str],
        signals: _Signals,
        interrupted: bool,
    ) -> RunResult:
        result.failed_step, result.error = step, error
        result.cutover_passed = forward
        if forward:
            # From the cut-over on: never undo; the next run goes on from here.
            result.outcome = "interrupted" if interrupted else "failed"
            self._end(result.outcome, step, error)
            return self._close(result)
        self.say(f"{step} failed before the cut-over ({error}): rolling back")
        result.undone, undo_error = self._rollback(started, set(), signals)
        result.outcome = "rolled-back" if undo_error is None else "rollback-failed"
        if undo_error is not None:
            result.error = f"{error}; then the rollback failed: {undo_error}"
        self._end(result.outcome, step, result.error)
        return self._close(result)

    def _rollback(
        self, started: set[str], already: set[str], signals: _Signals
    ) -> tuple[list[str], str | None]:
        """Run the undo actions of the started steps; stop at the first that fails (what
        is left stays for the next run), so the target is never torn down while the
        source could not be given back its writes."""
        undone: list[str] = []
        with signals.held():
            for undo in self.undo:
                if undo.after not in started or undo.name in already:
                    continue
                step = ROLLBACK_PREFIX + undo.name
                self._log(step, "start")
                self.say(f"rollback: {undo.name}")
                try:
                    measured = dict(undo.run(self.ctx) or {})
                except Exception as error:
                    text = error.reason if isinstance(error, StepFailed) else _describe(error)
                    self._log(step, "end", outcome="failed", error=text)
                    return undone, f"{undo.name}: {text}"
                self._log(step, "end", outcome="ok", measurements=measured)
                undone.append(undo.name)
        return undone, None

    def _end(self, outcome: str, failed_step: str | None, error: str | None) -> None:
        rec = latest(tlog.read(self.log_file))
        summary = derived(rec) if rec else {}
        if rec is not None and rec.started_at is not None:
            summary["totalSeconds"] = round(self.clock() - rec.started_at, 3)
        self._log(
            TRANSITION,
            "end",
            outcome=outcome,
            failed_step=failed_step,
            error=error,
            measurements=summary,
        )

    def _close(self, result: RunResult) -> RunResult:
        rec = latest(tlog.read(self.log_file))
        if rec is not None:
            result.measurements = derived(rec)
            result.steps_done = list(rec.done)
            result.ended_at = rec.ended_at
        return result


def _best_effort(progress: Progress) -> Progress:
    """``progress`` that never fails: after a SIGHUP the terminal is gone, and writing to
    it (EIO) must not cut a rollback short."""

    def emit(message: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            progress(message)

    return emit


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _new_id(target: str, now: float) -> str:
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{target}-{stamp}-{secrets.token_hex(2)}"
