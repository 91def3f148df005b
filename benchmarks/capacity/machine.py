"""The machine and the versions a certificate was measured with."""

from __future__ import annotations

import os
import platform
import re
import resource
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psutil

from scaling.local.procs import pg_bin


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_mb": psutil.virtual_memory().total // (1024 * 1024),
        "kernel": platform.release(),
        "os": platform.platform(terse=True),
        "open_files": {"soft": soft, "hard": hard},
        # Other work on the machine when the run began: figures are noisier above ~1.
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _first_line(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else None


def _version_in(text: str | None) -> str | None:
    if text is None:
        return None
    found = re.search(r"v?=?(\d+\.\d+(?:\.\d+)?)", text)
    return found.group(1) if found else text


def _package(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def commit(project: Path) -> str | None:
    """The project's commit, with ``-dirty`` when tracked files differ from it."""
    head = _first_line(["git", "-C", str(project), "rev-parse", "HEAD"])
    if head is None or not re.fullmatch(r"[0-9a-f]{40}", head):
        return None
    dirty = subprocess.run(
        ["git", "-C", str(project), "diff", "--quiet", "HEAD"], check=False, timeout=10
    ).returncode
    return head + ("-dirty" if dirty else "")


def versions(project: Path, redis_server: str) -> dict[str, str | None]:
    return {
        "nginx": _version_in(_first_line(["nginx", "-v"])),
        "postgres": _version_in(_first_line([pg_bin("postgres"), "--version"])),
        "pgbouncer": _version_in(_first_line(["pgbouncer", "--version"])),
        "redis": _version_in(_first_line([redis_server, "--version"])),
        "python": platform.python_version(),
        "websockets": _package("websockets"),
        "project_commit": commit(project),
    }
