"""Open-file limits: what a gateway needs, raising its own soft limit, refusing what the
limit cannot hold; and the connection count shared by GATEWAY_PROCESSES."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

from gateway.limits import SPARE_FILES, connection_cap, needed_open_files
from gateway.processes import ConnectionCount

ROOT = Path(__file__).resolve().parents[2]


def test_needed_and_cap() -> None:
    assert needed_open_files(10_000, 64) == 10_000 + 64 + SPARE_FILES
    assert connection_cap(10_000, 64, 1_048_576) == 10_000
    assert connection_cap(10_000, 64, 1024) == 1024 - 64 - SPARE_FILES
    assert connection_cap(10_000, 64, 100) == 1
    assert connection_cap(500, 64, resource.RLIM_INFINITY) == 500


def _limits_after(soft: int, hard: int, needed: int) -> tuple[int, int]:
    """raise_open_files_limit(needed) in a child started with (soft, hard)."""
    code = (
        "import json, logging; logging.basicConfig();"
        "from gateway.limits import raise_open_files_limit;"
        f"print(json.dumps(raise_open_files_limit({needed})))"
    )

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=lower,
        timeout=30,
        check=True,
    )
    result = json.loads(out.stdout)
    if result[0] < needed:
        assert "is below the" in out.stderr and "raise the hard limit" in out.stderr
    return result[0], result[1]


def test_soft_limit_raised_up_to_the_hard_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = hard if hard != resource.RLIM_INFINITY else 4096
    if top < 1100:
        top = 1100
    # A shell's 1,024 is raised to what the gateway needs...
    assert _limits_after(256, min(top, 4096), 1000) == (1000, min(top, 4096))
    # ...and only as far as the hard limit, with an error in the log.
    assert _limits_after(256, 600, 1000) == (600, 600)


def test_connection_count_local_and_shared() -> None:
    for count in (ConnectionCount(), ConnectionCount(shared=True)):
        assert [count.take(2), count.take(2), count.take(2)] == [True, True, False]
        assert count.value == 2
        count.release()
        assert count.take(2) is True
        assert count.value == 2
