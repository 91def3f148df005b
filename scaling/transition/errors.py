"""The errors a transition step raises."""

from __future__ import annotations


class StepFailed(RuntimeError):
    """A step of a transition could not do its work; ``step`` names it, ``reason`` says why."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason
