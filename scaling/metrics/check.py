"""`sikka-scaling check`: measure a live phase, keep the evidence, judge it, report it.

The I/O of the check lives here and in the sources (:mod:`.direct`, :mod:`.prometheus`);
every decision — the level of a reading, whether a breach was sustained over the window,
what to recommend — is the advisor's (scaling/advisor), fed with the Samples gathered here:
the direct mode's history file, or Prometheus's range queries over the window.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from scaling.metrics import direct, history
from scaling.metrics import prometheus as prom
from scaling.metrics.endpoints import Endpoints
from scaling.metrics.model import Sample
from scaling.model import PhaseSpec

# How far back the evidence reaches, in windows: a run covering the window starts before it.
EVIDENCE_SPAN = 2


@dataclass(frozen=True)
class Observation:
    """What one check gathered: the latest Sample and the evidence over the window."""

    latest: Sample
    window: tuple[Sample, ...]  # oldest first, the latest included
    notes: tuple[str, ...] = ()
    history_file: str | None = None
    damaged: tuple[str, ...] = field(default=())


def pulumi_note() -> str:
    """Where else endpoints can come from, said plainly: a deployed stack's outputs need
    the Pulumi CLI on PATH."""
    if shutil.which("pulumi") is None:
        return (
            "the Pulumi CLI is not on PATH, so no stack outputs are read: give --local (a "
            "running `local up`), --endpoints FILE or the single-part flags"
        )
    return (
        "for a deployed stack give --pulumi-stack NAME (its outputs), --endpoints FILE, "
        "the single-part flags or --prometheus URL"
    )


def observe_direct(
    endpoints: Endpoints,
    spec: PhaseSpec,
    window: float,
    history_file: Path | None,
) -> Observation:
    """Measure every part now, append the Sample to the history, read the window back."""
    measured = direct.measure(endpoints, spec)
    notes = [*endpoints.notes, *measured.notes]
    if history_file is None:
        return Observation(measured.sample, (measured.sample,), tuple(notes))
    history.append(history_file, measured.sample)
    # A breach covers the window when its run starts at least `window` before the latest
    # sample: the samples just before the window's start are part of the evidence.
    past = history.read(history_file, since=measured.sample.at - EVIDENCE_SPAN * window)
    return Observation(
        measured.sample,
        past.samples or (measured.sample,),
        tuple(notes),
        str(history_file),
        past.damaged,
    )


def observe_prometheus(url: str, spec: PhaseSpec, window: float, step: float) -> Observation:
    client = prom.Client(url)
    try:
        now = time.time()
        latest = prom.instant_sample(client, spec, now)
        span = EVIDENCE_SPAN * window
        samples = prom.range_samples(client, spec, span, step, now) if window > 0 else []
    finally:
        client.close()
    ranged = [s for s in samples if s.at < latest.at]
    return Observation(latest, (*ranged, latest))
