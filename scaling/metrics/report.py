"""The check's two forms, from one Observation: the JSON document (for machines) and the
table (for people). Pure: the advisor judges, this arranges."""

from __future__ import annotations

import datetime
from typing import Any

from scaling.advisor.levels import judge_all, worst
from scaling.metrics.check import Observation, exit_code, reading_row
from scaling.metrics.render import table
from scaling.model import PhaseSpec


def report(
    stack: str, spec: PhaseSpec, observation: Observation, window: float
) -> tuple[dict[str, Any], str]:
    judgements = judge_all(observation.latest.readings, spec)
    rows = [reading_row(j) for j in judgements]
    unreachable = [r for r in rows if r["level"] == "unreachable"]
    recommendations: list[dict[str, Any]] = []
    code = exit_code(judgements, recommended=bool(recommendations))
    evidence = observation.window
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
    lines += [f"note: {n}" for n in observation.notes]
    lines += [f"history: skipped {d}" for d in observation.damaged]
    lines.append(f"exit {int(code)} ({code.name.lower()}): {code.meaning}")
    return document, "\n".join(lines)
