"""One overall verdict and the exit code a CI job acts on.

====  ==============  ==========================================================================
code  verdict         when
====  ==============  ==========================================================================
0     ok              every part reachable, every level optimal, every readiness check passed
2     (usage)         kept apart for usage errors (argparse's code); never a verdict
3     warning         a level in the warning band now, a critical level not yet sustained over
                      the window (one spike is a warning, not a reason to act), or a readiness
                      check failing that is not critical
4     recommend       a critical level sustained over the window: promote to the next stack
                      (launch, growth) or apply the computed optimisations (scale)
5     critical        critical now: a critical readiness check fails (the phase is broken, not
                      just full), or a reading is at or past 100 % of its limit (the part is
                      refusing work)
6     unreachable     a part could not be measured
====  ==============  ==========================================================================

The highest applicable code wins; every condition found is listed in ``reasons``. Code 1 is
left to Python's own uncaught errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from scaling.advisor.levels import Judgement, Level
from scaling.advisor.recommend import Advice
from scaling.metrics.model import ReadinessCheck

USAGE_EXIT_CODE = 2


class Verdict(IntEnum):
    OK = 0
    WARNING = 3
    RECOMMEND = 4
    CRITICAL = 5
    UNREACHABLE = 6

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    reasons: tuple[str, ...]

    @property
    def exit_code(self) -> int:
        return int(self.verdict)


def decide(
    judgements: Sequence[Judgement], advice: Advice, checks: Sequence[ReadinessCheck] = ()
) -> Outcome:
    """The verdict over the latest readings' judgements, the advice drawn from the history
    and the readiness checks."""
    found: list[tuple[Verdict, str]] = []
    for j in judgements:
        r = j.reading
        where = f"{r.key} on {r.instance}"
        if j.level is Level.UNREACHABLE:
            found.append((Verdict.UNREACHABLE, f"{where} unreachable: {r.error or 'no answer'}"))
        elif j.percent is not None and j.band is not None and j.percent >= 100:
            found.append((Verdict.CRITICAL, f"{where} at {j.percent:.1f} % of its limit"))
        elif j.level is Level.CRITICAL:
            found.append((Verdict.WARNING, f"{where} critical at {j.percent:.1f} %"))
        elif j.level is Level.WARNING:
            found.append((Verdict.WARNING, f"{where} in the warning band at {j.percent:.1f} %"))
    for check in checks:
        if not check.ok:
            level = Verdict.CRITICAL if check.critical else Verdict.WARNING
            found.append(
                (level, f"not ready: {check.name}" + (f" ({check.detail})" if check.detail else ""))
            )
    for run in advice.breaches:
        action = f"promote to {advice.next_stack}" if advice.next_stack else "optimise"
        found.append(
            (Verdict.RECOMMEND, f"{run.key} on {run.instance} critical for the window: {action}")
        )
    verdict = max((v for v, _ in found), default=Verdict.OK)
    ordered = sorted(found, key=lambda item: -item[0])
    return Outcome(verdict, tuple(text for _, text in ordered))
