"""Configuration problems, each tied to the stack file and dotted key it came from."""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any

# Echoed input is cut to this many characters: a message quotes a value, never a file.
ECHO_LIMIT = 80
# A report lists this many problems at most, then says how many more there are.
MAX_REPORTED = 50
_KEY_LIMIT = 120
_MESSAGE_LIMIT = 400

_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxstring = ECHO_LIMIT
_repr.maxother = ECHO_LIMIT
_repr.maxlong = 40
_repr.maxdict = _repr.maxlist = _repr.maxtuple = _repr.maxset = 6


def echo(value: Any) -> str:
    """A value as a message quotes it: repr, nesting and length bounded, on one line."""
    text = _repr.repr(value)
    return text if len(text) <= ECHO_LIMIT else text[: ECHO_LIMIT - 3] + "..."


def one_line(text: str, limit: int) -> str:
    """``text`` with line breaks and other unprintable characters escaped, cut to ``limit``
    characters, so that one problem is always exactly one line."""
    if not text.isprintable():
        text = "".join(
            ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
        )
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True, order=True)
class ConfigIssue:
    key: str  # dotted, with namespace: "sikka:redis.sentinels"
    message: str

    def format(self, source: str) -> str:
        key = one_line(self.key, _KEY_LIMIT)
        return f"{one_line(source, _KEY_LIMIT)}: {key}: {one_line(self.message, _MESSAGE_LIMIT)}"


class ConfigError(ValueError):
    """Every problem found in one stack's configuration, reported together."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = sorted(set(issues))
        lines = [issue.format(source) for issue in self.issues[:MAX_REPORTED]]
        hidden = len(self.issues) - len(lines)
        if hidden:
            lines.append(
                ConfigIssue("config", f"{hidden} more problem(s) not shown").format(source)
            )
        super().__init__(
            f"{len(self.issues)} problem(s) in {one_line(source, _KEY_LIMIT)}; "
            "nothing was registered:\n  " + "\n  ".join(lines)
        )
