"""A retired run started again as a replica and retired again by a rollback: what is set
aside comes back exactly, the copy made from the source goes, the command lines and the
summary are as before (no process is started: the files and records alone)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaling.local.runner import LocalRun, load_spec
from scaling.local.state import ProcessEntry, RunState
from scaling.render.endpoints import Endpoint
from scaling.transition import local_revive
from scaling.transition.errors import StepFailed
from scaling.transition.local_data import replicaof_argv

ROOT = Path(__file__).resolve().parents[2]
RETIRED = {"transition": "growth-1", "target": "growth", "stopped": ["postgres-0"]}
REDIS_ARGV = ["redis-server", "/r/redis.conf", "--replicaof", "127.0.0.1", "7000"]


def retired_launch(folder: Path) -> LocalRun:
    pg, redis = folder / "postgres-0", folder / "redis-0"
    for path in (pg / "data", redis / "data"):
        path.mkdir(parents=True)
        (path / "retired.txt").write_text("the retired copy")
    state = RunState(
        stack="launch",
        phase="launch",
        state_dir=str(folder),
        secrets_file=str(folder / "secrets.json"),
        processes=[
            ProcessEntry("postgres-0", "primary", "postgres", ["postgres"], "pg.log",
                         port=1, cwd=str(pg), data_dir=str(pg / "data")),
            ProcessEntry("redis-0", "standalone", "redis", list(REDIS_ARGV), "r.log",
                         port=2, cwd=str(redis)),
            ProcessEntry("nginx", "proxy", "nginx", ["nginx"], "n.log"),
        ],
        summary={"retired": dict(RETIRED), "front_door": {"fronts": "growth"}},
        complete=True,
    )  # fmt: skip
    state.save()
    return LocalRun(state, {})


def test_a_revived_run_rolled_back_is_retired_again_on_its_own_data(tmp_path: Path) -> None:
    run = retired_launch(tmp_path)
    spec = load_spec(ROOT / "Pulumi.launch.yaml")
    assert local_revive.revivable(run, spec, "growth") is None
    assert local_revive.revivable(run, spec, "scale") == (
        "it was retired by a transition to growth, not to scale"
    )
    # What revive has done when its base backup is under way: recorded, data set aside,
    # a copy begun, Redis's command line changed.
    pg_data, redis_data = tmp_path / "postgres-0" / "data", tmp_path / "redis-0" / "data"
    aside = {}
    for data in (pg_data, redis_data):
        kept = data.with_name("data.retired-t1")
        data.rename(kept)
        data.mkdir()
        (data / "copy.txt").write_text("from the source")
        aside[str(data)] = str(kept)
    (tmp_path / "postgres-0" / "replication.pgpass").write_text("secret")
    run.entry("redis-0").argv = replicaof_argv(REDIS_ARGV, Endpoint("127.0.0.1", 7100))
    run.summary.pop("retired")
    run.summary["revived"] = {
        "transition": "t1", "retired": dict(RETIRED), "aside": aside, "redis_argv": REDIS_ARGV
    }  # fmt: skip
    run.summary["follows"] = {"stack": "growth"}
    run.state.save()
    # Another transition does not take this half-done revive over.
    with pytest.raises(StepFailed, match="started again by transition t1"):
        local_revive.revive(run, run, spec, "t2")

    result = local_revive.unrevive(run)
    assert result["retired_again"] is True
    assert sorted(result["restored"]) == sorted(aside)
    again = RunState.load(tmp_path)
    assert again.summary["retired"] == RETIRED
    assert "revived" not in again.summary and "follows" not in again.summary
    assert again.summary["front_door"] == {"fronts": "growth"}
    assert again.entry("redis-0").argv == REDIS_ARGV
    for data in (pg_data, redis_data):
        assert [p.name for p in data.iterdir()] == ["retired.txt"]
        assert not data.with_name("data.retired-t1").exists()
    assert not (tmp_path / "postgres-0" / "replication.pgpass").exists()
    assert local_revive.unrevive(run) == {"revived": False}  # once only


def test_a_revived_run_that_took_over_keeps_its_set_aside_data(tmp_path: Path) -> None:
    run = retired_launch(tmp_path)
    run.summary["revived"] = {"transition": "t1", "aside": {}}
    local_revive.finish(run)
    assert "revived" not in RunState.load(tmp_path).summary
    local_revive.finish(object())  # anything but a run: left alone  # type: ignore[arg-type]
