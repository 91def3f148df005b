"""The sample history of the direct check: one Sample per line (JSON), appended by every
run, so that successive runs (``--watch``, cron, CI) accumulate the evidence a sustained
breach needs.

By default it lives in the stack's state folder (:data:`HISTORY_FILE`). Appends hold an
exclusive lock and write whole lines, so two checks of one stack never interleave. A line
that does not parse (a disk filled mid-write) is skipped and reported, never rewritten:
the file is only ever appended to.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from scaling.metrics.model import Sample, SampleFormatError, sample_from_json, sample_to_json

HISTORY_FILE = "check-history.jsonl"


class HistoryError(OSError):
    """The history file cannot be read or written."""


@dataclass(frozen=True)
class History:
    samples: tuple[Sample, ...]
    damaged: tuple[str, ...]  # "line N: why" for every line skipped


def default_path(state_dir: Path) -> Path:
    return state_dir / HISTORY_FILE


def append(path: Path, sample: Sample) -> None:
    line = (sample_to_json(sample) + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as error:
        raise HistoryError(f"history {path}: cannot append: {error.strerror or error}") from None


def read(path: Path, since: float | None = None) -> History:
    """Every readable Sample taken at or after ``since``, oldest first."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return History((), ())
    except OSError as error:
        raise HistoryError(f"history {path}: cannot read: {error.strerror or error}") from None
    samples: list[Sample] = []
    damaged: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            sample = sample_from_json(line)
        except SampleFormatError as error:
            damaged.append(f"line {number}: {error}")
            continue
        if since is None or sample.at >= since:
            samples.append(sample)
    samples.sort(key=lambda s: s.at)
    return History(tuple(samples), tuple(damaged))
