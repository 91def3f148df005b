"""The transition log: JSON lines in the target stack's state directory (or ``--log``).

One line per event: ``{"transition": id, "step": name, "event": "start"|"end", "at": unix
seconds, "outcome": "ok"|"failed"|"skipped"|"rolled-back", "measurements": {...}, ...}``.
The log is only appended to, never rewritten, and survives a rollback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scaling.local.state import state_dir_for

LOG_FILE = "transitions.jsonl"


def log_path(
    target_stack: str, explicit: Path | None = None, state_dir: Path | None = None
) -> Path:
    """``explicit``, else ``<the target stack's state directory>/transitions.jsonl``."""
    if explicit is not None:
        return explicit.resolve()
    return state_dir_for(target_stack, state_dir) / LOG_FILE


def append(path: Path, event: Mapping[str, Any]) -> None:
    """Append one event as a line and flush it to disk before returning: a step that was
    logged as started survives a kill -9 of the process that logged it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(dict(event), sort_keys=True, default=str) + "\n"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        _drop_torn_tail(fd)
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _drop_torn_tail(fd: int) -> None:
    """A writer killed mid-line left a line without its newline: cut it off, so that the
    next line does not glue onto it (it was never a whole event)."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    start = max(0, size - 65536)
    while True:
        chunk = os.pread(fd, size - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            os.ftruncate(fd, start + cut + 1)
            return
        if start == 0:
            os.ftruncate(fd, 0)
            return
        start = max(0, start - 65536)


def read(path: Path) -> list[dict[str, Any]]:
    """Every event of the log, oldest first ([] when there is no log). A torn last line (the
    writer was killed mid-write) is ignored; any other unreadable line is an error."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    events = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a JSON line") from None
        if isinstance(event, dict):
            events.append(event)
    return events
