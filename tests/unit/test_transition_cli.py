"""`sikka-scaling transition`: prepare (without the Pulumi CLI), refusals, exit codes and
messages, the webhook and `status` showing the last transition. The local steps are
replaced by recording functions (the real ones drive servers: tests/integration)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.transition import LOCAL_STEPS as STEPS
from test_transition_notify import Hook

from scaling.cli import main
from scaling.transition import log as tlog
from scaling.transition import service
from scaling.transition.errors import StepFailed
from scaling.transition.runner import LOCK_FILE, StepContext, TransitionLock, Undo


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "state"
    monkeypatch.setenv("SIKKA_STATE_DIR", str(root))
    monkeypatch.delenv("SIKKA_WEBHOOK_URL", raising=False)
    (tmp_path / "no-pulumi").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "no-pulumi"))
    return root


class FakeSteps:
    """Installs recording step functions in place of the local ones; ``fail``: step →
    exception raised once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        self.fail: dict[str, BaseException] = {}
        monkeypatch.setattr(service, "_local_actions", self.actions)
        monkeypatch.setattr(service, "_local_undo", self.undo)

    def _fn(self, name: str) -> Callable[[StepContext], dict[str, Any]]:
        def run(ctx: StepContext) -> dict[str, Any]:
            self.calls.append(name)
            if name in self.fail:
                raise self.fail.pop(name)
            return {"ok": name}

        return run

    def actions(self, pair: Any, force: bool) -> dict[str, Any]:
        return {name: self._fn(name) for name in STEPS}

    def undo(self, pair: Any) -> list[Undo]:
        return [
            Undo("unfreeze-source", "freeze-source", self._fn("undo:unfreeze")),
            Undo("stop-target", "start-target", self._fn("undo:stop-target")),
        ]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeSteps:
    return FakeSteps(monkeypatch)


EXECUTE = ["transition", "growth", "--execute", "--local"]


def test_prepare_without_the_pulumi_cli(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transition", "growth"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("prepared launch → growth: 9 steps (docker); nothing was changed\n")
    assert "  - pulumi:" not in out  # launch → growth on Docker: nothing the program leaves out
    assert "  - done by the cut-over's `pulumi up`" not in out
    assert (
        "  - the Pulumi CLI is not on PATH: no `pulumi preview` of growth "
        "(`sikka-scaling preview growth` lists its resources under the mock engine)\n"
    ) in out
    assert (
        f"  - source launch: not checked: no running local phase in {state / 'launch'} "
        "(no state.json)"
    ) in out
    assert "  pulumi config set sikka:promoteFrom launch --stack growth\n" in out
    assert "  pulumi config set sikka:promoteCutover true --stack growth\n" in out
    rendered = state / "growth" / "rendered"
    assert (rendered / "docker-compose.yml").is_file() and (rendered / ".env").is_file()
    assert "[transition] rendering the target's configs" in err
    assert not (state / "growth" / tlog.LOG_FILE).exists()  # prepare changes nothing else


def test_prepare_local_lists_the_steps_as_json(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["transition", "growth", "--local", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert {"success", "message", "actions", "nextSteps"} <= set(document)
    assert document["success"] is True and document["outcome"] == "prepared"
    assert [s["name"] for s in document["steps"]] == STEPS
    assert document["nextSteps"] == [
        "sikka-scaling transition growth --from launch --execute --local"
    ]
    assert document["exitCode"] == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["launch", "--from", "growth"], "growth → launch goes backwards; --force to do it anyway"),
        (["scale", "--from", "launch"], "launch → scale skips growth; --force to do it anyway"),
        (
            ["launch"],
            "launch is a launch stack, the first phase: there is no phase before it to move "
            "from; give --from STACK",
        ),
        (["growth", "--from", "growth"], "--from growth: the source and the target are one stack"),
    ],
)
def test_refusals_exit_2_with_the_reason(
    state: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["transition", *argv]) == 2
    assert capsys.readouterr().err.endswith(f"transition: {message}\n")


