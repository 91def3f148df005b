"""The local steps' wiring: each [data] / [front] step calls its function by the interface's
name with the running phases (fake modules stand in for scaling.transition.local_data and
local_front), retire-source stops all but the front door, and a rollback's teardown keeps
the transition's log."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import psutil
import pytest

from scaling.local.runner import LocalRun
from scaling.local.state import TRANSITION_FILES, ProcessEntry, RunState, remove_state_dir
from scaling.transition import log as tlog
from scaling.transition import service
from scaling.transition.runner import LOCK_FILE, StepContext


def test_the_kept_names_are_the_transition_files() -> None:
    assert set(TRANSITION_FILES) == {tlog.LOG_FILE, LOCK_FILE, service.RENDERED}


@pytest.fixture
def pair(tmp_path: Path) -> Any:
    return service._pair("growth", None, False, tmp_path / "state", None)


def fake_module(monkeypatch: pytest.MonkeyPatch, name: str, functions: list[str]) -> list[Any]:
    calls: list[Any] = []
    module = types.ModuleType(name)
    for function in functions:

        def record(*args: Any, _name: str = function) -> dict[str, Any]:
            calls.append((_name, *args))
            return {"called": _name}

        setattr(module, function, record)
    monkeypatch.setitem(sys.modules, name, module)
    return calls


def test_data_and_front_steps_call_the_interface(
    pair: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = fake_module(
        monkeypatch,
        "scaling.transition.local_data",
        ["prepare_source", "catch_up", "freeze_source", "final_sync", "promote_target",
         "unfreeze_source", "unprepare_source"],
    )  # fmt: skip
    front = fake_module(
        monkeypatch,
        "scaling.transition.local_front",
        ["switch_front_door", "restore_front_door"],
    )
    source, target = object(), object()
    ctx = StepContext("t", "launch", "growth", print)
    ctx.values.update(source_run=source, target_run=target)
    actions = service._local_actions(pair, False)
    for step in ("prepare-source", "catch-up", "freeze-source", "final-sync", "promote-target",
                 "switch-front-door"):  # fmt: skip
        assert actions[step](ctx) == {"called": step.replace("-", "_")}
    assert data == [
        ("prepare_source", source),
        ("catch_up", source, target, service.CATCH_UP_TIMEOUT),
        ("freeze_source", source),
        ("final_sync", source, target, service.FINAL_SYNC_TIMEOUT),
        ("promote_target", source, target),
    ]
    assert front == [("switch_front_door", source, target)]
    undo = {u.name: u for u in service._local_undo(pair)}
    assert [u.after for u in service._local_undo(pair)] == [
        "switch-front-door",
        "freeze-source",
        "start-target",
        "prepare-source",  # last: the replication login goes once no target follows
    ]
    undo["restore-front-door"].run(ctx)
    undo["unfreeze-source"].run(ctx)
    assert front[-1] == ("restore_front_door", source)
    assert data[-1] == ("unfreeze_source", source)
    undo["unprepare-source"].run(ctx)
    assert data[-1] == ("unprepare_source", source)


def test_start_target_keeps_the_run_it_returns(pair: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    started = types.SimpleNamespace(state=types.SimpleNamespace(processes=[1, 2, 3]))
    seen: list[Any] = []
    module = types.ModuleType("scaling.transition.local_data")

    def start_target(*args: Any) -> Any:
        seen.append(args)
        return started

    module.start_target = start_target  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "scaling.transition.local_data", module)
    source = object()
    ctx = StepContext("t", "launch", "growth", print)
    ctx.values["source_run"] = source
    measured = service._local_actions(pair, False)["start-target"](ctx)
    assert measured == {"processes": 3, "state_dir": str(pair.target_dir)}
    [(spec, name, folder, given, progress)] = seen
    assert spec.phase.value == "growth" and name == "growth" and folder == pair.target_dir
    assert given is source and progress is print
    assert ctx.values["target_run"] is started


def sleeper(folder: Path, name: str, tier: str) -> tuple[ProcessEntry, subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    entry = ProcessEntry(
        name=name, role="x", tier=tier, argv=["sleep", "60"], log=str(folder / f"{name}.log"),
        pid=proc.pid, create_time=psutil.Process(proc.pid).create_time(), stop_timeout=5.0,
    )  # fmt: skip
    return entry, proc


@pytest.mark.parametrize("remove", [False, True])
def test_retire_stops_all_but_the_front_door(tmp_path: Path, remove: bool) -> None:
    folder = tmp_path / "launch"
    data = folder / "redis" / "redis-0" / "data"  # where `local up` keeps it
    data.mkdir(parents=True)
    (data / "dump.rdb").write_text("x")
    redis_entry, redis_proc = sleeper(folder, "redis-0", "redis")
    nginx_entry, nginx_proc = sleeper(folder, "nginx", "nginx")
    try:
        state = RunState(
            stack="launch", phase="launch", state_dir=str(folder), secrets_file="",
            processes=[redis_entry, nginx_entry], complete=True,
        )  # fmt: skip
        state.save()
        run = LocalRun(state, {})
        measured = service.retire(run, "growth-t1", "growth", remove=remove)
        redis_proc.wait(10)
        assert nginx_proc.poll() is None  # still the clients' front door
        assert measured["stopped"] == 1 and measured["frontDoorKept"] == ["nginx"]
        retired = RunState.load(folder).summary["retired"]
        assert retired["transition"] == "growth-t1" and retired["target"] == "growth"
        assert retired["front_door_kept"] == ["nginx"] and retired["stopped"] == ["redis-0"]
        assert data.exists() is not remove
        assert measured["dataRemoved"] == (1 if remove else 0)
    finally:
        for proc in (redis_proc, nginx_proc):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_a_removed_state_folder_keeps_the_transition_files(tmp_path: Path) -> None:
    folder = tmp_path / "growth"
    (folder / "postgres" / "data").mkdir(parents=True)
    (folder / "state.json").write_text("{}")
    tlog.append(folder / tlog.LOG_FILE, {"transition": "t", "step": "x", "event": "start"})
    (folder / LOCK_FILE).write_text("")
    remove_state_dir(folder)
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_FILE, tlog.LOG_FILE]
    plain = tmp_path / "launch"
    (plain / "postgres").mkdir(parents=True)
    remove_state_dir(plain)
    assert not plain.exists()


def test_a_torn_last_line_is_cut_before_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / tlog.LOG_FILE
    tlog.append(path, {"n": 1})
    with open(path, "a") as handle:
        handle.write('{"n": ')
    tlog.append(path, {"n": 2})
    assert tlog.read(path) == [{"n": 1}, {"n": 2}]
