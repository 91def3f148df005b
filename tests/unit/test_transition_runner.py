"""The transition runner with injected step functions: the log it writes, rollback before
the cut-over, forward only after it, and what the next run does with an interrupted one
(a step raising KeyboardInterrupt, or a process killed mid-step: a log with a started step
that never ended and nobody holding the lock)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from scaling.transition import log as tlog
from scaling.transition.errors import StepFailed
from scaling.transition.plan import Step, TransitionRefused
from scaling.transition.runner import (
    LOCK_FILE,
    Runner,
    StepContext,
    TransitionBusy,
    TransitionLock,
    Undo,
    derived,
    is_locked,
    latest,
    records,
)

PLAN = [
    Step("validate-target", "v"),
    Step("start-target", "s"),
    Step("freeze-source", "f"),
    Step("promote-target", "p", cutover=True),
    Step("switch-front-door", "w"),
    Step("retire-source", "r"),
]
NAMES = [s.name for s in PLAN]


class Calls:
    """Step and undo functions that record their calls; ``fail`` maps a step to what it
    raises (once, unless ``always``)."""

    def __init__(self, fail: Mapping[str, BaseException] | None = None, always: bool = False):
        self.fail = dict(fail or {})
        self.always = always
        self.calls: list[str] = []

    def step(self, name: str) -> Callable[[StepContext], dict[str, Any]]:
        def run(ctx: StepContext) -> dict[str, Any]:
            self.calls.append(name)
            if name in self.fail:
                error = self.fail[name] if self.always else self.fail.pop(name)
                raise error
            return {"lag_bytes": 0, "step": name}

        return run

    def actions(self) -> dict[str, Callable[[StepContext], dict[str, Any]]]:
        return {name: self.step(name) for name in NAMES}

    def undo(self) -> list[Undo]:
        return [
            Undo("restore-front-door", "switch-front-door", self.step("undo:front")),
            Undo("unfreeze-source", "freeze-source", self.step("undo:unfreeze")),
            Undo("stop-target", "start-target", self.step("undo:stop-target")),
        ]


def make(log: Path, calls: Calls, source: str = "launch") -> Runner:
    """A runner; the transitions it starts are numbered on from those in the log."""
    count = len([r for r in records(tlog.read(log)) if r.id.startswith("growth-t")])
    ids = iter(f"growth-t{n}" for n in range(count + 1, count + 10))
    return Runner(
        log_file=log,
        source=source,
        target="growth",
        platform="local",
        plan=PLAN,
        actions=calls.actions(),
        undo=calls.undo(),
        new_id=lambda: next(ids),
    )


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "growth" / tlog.LOG_FILE


def lines(log: Path) -> list[tuple[str, str, str | None]]:
    return [(e["step"], e["event"], e.get("outcome")) for e in tlog.read(log)]


def test_success_logs_every_step_start_and_end(log: Path) -> None:
    calls = Calls()
    result = make(log, calls).run()
    assert result.outcome == "succeeded" and result.failed_step is None
    assert calls.calls == NAMES
    expected = [("transition", "start", None)]
    for name in NAMES:
        expected += [(name, "start", None), (name, "end", "ok")]
    expected.append(("transition", "end", "succeeded"))
    assert lines(log) == expected
    events = tlog.read(log)
    start = events[0]
    assert start["source"] == "launch" and start["target"] == "growth"
    assert start["steps"] == NAMES and start["pid"] == os.getpid()
    assert {e["transition"] for e in events} == {"growth-t1"}
    assert all(isinstance(e["at"], float) for e in events)
    promote = next(e for e in events if e["step"] == "promote-target" and e["event"] == "start")
    assert promote["cutover"] is True
    freeze_end = next(e for e in events if e["step"] == "freeze-source" and e["event"] == "end")
    assert freeze_end["measurements"]["lag_bytes"] == 0
    assert isinstance(freeze_end["measurements"]["seconds"], float)
    end = events[-1]["measurements"]
    assert "totalSeconds" in end and "writesStoppedSeconds" in end
    assert end["steps"]["start-target"]["step"] == "start-target"


def test_failure_before_the_cutover_rolls_back_what_started(log: Path) -> None:
    calls = Calls({"freeze-source": StepFailed("freeze-source", "source did not stop")})
    result = make(log, calls).run()
    assert result.outcome == "rolled-back"
    assert result.failed_step == "freeze-source"
    assert result.error == "source did not stop"
    # The front door was never switched: only the undos of the steps that started run,
    # in the rollback's order (the source's writes back before the target goes).
    assert calls.calls == [*NAMES[:3], "undo:unfreeze", "undo:stop-target"]
    assert result.undone == ["unfreeze-source", "stop-target"]
    assert lines(log)[-6:] == [
        ("freeze-source", "end", "failed"),
        ("rollback:unfreeze-source", "start", None),
        ("rollback:unfreeze-source", "end", "ok"),
        ("rollback:stop-target", "start", None),
        ("rollback:stop-target", "end", "ok"),
        ("transition", "end", "rolled-back"),
    ]
    end = tlog.read(log)[-1]
    assert end["failed_step"] == "freeze-source" and end["error"] == "source did not stop"


def test_an_unexpected_exception_is_a_failure_too(log: Path) -> None:
    calls = Calls({"start-target": OSError(28, "No space left on device")})
    result = make(log, calls).run()
    assert result.outcome == "rolled-back"
    assert result.error == "OSError: [Errno 28] No space left on device"
    assert calls.calls[-1] == "undo:stop-target"


def test_failure_after_the_cutover_only_goes_forward(log: Path) -> None:
    calls = Calls({"switch-front-door": StepFailed("switch-front-door", "nginx -t failed")})
    result = make(log, calls).run()
    assert result.outcome == "failed" and result.failed_step == "switch-front-door"
    assert result.cutover_passed
    assert not [c for c in calls.calls if c.startswith("undo:")]
    assert lines(log)[-1] == ("transition", "end", "failed")
    # The next run resumes at the failed step: what ended ok is not run again.
    calls.calls.clear()
    again = make(log, calls).run()
    assert again.outcome == "succeeded"
    assert again.transition == result.transition and again.resumed_from == "switch-front-door"
    assert calls.calls == ["switch-front-door", "retire-source"]
    resume = next(e for e in tlog.read(log) if e["event"] == "resume")
    assert resume["from_step"] == "switch-front-door" and resume["previous"] == "failed"
    rec = latest(tlog.read(log))
    assert rec is not None and not rec.open and rec.done == NAMES and rec.resumes == 1


@pytest.mark.parametrize("step", NAMES[:3])
def test_ctrl_c_before_the_cutover_rolls_back_at_once(log: Path, step: str) -> None:
    calls = Calls({step: KeyboardInterrupt()})
    result = make(log, calls).run()
    assert result.outcome == "rolled-back"
    assert result.signal == signal.SIGINT and result.error == "interrupted by SIGINT"
    assert (step, "end", "interrupted") in lines(log)
    started = NAMES[: NAMES.index(step) + 1]
    undos = [u for u, after in (("undo:unfreeze", "freeze-source"),
                                ("undo:stop-target", "start-target")) if after in started]  # fmt: skip
    assert calls.calls == [*started, *undos]
    # Nothing is left for the next run to recover: it starts a new transition.
    calls.calls.clear()
    again = make(log, calls).run()
    assert again.outcome == "succeeded" and again.transition == "growth-t2"
    assert again.recovered is None and calls.calls == NAMES


@pytest.mark.parametrize("step", NAMES[3:])
def test_ctrl_c_after_the_cutover_is_resumed_by_the_next_run(log: Path, step: str) -> None:
    calls = Calls({step: KeyboardInterrupt()})
    result = make(log, calls).run()
    assert result.outcome == "interrupted" and result.failed_step == step
    assert not [c for c in calls.calls if c.startswith("undo:")]
    assert lines(log)[-2:] == [(step, "end", "interrupted"), ("transition", "end", "interrupted")]
    calls.calls.clear()
    again = make(log, calls).run()
    assert again.outcome == "succeeded" and again.transition == "growth-t1"
    assert calls.calls == NAMES[NAMES.index(step) :]


def killed_log(log: Path, upto: str) -> None:
    """The log a transition leaves when its process is killed while ``upto`` runs."""
    events: list[dict[str, Any]] = [
        {"transition": "growth-old", "step": "transition", "event": "start", "at": 1.0,
         "source": "launch", "target": "growth", "steps": NAMES},
    ]  # fmt: skip
    for name in NAMES[: NAMES.index(upto)]:
        events.append({"transition": "growth-old", "step": name, "event": "start", "at": 2.0})
        events.append(
            {"transition": "growth-old", "step": name, "event": "end", "at": 3.0, "outcome": "ok"}
        )
    events.append({"transition": "growth-old", "step": upto, "event": "start", "at": 4.0})
    for event in events:
        tlog.append(log, event)
    # A torn last line: the process died while writing it.
    with open(log, "a") as handle:
        handle.write('{"transition": "growth-old", "step": ')


@pytest.mark.parametrize("step", NAMES[:3])
def test_killed_before_the_cutover_is_rolled_back_then_done_again(log: Path, step: str) -> None:
    killed_log(log, step)
    assert not is_locked(log.parent / LOCK_FILE)
    calls = Calls()
    result = make(log, calls).run()
    started = NAMES[: NAMES.index(step) + 1]
    undos = [u for u, after in (("undo:unfreeze", "freeze-source"),
                                ("undo:stop-target", "start-target")) if after in started]  # fmt: skip
    # First the rollback of the killed transition, then a new one from the start.
    assert calls.calls == [*undos, *NAMES]
    assert result.outcome == "succeeded" and result.transition == "growth-t1"
    assert result.recovered is not None and result.recovered.id == "growth-old"
    assert result.recovered.running == step
    assert result.recovered_undone == [u.replace("undo:", "").replace("unfreeze", "unfreeze-source")
                                       for u in undos]  # fmt: skip
    old = next(r for r in records(tlog.read(log)) if r.id == "growth-old")
    assert old.outcome == "rolled-back" and not old.open and old.failed_step == step
    assert old.error == f"interrupted (killed during {step})"


@pytest.mark.parametrize("step", NAMES[3:])
def test_killed_after_the_cutover_is_resumed_at_the_step_it_died_in(log: Path, step: str) -> None:
    killed_log(log, step)
    calls = Calls()
    result = make(log, calls).run()
    assert calls.calls == NAMES[NAMES.index(step) :]
    assert result.outcome == "succeeded" and result.transition == "growth-old"
    assert result.resumed_from == step
    resume = [e for e in tlog.read(log) if e["event"] == "resume"]
    assert resume[0]["previous"] == f"killed during {step}"


def test_a_failed_rollback_is_finished_by_the_next_run_without_repeating_its_done_part(
    log: Path,
) -> None:
    calls = Calls(
        {
            "freeze-source": StepFailed("freeze-source", "timeout"),
            "undo:stop-target": StepFailed("stop-target", "postgres-1 still running"),
        }
    )
    result = make(log, calls).run()
    assert result.outcome == "rollback-failed"
    assert (
        result.error == "timeout; then the rollback failed: stop-target: postgres-1 still running"
    )
    assert calls.calls[-2:] == ["undo:unfreeze", "undo:stop-target"]
    calls.calls.clear()
    again = make(log, calls).run()
    # The unfreeze was done already: only the target's teardown is tried again.
    assert calls.calls == ["undo:stop-target", *NAMES]
    assert again.outcome == "succeeded" and again.recovered is not None


def test_a_rollback_stops_at_a_failing_undo_so_the_target_copy_survives(log: Path) -> None:
    calls = Calls(
        {
            "freeze-source": StepFailed("freeze-source", "timeout"),
            "undo:unfreeze": StepFailed("unfreeze-source", "source refuses"),
        },
        always=True,
    )
    result = make(log, calls).run()
    assert result.outcome == "rollback-failed"
    assert "undo:stop-target" not in calls.calls


def test_an_unfinished_transition_from_another_source_is_refused(log: Path) -> None:
    killed_log(log, "promote-target")
    with pytest.raises(TransitionRefused) as refused:
        make(log, Calls(), source="other").run()
    assert str(refused.value) == (
        "transition growth-old (launch → growth) is unfinished: finish it first (--from launch)"
    )


def test_every_step_needs_an_action(log: Path) -> None:
    with pytest.raises(ValueError, match="no action for step"):
        Runner(log_file=log, source="a", target="b", platform="local", plan=PLAN, actions={})


def test_the_lock_keeps_a_second_transition_out(tmp_path: Path) -> None:
    path = tmp_path / "growth" / LOCK_FILE
    assert not is_locked(path)
    with TransitionLock(path).acquire("growth"):
        assert is_locked(path)
        with pytest.raises(TransitionBusy) as busy:
            TransitionLock(path).acquire("growth")
        assert str(busy.value).startswith(
            f"a transition to growth is already running (pid {os.getpid()} since "
        )
    assert not is_locked(path)
    TransitionLock(path).acquire("growth").release()


def test_a_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    path = tmp_path / LOCK_FILE
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path;"
         "from scaling.transition.runner import TransitionLock;"
         f"held = TransitionLock(Path({str(path)!r})).acquire('growth'); print('held', flush=True);"
         "time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert is_locked(path)
        holder.kill()
        holder.wait(10)
        assert not is_locked(path)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()


def test_records_read_a_log_as_transitions(log: Path) -> None:
    killed_log(log, "start-target")
    [rec] = records(tlog.read(log))
    assert rec.open and rec.outcome is None and rec.running == "start-target"
    assert rec.done == ["validate-target"] and rec.started == ["validate-target", "start-target"]
    summary = rec.summary()
    assert summary["outcome"] == "unfinished" and summary["interruptedStep"] == "start-target"
    assert json.dumps(summary)


def test_sigterm_during_a_step_before_the_cutover_rolls_back(log: Path) -> None:
    calls = Calls()
    actions = calls.actions()

    def terminated(ctx: StepContext) -> dict[str, Any]:
        calls.calls.append("start-target")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler raises before this ends
        raise AssertionError("SIGTERM did not interrupt the step")

    actions["start-target"] = terminated
    previous = signal.getsignal(signal.SIGTERM)
    runner = Runner(log_file=log, source="launch", target="growth", platform="local",
                    plan=PLAN, actions=actions, undo=calls.undo())  # fmt: skip
    result = runner.run()
    assert result.outcome == "rolled-back" and result.signal == signal.SIGTERM
    assert result.error == "interrupted by SIGTERM"
    assert calls.calls == ["validate-target", "start-target", "undo:stop-target"]
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored


KILLED_RUN = """
import sys, time
from pathlib import Path
from scaling.transition.plan import Step
from scaling.transition.runner import LOCK_FILE, Runner, TransitionLock
log = Path(sys.argv[1])
lock = TransitionLock(log.parent / LOCK_FILE).acquire("growth")
plan = [Step("validate-target", "v"), Step("start-target", "s"), Step("promote-target", "p", True)]
def slow(ctx):
    print("in", ctx.transition, flush=True)
    time.sleep(60)
