"""The local runner itself is the fixture (see local_fixtures.py): one run per phase module,
torn down even when a test (or `up`) fails, each in its own state folder under pytest's tmp
dir. This file only makes the project and the helper modules importable."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = str(Path(__file__).resolve().parent)
for folder in (str(ROOT), HERE):
    if folder not in sys.path:
        sys.path.insert(0, folder)
