"""Module-scoped runs of the local runner, shared by the phase test modules.

(Kept out of conftest.py: `from conftest import ...` would pick whichever conftest module
another test folder registered first.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
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
