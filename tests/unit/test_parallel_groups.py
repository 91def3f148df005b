"""The suite's parallel run (`make test`: pytest-xdist, `--dist loadgroup`) keeps each module
in one worker (tests/conftest.py): a module's fixtures start once and its tests keep their
order. Checked on a real parallel run of two small modules."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("tests/unit/test_ports.py", "tests/unit/test_layout.py")


def test_each_module_runs_whole_in_one_worker_in_file_order() -> None:
    argv = [sys.executable, "-m", "pytest", "-n", "2", "-v", "-p", "no:cacheprovider", *MODULES]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    done = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:]
    ran: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for worker, module, test in re.findall(
        r"^\[(gw\d+)\] \[\s*\d+%\] PASSED (tests/\S+?\.py)::(\w+)", done.stdout, re.M
    ):
        ran[module].append((worker, test))
    assert set(ran) == set(MODULES), done.stdout[-3000:]
    for module, runs in ran.items():
        assert len({worker for worker, _ in runs}) == 1, (module, runs)
        source = (ROOT / module).read_text()
        in_file = re.findall(r"^def (test_\w+)", source, re.M)
        assert [test for _, test in runs] == in_file, (module, runs)