actions = {"validate-target": lambda ctx: None, "start-target": slow, "promote-target": slow}
stop_at = sys.argv[2]
if stop_at == "promote-target":
    actions["start-target"] = lambda ctx: None
Runner(log_file=log, source="launch", target="growth", platform="local", plan=plan,
       actions=actions).run()
"""


@pytest.mark.parametrize("step", ["start-target", "promote-target"])
def test_a_run_killed_with_sigkill_is_recovered_by_the_next(log: Path, step: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    child = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(log), step],
                             stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().startswith("in growth-")
        assert is_locked(log.parent / LOCK_FILE)
        with pytest.raises(TransitionBusy):
            TransitionLock(log.parent / LOCK_FILE).acquire("growth")
        child.kill()
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    assert not is_locked(log.parent / LOCK_FILE)
    killed = latest(tlog.read(log))
    assert killed is not None and killed.open and killed.running == step
    undone: list[str] = []
    plan = [Step("validate-target", "v"), Step("start-target", "s"),
            Step("promote-target", "p", True)]  # fmt: skip
    ran: list[str] = []
    actions = {s.name: (lambda ctx, n=s.name: ran.append(n)) for s in plan}
    undo = [Undo("stop-target", "start-target", lambda ctx: undone.append("stop-target"))]
    with TransitionLock(log.parent / LOCK_FILE).acquire("growth"):
        result = Runner(log_file=log, source="launch", target="growth", platform="local",
                        plan=plan, actions=actions, undo=undo).run()  # fmt: skip
    assert result.outcome == "succeeded"
    if step == "start-target":  # before the cut-over: rolled back, then a new transition
        assert undone == ["stop-target"] and ran == [s.name for s in plan]
        assert result.recovered is not None and result.transition != killed.id
    else:  # the cut-over had started: resumed there, nothing undone
        assert undone == [] and ran == ["promote-target"] and result.transition == killed.id


def test_reports_added_to_a_transition_join_its_figures(log: Path) -> None:
    result = make(log, Calls()).run()
    figures = {"rows_acknowledged": 10, "rows_present": 10}
    tlog.append(log, {"transition": result.transition, "step": "client-load", "event": "report",
                      "at": 9.0, "outcome": "ok", "measurements": figures})  # fmt: skip
    rec = latest(tlog.read(log))
    assert rec is not None and not rec.open and rec.done == NAMES
    assert rec.summary()["measurements"]["steps"]["client-load"] == figures


def test_writes_stopped_counts_from_when_freeze_source_says_writes_stopped() -> None:
    # freeze-source first stops a Patroni source's replicas (writes still flow), then says
    # when writes stopped: the figure runs from then to the cut-over's end.
    def step(name: str, start: float, end: float, **measured: Any) -> list[dict[str, Any]]:
        return [
            {"transition": "t", "step": name, "event": "start", "at": start},
            {"transition": "t", "step": name, "event": "end", "at": end, "outcome": "ok",
             "measurements": measured},
        ]  # fmt: skip

    events = [
        *step("freeze-source", 100.0, 103.5, writes_stopped_at=103.0),
        *step("final-sync", 103.5, 104.0),
        *step("promote-target", 104.0, 104.5),
    ]
    (rec,) = records(events)
    assert derived(rec)["writesStoppedSeconds"] == 1.5
    # A step that does not say: from its start.
    del events[1]["measurements"]["writes_stopped_at"]
    (rec,) = records(events)
    assert derived(rec)["writesStoppedSeconds"] == 4.5
