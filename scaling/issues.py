"""Configuration problems, each tied to the stack file and dotted key it came from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class ConfigIssue:
    key: str  # dotted, with namespace: "sikka:redis.sentinels"
    message: str

    def format(self, source: str) -> str:
        return f"{source}: {self.key}: {self.message}"


class ConfigError(ValueError):
    """Every problem found in one stack's configuration, reported together."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = sorted(issues)
        lines = [issue.format(source) for issue in self.issues]
        super().__init__(
            f"{len(lines)} problem(s) in {source}; nothing was registered:\n  " + "\n  ".join(lines)
        )
