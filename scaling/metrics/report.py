"""The check's two forms, from one Observation: the JSON document (for machines) and the
table (for people). The advisor judges (:func:`scaling.advisor.status.assess`) and writes
the document (:func:`~scaling.advisor.status.check_document`); this adds what only the
measuring side knows — where the evidence came from, what could not be measured — and
lays the same content out as text."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from scaling.advisor.status import Assessment, assess, check_document
from scaling.metrics.check import Observation
from scaling.metrics.model import ReadinessCheck
from scaling.metrics.render import table
from scaling.model import PhaseSpec


def assessment(
    stack: str,
    spec: PhaseSpec,
    observation: Observation,
    window: float,
    checks: Sequence[ReadinessCheck] = (),
) -> Assessment:
    return assess(
        observation.window,
        spec,
        checks=checks,
        stack=spec.stack or stack,
        window=window,
        now=observation.latest.at,
    )


def evidence(observation: Observation, window: float) -> dict[str, Any]:
    samples = observation.window
    return {
        "window": window,
        "samples": len(samples),
        "from": samples[0].at if samples else None,
        "to": samples[-1].at if samples else None,
        "historyFile": observation.history_file,
        "damagedLines": list(observation.damaged),
    }


def report(
    stack: str, spec: PhaseSpec, observation: Observation, window: float
) -> tuple[dict[str, Any], str]:
    a = assessment(stack, spec, observation, window)
    document = check_document(a)
    document["evidence"] = evidence(observation, window)
    document["notes"] = list(observation.notes)
    document["unreachable"] = [
        f"{r['tier']} {r['instance']}" for r in document["readings"] if r["level"] == "unreachable"
    ]
    return document, text(document, observation)


def text(document: dict[str, Any], observation: Observation) -> str:
    when = datetime.datetime.fromtimestamp(observation.latest.at, datetime.UTC)
    title = (
        f"{document['stack']} ({document['phase']} phase), {observation.latest.source} check "
        f"at {when:%Y-%m-%d %H:%M:%S} UTC"
    )
    lines = [table(document["readings"], title).rstrip()]
    ev = document["evidence"]
    span = (ev["to"] - ev["from"]) if ev["samples"] else 0.0
    where = f" (history {ev['historyFile']})" if ev["historyFile"] else ""
    lines.append(
        f"evidence: {ev['samples']} sample(s) over {span:.0f} s; window {ev['window']:.0f} s"
        + where
    )
    for name, label in (("breaches", "sustained"), ("pending", "not yet sustained")):
        for run in document.get(name, []):
            lines.append(
                f"{run['level']} {label}: {run['key']} on {run['instance']} at {run['latest']} % "
                f"(from {run['levelFrom']:g} %) for {run['seconds']:.0f} s of the "
                f"{run['window']:.0f} s window"
            )
    estimate = document.get("estimate") or {}
    if estimate.get("maxConcurrentUsers"):
        lines.append(
            f"estimate: {_known(estimate.get('concurrentUsers'))} of "
            f"{estimate['maxConcurrentUsers']} concurrent users, "
            f"{_known(estimate.get('concurrentTrips'))} of {estimate.get('maxConcurrentTrips')} "
            f"trips ({_known(estimate.get('utilizationPercentage'))} % utilisation)"
        )
    for bucket, items in (document.get("recommendations") or {}).items():
        for item in items:
            lines.append(f"{bucket}: {item['title']}")
            lines += [f"    because {reason}" for reason in item["reasons"]]
            lines += [f"    $ {command}" for command in item["commands"]]
    lines += [f"note: {n}" for n in document["notes"]]
    lines += [f"history: skipped {d}" for d in ev["damagedLines"]]
    lines.append(f"verdict: {document['verdict']} (exit {document['exitCode']})")
    lines += [f"    {reason}" for reason in document.get("reasons", [])]
    return "\n".join(lines)


def _known(value: Any) -> str:
    return "unknown" if value is None else str(value)