def test_backwards_with_force_is_prepared(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transition", "launch", "--from", "growth", "--force"]) == 0
    assert "  - growth → launch goes backwards: done anyway (--force)\n" in capsys.readouterr().out


def test_an_unknown_stack_is_refused(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transition", "nope"]) == 2
    assert (
        "transition: target stack nope: no Pulumi.nope.yaml here or in" in capsys.readouterr().err
    )


def test_execute_needs_local(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transition", "growth", "--execute"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "transition: --execute runs a transition on the processes of `local up` only (add "
        "--local); on docker it is stack config and two `pulumi up` runs: pulumi config set "
        "sikka:promoteTo growth --stack launch; pulumi up --stack launch; pulumi config set "
        "sikka:promoteFrom launch --stack growth; pulumi up --stack growth;"
    )


def test_retire_needs_execute(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transition", "growth", "--retire"]) == 2
    assert "--retire" in capsys.readouterr().err


def test_execute_succeeds_and_logs(
    state: Path, fake: FakeSteps, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(EXECUTE) == 0
    out, err = capsys.readouterr()
    assert fake.calls == STEPS
    assert out.startswith("launch → growth: succeeded in ")
    assert f"log: {state / 'growth' / tlog.LOG_FILE}\n" in out
    assert "[transition] promote-target: promote the target" in err
    events = tlog.read(state / "growth" / tlog.LOG_FILE)
    assert events[0]["step"] == "transition" and events[0]["event"] == "start"
    assert events[-1]["outcome"] == "succeeded"
    # Done once: again is refused, unless forced.
    assert main(EXECUTE) == 2
    assert "launch → growth already succeeded (transition growth-" in capsys.readouterr().err


def test_failure_before_the_cutover_exits_3_and_the_source_serves(
    state: Path, fake: FakeSteps, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.fail["catch-up"] = StepFailed("catch-up", "lag still 12 MB after 600 s")
    assert main(EXECUTE) == 3
    out = capsys.readouterr().out
    assert out.startswith(
        "launch → growth: catch-up failed before the cut-over (lag still 12 MB after 600 s); "
        "rolled back: the target was torn down and launch keeps serving\n"
    )
    assert fake.calls[-1] == "undo:stop-target"
    # Kept after the rollback, and the next run starts a new transition.
    assert main(EXECUTE) == 0


def test_failure_after_the_cutover_exits_4_and_the_next_run_resumes(
    state: Path, fake: FakeSteps, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.fail["validate-target-live"] = StepFailed("validate-target-live", "redis-1 down")
    assert main(EXECUTE) == 4
    out = capsys.readouterr().out
    assert out.startswith(
        "launch → growth: validate-target-live failed after the cut-over (redis-1 down); "
        "growth is the primary now and nothing was undone (no write is discarded); run the "
        "same command again to go on from there (forward only)\n"
    )
    assert (
        "to go back instead: sikka-scaling transition launch --from growth --execute --local "
        "--force (the same mechanism in reverse)"
    ) in out
    fake.calls.clear()
    assert main(EXECUTE) == 0
    assert fake.calls == ["validate-target-live", "retire-source"]
    assert "  - resumed transition growth-" in capsys.readouterr().out


def test_ctrl_c_before_the_cutover_exits_130(
    state: Path, fake: FakeSteps, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.fail["final-sync"] = KeyboardInterrupt()
    assert main(EXECUTE) == 130
    assert fake.calls[-2:] == ["undo:unfreeze", "undo:stop-target"]


def test_another_transition_running_exits_75(
    state: Path, fake: FakeSteps, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = TransitionLock(state / "growth" / LOCK_FILE).acquire("growth")
    try:
        assert service.is_running("growth")
        assert main(EXECUTE) == 75
    finally:
        lock.release()
    assert "transition: a transition to growth is already running (pid " in capsys.readouterr().err
    assert fake.calls == []
    assert not service.is_running("growth")


def test_prepare_says_a_killed_transition_is_unfinished(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = state / "growth" / tlog.LOG_FILE
    tlog.append(log, {"transition": "growth-x", "step": "transition", "event": "start",
                      "at": 1.0, "source": "launch", "target": "growth"})  # fmt: skip
    tlog.append(log, {"transition": "growth-x", "step": "catch-up", "event": "start", "at": 2.0})
    assert main(["transition", "growth", "--local"]) == 0
    out = capsys.readouterr().out
    assert (
        "transition growth-x (launch → growth) is unfinished (killed during catch-up): "
        "--execute rolls it back first (the source keeps serving), then starts over"
    ) in out


@pytest.mark.parametrize("failing", [None, "freeze-source"])
def test_the_webhook_hears_success_and_failure(
    state: Path, fake: FakeSteps, failing: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    if failing:
        fake.fail[failing] = StepFailed(failing, "timeout")
    with Hook() as hook:
        code = main([*EXECUTE, "--webhook", hook.url])
    assert code == (3 if failing else 0)
    [got] = hook.received
    assert got["source"] == "launch" and got["target"] == "growth"
    assert got["outcome"] == ("rolled-back" if failing else "succeeded")
    assert got["failedStep"] == failing
    assert got["transition"].startswith("growth-")
    out = capsys.readouterr().out
    assert f"webhook {hook.url.split('/hooks')[0]}: delivered after 1 attempt(s)\n" in out
    assert "s3cr3t" not in out
    notified = tlog.read(state / "growth" / tlog.LOG_FILE)[-1]
    assert notified["step"] == "notify" and notified["outcome"] == "ok"


def test_a_dead_webhook_does_not_fail_the_transition(
    state: Path,
    fake: FakeSteps,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with Hook() as hook:
        url = hook.url
    monkeypatch.setenv("SIKKA_WEBHOOK_URL", url)
    monkeypatch.setattr(service.notify, "PAUSE", 0.0)
    assert main(EXECUTE) == 0
    assert "NOT delivered (connection refused or unreachable)" in capsys.readouterr().out


def unreachable_phase(folder: Path) -> list[str]:
    """`status` options for a phase whose parts all refuse (port 1): measured at once."""
    document = {
        "stack": "any",
        "postgres": {"primary": "postgresql://sikka@127.0.0.1:1/sikka"},
        "redis": {"mode": "standalone", "url": "redis://127.0.0.1:1/0"},
    }
    path = folder / "unreachable.json"
    path.write_text(json.dumps(document))
    return ["--endpoints", str(path), "--no-host", "--no-history", "--json"]


def test_status_shows_the_last_transition(
    state: Path, fake: FakeSteps, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(EXECUTE) == 0
    capsys.readouterr()
    probe = unreachable_phase(state.parent)
    for stack, role in (("growth", "target"), ("launch", "source")):
        assert main(["status", stack, *probe]) == 6  # the probed part is unreachable
        last = json.loads(capsys.readouterr().out)["lastTransition"]
        assert last["source"] == "launch" and last["target"] == "growth"
        assert last["outcome"] == "succeeded" and last["role"] == role
        assert last["stepsDone"] == STEPS and last["failedStep"] is None
    # A phase that cannot be measured (retired) still says where it went.
    assert main(["status", "launch"]) == 1
    assert "last transition: launch → growth succeeded (transition growth-" in (
        capsys.readouterr().err
    )


def test_status_without_transitions_has_none(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    probe = unreachable_phase(state.parent)
    assert main(["status", "growth", *probe]) == 6
    assert json.loads(capsys.readouterr().out)["lastTransition"] is None
    assert service.last_transition("growth") is None


def test_the_same_move_again_is_allowed_once_it_was_moved_back(
    state: Path, fake: FakeSteps, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(EXECUTE) == 0
    back = ["transition", "launch", "--from", "growth", "--execute", "--local", "--force"]
    assert main(back) == 0
    assert (state / "launch" / tlog.LOG_FILE).is_file()  # the reverse is logged in launch's
    assert main(EXECUTE) == 0


def _run_in(folder: Path, stack: str, summary: dict[str, Any]) -> None:
    from scaling.local.state import RunState

    folder.mkdir(parents=True)
    (folder / "secrets.json").write_text("{}")
    RunState(
        stack=stack,
        phase=stack,
        state_dir=str(folder),
        secrets_file=str(folder / "secrets.json"),
        summary=summary,
        complete=True,
    ).save()


def test_a_running_target_is_never_taken_for_the_transitions_own(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pair = service._pair("growth", None, False, None, None)
    _run_in(pair.target_dir, "growth", {})
    ctx = StepContext("t", "launch", "growth", print)
    with pytest.raises(service.StepFailed) as failed:
        service._local_actions(pair, False)["validate-target"](ctx)
    assert str(failed.value) == (
        f"validate-target: a local run of growth is already in {pair.target_dir} and is not "
        "started again as a replica of launch (it was not retired by a transition): the "
        "transition starts the target itself; `sikka-scaling local down growth` first"
    )


def test_going_back_starts_the_retired_run_again_and_nothing_else(state: Path) -> None:
    pair = service._pair("launch", "growth", True, None, None)
    _run_in(pair.target_dir, "launch", {"retired": {"transition": "g-1", "target": "scale"}})
    ctx = StepContext("t", "growth", "launch", print)
    validate = service._local_actions(pair, True)["validate-target"]
    with pytest.raises(service.StepFailed) as failed:
        validate(ctx)
    assert "(it was retired by a transition to scale, not to growth)" in str(failed.value)
    # Retired by the move to growth: the way back starts that same run again.
    (pair.target_dir / "state.json").unlink()
    (pair.target_dir / "secrets.json").unlink()
    pair.target_dir.rmdir()
    _run_in(pair.target_dir, "launch", {"retired": {"transition": "g-1", "target": "growth"}})
    assert validate(ctx)["revive"] == str(pair.target_dir)
    # A rollback never tears a retired run down (its data is the fallback copy).
    undo = {u.name: u for u in service._local_undo(pair)}["stop-target"]
    assert undo.run(ctx) == {"stopped": 0, "note": "launch's retired run left as it was"}
    assert (pair.target_dir / "state.json").is_file()
    # Going back to growth (Patroni) from scale is refused, saying why.
    growth = service._pair("growth", "scale", True, None, None)
    _run_in(growth.target_dir, "growth", {"retired": {"transition": "s-1", "target": "scale"}})
    with pytest.raises(service.StepFailed) as failed:
        service._local_actions(growth, True)["validate-target"](
            StepContext("t", "scale", "growth", print)
        )
    assert "only a phase with one PostgreSQL and one Redis (launch)" in str(failed.value)


def fake_cli(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pulumi").write_text("#!/bin/sh\nexit 0\n")
    (folder / "pulumi").chmod(0o755)


def test_prepare_runs_the_given_preview_when_the_cli_is_there(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_cli(state.parent / "bin")
    monkeypatch.setenv("PATH", str(state.parent / "bin"))
    seen: list[tuple[str, Path]] = []

    def preview(stack: str, stack_file: Path) -> tuple[bool, str]:
        seen.append((stack, stack_file))
        return True, "12 create"

    result = service.prepare("growth", preview=preview)
    assert seen and seen[0][0] == "growth" and seen[0][1].name == "Pulumi.growth.yaml"
    assert "pulumi preview of growth: 12 create" in result.actions

    def broken(stack: str, stack_file: Path) -> tuple[bool, str]:
        raise RuntimeError("no backend")

    result = service.prepare("growth", preview=broken)
    assert "`pulumi preview` of growth failed: RuntimeError: no backend" in result.actions
    assert result.success


def test_the_automation_preview_without_the_cli_says_so(state: Path) -> None:
    from components.automation import preview

    ok, said = preview("growth", Path("Pulumi.growth.yaml"))
    assert not ok and said.startswith(
        "the Pulumi CLI is not on PATH: no `pulumi preview` of growth"
    )


def test_execute_rolls_a_killed_transition_back_first(
    state: Path, fake: FakeSteps, capsys: pytest.CaptureFixture[str]
) -> None:
    log = state / "growth" / tlog.LOG_FILE
    tlog.append(log, {"transition": "growth-x", "step": "transition", "event": "start",
                      "at": 1.0, "source": "launch", "target": "growth"})  # fmt: skip
    for step, event in (("start-target", "start"), ("start-target", "end"), ("catch-up", "start")):
        line = {"transition": "growth-x", "step": step, "event": event, "at": 2.0}
        tlog.append(log, {**line, "outcome": "ok"} if event == "end" else line)
    assert main(EXECUTE) == 0
    out = capsys.readouterr().out
    assert (
        "  - transition growth-x was unfinished (killed during catch-up): rolled back first "
        "(stop-target)\n"
    ) in out
    assert fake.calls == ["undo:stop-target", *STEPS]


def test_the_status_document_always_has_the_key() -> None:
    """Every builder of the status document (the CLI, the API) carries lastTransition."""
    from scaling.advisor import status
    from scaling.stackconfig import load_stack_file
    from scaling.stackfiles import stack_path

    assessment = status.assess([], load_stack_file(stack_path("growth")))
    assert status.status_document(assessment)["lastTransition"] is None
    last = {"source": "launch", "target": "growth", "outcome": "succeeded"}
    assert status.status_document(assessment, last)["lastTransition"] == last


def test_a_source_still_arriving_is_not_moved_on(
    state: Path, fake: FakeSteps, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.fail["switch-front-door"] = StepFailed("switch-front-door", "nginx -t failed")
    assert main(EXECUTE) == 4  # launch → growth stops after its cut-over
    capsys.readouterr()
    on = ["transition", "scale", "--execute", "--local"]
    assert main(on) == 2
    err = capsys.readouterr().err
    assert "transition: growth is the target of transition growth-" in err
    assert (
        "(launch → growth), unfinished: finish it first (sikka-scaling transition growth "
        "--execute --local); --force to move it anyway\n"
    ) in err
    last = service.last_transition("growth")
    assert last is not None and last["outcome"] == "failed"
    assert last["failedStep"] == "switch-front-door"
    lock = TransitionLock(state / "growth" / LOCK_FILE).acquire("growth")
    try:
        running = service.last_transition("growth")
        assert running is not None and running["outcome"] == "running"
    finally:
        lock.release()
