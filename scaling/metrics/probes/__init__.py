"""Direct probes: one module per part, each returning Readings for its targets.

A probe never raises for a part it cannot reach: it returns that part's Readings with
``value=None`` and the reason in ``error`` (see :func:`unreachable`). Every network call has
a short timeout (:data:`TIMEOUT`), so one dead part cannot hold the check up.
"""

from __future__ import annotations

from scaling.metrics.model import Reading

TIMEOUT = 3.0  # seconds, for every connect and every answer


def unreachable(
    key: str,
    tier: str,
    instance: str,
    error: BaseException | str,
    unit: str,
    limit: float | None = None,
) -> Reading:
    """The Reading of a part that did not answer: no value, and why."""
    reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    reason = " ".join(reason.split())[:300] or "no answer"
    return Reading(
        key=key, tier=tier, instance=instance, value=None, limit=limit, unit=unit, error=reason
    )
