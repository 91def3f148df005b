"""The status page, rendered on the server (pure: documents in, HTML out).

``/`` is the shell (header, the chart's place) with the live part rendered in; the page's
script (static/status.js) fetches ``/partials/live`` every few seconds, swaps the live part
in and feeds the chart (uPlot, vendored in static/) the history the fragment carries as JSON.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html import escape
from typing import Any

TIER_NAMES = {
    "database": "PostgreSQL connections",
    "redis": "Redis memory",
    "websocket": "Gateway WebSockets",
    "nginx": "Nginx connections",
}


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _document(title: str, body: str, *, scripts: tuple[str, ...] = ()) -> str:
    tags = "".join(f'<script src="/static/{_e(s)}" defer></script>' for s in scripts)
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title>"
        '<link rel="stylesheet" href="/static/uPlot.min.css">'
        '<link rel="stylesheet" href="/static/status.css">'
        f"{tags}</head><body>{body}</body></html>\n"
    )


def login_page(error: str | None) -> str:
    problem = f'<p class="error" id="login-error">{_e(error)}</p>' if error else ""
    body = (
        '<main class="login"><h1>sikka-scaling</h1>'
        "<p>Paste a token from <code>sikka-scaling api-token</code>. It is kept in an "
        "HttpOnly cookie of this site until it expires (12 hours at most).</p>"
        f"{problem}"
        '<form method="post" action="/login">'
        '<label for="token">Token</label>'
        '<textarea id="token" name="token" rows="5" required autocomplete="off" '
        'spellcheck="false"></textarea>'
        '<button type="submit" id="login-submit">Log in</button></form></main>'
    )
    return _document("sikka-scaling: log in", body)


def status_page(stack: str, phase: str, subject: str, refresh: float, live: str) -> str:
    body = (
        f'<header><h1>{_e(stack)} <span class="phase">{_e(phase)} phase</span></h1>'
        f'<span class="who">{_e(subject)}</span>'
        '<form method="post" action="/logout"><button type="submit">Log out</button></form>'
        "</header>"
        f'<main id="page" data-refresh="{refresh:g}">'
        '<section class="chart"><h2>Utilisation over the window</h2>'
        '<div id="chart"></div><p class="legend">Dashed: the warning and critical levels '
        "of each tier's threshold.</p></section>"
        f'<div id="live">{live}</div></main>'
    )
    return _document(f"{stack}: scaling status", body, scripts=("uPlot.iife.min.js", "status.js"))


def unavailable_fragment(reason: str) -> str:
    return (
        '<section class="unavailable" id="unavailable"><h2>Cannot measure now</h2>'
        f"<p>{_e(reason)}</p></section>"
    )


def _bar(tier: str, part: dict[str, Any]) -> str:
    percent = part.get("utilizationPercentage")
    level = part.get("level") or "unmeasured"
    width = 0.0 if percent is None else max(0.0, min(100.0, float(percent)))
    current = "—" if part.get("current") is None else f"{part['current']:g}"
    shown = (
        "unreachable"
        if level == "unreachable"
        else ("not measured" if percent is None else f"{percent:g} %")
    )
    return (
        f'<div class="tier" data-tier="{_e(tier)}" data-level="{_e(level)}">'
        f'<div class="label">{_e(TIER_NAMES.get(tier, tier))}'
        f'<span class="figures">{_e(current)} of {part.get("configuredMax", 0):g} '
        f"{_e(part.get('unit'))} · {_e(shown)}</span></div>"
        f'<div class="track"><div class="bar level-{_e(level)}" '
        f'style="width:{width:.1f}%"></div></div></div>'
    )


def _recommendations(recs: dict[str, list[dict[str, Any]]]) -> str:
    items = []
    for bucket, label in (("immediate", "Now"), ("shortTerm", "Soon"), ("longTerm", "Later")):
        for r in recs.get(bucket, []):
            reasons = "".join(f"<li>{_e(x)}</li>" for x in r.get("reasons", []))
            commands = "".join(f"<code>{_e(c)}</code>" for c in r.get("commands", []))
            items.append(
                f'<li class="rec rec-{_e(bucket)}" data-kind="{_e(r.get("kind"))}">'
                f'<span class="when">{label}</span> <strong>{_e(r.get("title"))}</strong>'
                f"<ul>{reasons}</ul>{commands}</li>"
            )
    if not items:
        return '<p id="no-recommendation">No recommendation: nothing calls for a change.</p>'
    return f'<ul id="recommendations">{"".join(items)}</ul>'


def _when(at: Any) -> str:
    try:
        return datetime.fromtimestamp(float(at), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def _transitions(events: list[dict[str, Any]] | str, running: bool) -> str:
    if isinstance(events, str):
        return f'<p id="transitions-unavailable">Transition log unavailable: {_e(events)}</p>'
    state = '<p class="running">A transition is running.</p>' if running else ""
    if not events:
        return state + '<p id="no-transitions">No transition logged.</p>'
    rows = "".join(
        f"<tr><td>{_e(_when(e.get('at')))}</td><td>{_e(e.get('transition'))}</td>"
        f"<td>{_e(e.get('step'))}</td><td>{_e(e.get('event'))}</td>"
        f"<td>{_e(e.get('outcome'))}</td></tr>"
        for e in reversed(events[-10:])
    )
    return (
        f'{state}<table id="transitions"><thead><tr><th>at</th><th>transition</th><th>step'
        f"</th><th>event</th><th>outcome</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def live_fragment(
    status: dict[str, Any],
    history: dict[str, Any],
    events: list[dict[str, Any]] | str,
    running: bool,
) -> str:
    """``events``: the transition log's events, or why it could not be read."""
    verdict = status.get("verdict", {})
    bars = "".join(_bar(t, p) for t, p in status.get("infrastructure", {}).items())
    reasons = "".join(f"<li>{_e(r)}</li>" for r in verdict.get("reasons", []))
    timeline = status.get("timeline", {})
    capacity = status.get("currentCapacity", {})
    # JSON inside <script type="application/json">: "</" escaped so no value can close it.
    data = json.dumps(history, separators=(",", ":")).replace("</", "<\\/")
    return (
        f'<section class="verdict verdict-{_e(verdict.get("verdict"))}" id="verdict">'
        f'<h2>Verdict: <span id="verdict-label">{_e(verdict.get("verdict"))}</span></h2>'
        f"<ul>{reasons}</ul>"
        f'<p class="measured">Measured {_e(status.get("measuredAt"))}; next phase '
        f"{_e(status.get('nextPhase') or 'none (optimise)')}, estimated "
        f"{_e(timeline.get('estimatedTimeToNextPhase'))}. Users "
        f"{_e(capacity.get('concurrentUsers'))} of {_e(capacity.get('maxConcurrentUsers'))}, "
        f"trips {_e(capacity.get('concurrentTrips'))} of "
        f"{_e(capacity.get('maxConcurrentTrips'))}.</p></section>"
        f'<section class="tiers" id="tiers"><h2>Capacity and use</h2>{bars}</section>'
        f'<section class="recs"><h2>Recommendation</h2>'
        f"{_recommendations(status.get('recommendations', {}))}</section>"
        f'<section class="log"><h2>Last transitions</h2>{_transitions(events, running)}</section>'
        f'<script type="application/json" id="history-data">{data}</script>'
    )
