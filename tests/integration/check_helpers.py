"""Running `sikka-scaling check` from outside, as a CI job would: a subprocess, its exit
code and its JSON document."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from local_helpers import Phase

ROOT = Path(__file__).resolve().parents[2]


def run_check(
    phase: Phase, *args: str, stack: str | None = None, timeout: float = 90, command: str = "check"
) -> tuple[int, dict[str, Any]]:
    """`check <stack> --json` (or `status`, `summary`) against the phase's own state folder."""
    argv = [
        sys.executable,
        "-m",
        "scaling.cli",
        command,
        stack or phase.spec.stack or phase.summary["stack"],
        "--state-dir",
        phase.run.state.state_dir,
        "--json",
        *args,
    ]
    result = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.stdout.strip(), f"no document (exit {result.returncode}): {result.stderr}"
    return result.returncode, json.loads(result.stdout)


def readings(document: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [r for r in document["readings"] if r["key"] == key]


def one(document: dict[str, Any], key: str) -> dict[str, Any]:
    found = readings(document, key)
    assert len(found) == 1, f"{key}: {found}"
    return found[0]
