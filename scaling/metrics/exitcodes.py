"""The exit codes of `sikka-scaling check`, one enum for the CLI, the README and CI jobs.

When several apply, the highest wins: a part that cannot be measured outranks everything,
a sustained breach (act now: promote or optimise) outranks a breach at this instant, which
outranks the warning band.
"""

from __future__ import annotations

from enum import IntEnum


class CheckExit(IntEnum):
    OK = 0  # every measurement optimal (or unjudged)
    ERROR = 1  # the check could not run: bad stack file, no local phase, unreadable endpoints
    USAGE = 2  # a usage error (unknown option, conflicting options)
    WARNING = 3  # something is in the warning band now
    CRITICAL = 4  # something is critical now (not yet sustained over the window)
    RECOMMENDED = 5  # a breach sustained over the window: promotion / optimisation recommended
    UNREACHABLE = 6  # at least one part did not answer

    @property
    def meaning(self) -> str:
        return MEANINGS[self]


MEANINGS = {
    CheckExit.OK: "every measurement optimal",
    CheckExit.ERROR: "the check could not run",
    CheckExit.USAGE: "usage error",
    CheckExit.WARNING: "a measurement is in the warning band",
    CheckExit.CRITICAL: "a measurement is critical now (not sustained over the window yet)",
    CheckExit.RECOMMENDED: "a breach sustained over the window: promotion or optimisation "
    "recommended",
    CheckExit.UNREACHABLE: "a part could not be reached",
}
