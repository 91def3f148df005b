"""The check's two forms, from one Observation: the JSON document (for machines) and the
table (for people). Pure: the advisor judges, this arranges."""

from __future__ import annotations

import datetime
from typing import Any

from scaling.advisor.levels import Level, judge_all, worst
from scaling.advisor.window import Run, runs
from scaling.metrics.check import Observation, exit_code, reading_row
from scaling.metrics.render import table
from scaling.model import PhaseSpec


def report(
    stack: str, spec: PhaseSpec, observation: Observation, window: float
) -> tuple[dict[str, Any], str]:
    judgements = judge_all(observation.latest.readings, spec)
    rows = [reading_row(j) for j in judgements]
    unreachable = [r for r in rows if r["level"] == "unreachable"]
    evidence = observation.window
    now = observation.latest.at
    breaches = [
        run
        for level in (Level.CRITICAL, Level.WARNING)
        for run in runs(evidence, spec, level=level, window=window, now=now)
    ]
    # A reading critical over the window is not also listed as warning over it.
    critical = {(r.key, r.instance) for r in breaches if r.level is Level.CRITICAL}
    breaches = [
        r for r in breaches if r.level is Level.CRITICAL or (r.key, r.instance) not in critical
    ]
    sustained = [r for r in breaches if r.sustained and r.level is Level.CRITICAL]
    recommendations: list[dict[str, Any]] = []
    code = exit_code(judgements, recommended=bool(sustained))
    document: dict[str, Any] = {
        "stack": spec.stack or stack,
        "phase": spec.phase.value,
        "next_phase": spec.phase.next.value if spec.phase.next else None,
        "source": observation.latest.source,
        "at": observation.latest.at,
        "window_seconds": window,
        "evidence": {
            "samples": len(evidence),
            "from": evidence[0].at if evidence else None,
            "to": evidence[-1].at if evidence else None,
            "history_file": observation.history_file,
            "damaged_lines": list(observation.damaged),
        },
        "level": worst([j.level for j in judgements]).value,
        "readings": rows,
        "breaches": [breach_row(r) for r in breaches],
        "unreachable": [f"{r['tier']} {r['instance']}" for r in unreachable],
        "recommendations": recommendations,
        "notes": list(observation.notes),
        "exit_code": int(code),
        "outcome": code.name.lower(),
        "meaning": code.meaning,
    }
    when = datetime.datetime.fromtimestamp(observation.latest.at, datetime.UTC)
    title = (
        f"{document['stack']} ({spec.phase.value} phase), {observation.latest.source} "
        f"check at {when:%Y-%m-%d %H:%M:%S} UTC"
    )
    lines = [table(rows, title).rstrip()]
    span = (evidence[-1].at - evidence[0].at) if evidence else 0.0
    lines.append(
        f"evidence: {len(evidence)} sample(s) over {span:.0f} s of a {window:.0f} s "
        "window" + (f" (history {observation.history_file})" if observation.history_file else "")
    )
    lines += [describe(r) for r in breaches]
    lines += [f"note: {n}" for n in observation.notes]
    lines += [f"history: skipped {d}" for d in observation.damaged]
    lines.append(f"exit {int(code)} ({code.name.lower()}): {code.meaning}")
    return document, "\n".join(lines)


def breach_row(run: Run) -> dict[str, Any]:
    return {
        "key": run.key,
        "instance": run.instance,
        "level": run.level.value,
        "sustained": run.sustained,
        "since": run.since,
        "seconds": round(run.duration, 1),
        "window_seconds": run.window,
        "samples": run.samples,
        "from_percent": round(run.start, 2),
        "latest_percent": round(run.latest, 2),
        "peak_percent": round(run.peak, 2),
        "threshold_key": f"sikka:{run.band.config_key}",
    }


def describe(run: Run) -> str:
    state = "sustained" if run.sustained else f"not sustained yet (window {run.window:.0f} s)"
    return (
        f"{run.level.value} {run.key} {run.instance}: at or above {run.start:g} % for "
        f"{run.duration:.0f} s over {run.samples} sample(s), now {run.latest:.1f} % "
        f"(peak {run.peak:.1f} %): {state}"
    )
