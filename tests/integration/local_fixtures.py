"""Runs of the local runner for the phase test modules: one per module (`start_phase`), or
one per session for the modules that leave a phase as they found it (`SharedPhases`,
handed out by conftest.py's `launch_phase` and `growth_phase`).

(Kept out of conftest.py: `from conftest import ...` would pick whichever conftest module
another test folder registered first.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from local_helpers import Phase

from scaling.local import LocalRun, runner

ROOT = Path(__file__).resolve().parents[2]

# Small pools so "10x the pool size" stays a handful of clients on a 2-core runner.
SMALL_POOLS = {"pooler": {"defaultPoolSize": 5, "readPoolSize": 5, "reservePoolSize": 0}}


def start_phase(
    stack: str, tmp_path_factory: pytest.TempPathFactory, overrides: dict[str, Any] | None = None
) -> Iterator[Phase]:
    spec = runner.load_spec(ROOT / f"Pulumi.{stack}.yaml", overrides)
    state_dir = tmp_path_factory.mktemp(f"local-{stack}") / "state"
    run = runner.up(spec, stack=stack, state_dir=state_dir, progress=runner.print_progress)
    try:
        yield Phase(run, spec)
    finally:
        run.down()


# The phases several modules share, started once per session (conftest.py): name -> (stack,
# overrides). A module on a shared phase leaves it as it found it (every test undoes what it
# did: connections closed, stopped parts started again, its own history file); the one test
# that cannot (it ends the phase, or leaves a role behind) runs last in its group.
SHARED = {
    "launch_phase": ("launch", None),
    "growth_phase": ("growth", SMALL_POOLS),
}


class SharedPhases:
    """The shared phases of a session: each started on first use and stopped as soon as its
    last user has run (conftest.py's teardown hook), so no idle phase loads the machine
    while the other modules run."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._factory = tmp_path_factory
        self._open: dict[str, tuple[Generator[Phase, None, None], Phase]] = {}
        self.failed: dict[str, BaseException] = {}

    def get(self, name: str) -> Phase:
        if name in self.failed:  # one failed `up` per session, not one per module
            pytest.fail(f"the shared {name} did not start: {self.failed[name]!r}")
        if name not in self._open:
            stack, overrides = SHARED[name]
            started = start_phase(stack, self._factory, overrides)
            try:
                phase = next(started)
            except BaseException as error:
                self.failed[name] = error
                raise
            self._open[name] = (started, phase)
        return self._open[name][1]

    def stop(self, name: str) -> None:
        if name in self._open:
            started, _ = self._open.pop(name)
            started.close()  # start_phase's finally: run.down()

    def stop_all(self) -> None:
        for name in list(self._open):
            self.stop(name)


def start_phase_with_cli(stack: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phase]:
    """`sikka-scaling local up <stack> --json` in a subprocess: the processes must outlive
    the CLI, and the JSON document must be enough to find everything."""
    state_dir = tmp_path_factory.mktemp(f"local-{stack}") / "state"
    command = [
        sys.executable,
        "-m",
        "scaling.cli",
        "local",
        "up",
        stack,
        "--json",
        "--state-dir",
        str(state_dir),
    ]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False
    )
    try:
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads(result.stdout)
        run = LocalRun.open(Path(summary["state_dir"]))
        spec = runner.load_spec(ROOT / f"Pulumi.{stack}.yaml")
        yield Phase(run, spec)
    finally:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "scaling.cli",
                "local",
                "down",
                stack,
                "--state-dir",
                str(state_dir),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
