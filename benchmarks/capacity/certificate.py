"""A capacity certificate: the verdict per promise (computed from the measured figures,
never written by hand), its Markdown, and the README's table of every committed one.

Pure: a certificate is a JSON-able dict; nothing here measures or reads the machine.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.capacity.plan import P99_LIMIT_MS, POOLER_MIN_RATIO

PASS, FAIL, NOT_FULL, NOT_APPLICABLE = "pass", "FAIL", "not at full size", "n/a"
CERTIFICATES = Path(__file__).resolve().parents[1] / "certificates"
PHASES = ("launch", "growth", "scale")


def _verdict(
    promise: str, measured: str, ok: bool | None, full_size: bool = True
) -> dict[str, str]:
    if ok is None:
        result = NOT_APPLICABLE
    elif not full_size and ok:
        result = NOT_FULL  # passed, but at less than the promise: proves nothing yet
    else:
        result = PASS if ok else FAIL
    return {"promise": promise, "measured": measured, "result": result}


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f} ms"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def verdicts(cert: dict[str, Any]) -> list[dict[str, str]]:
    conns, trips = cert["connections"], cert["trips"]
    full = bool(cert["parameters"]["full_size"])
    promised = int(cert["parameters"]["promised_connections"])
    out = [
        _verdict(
            f"holds {promised:,} WebSockets through Nginx",
            f"{conns['held']:,} held of {conns['attempted']:,} "
            f"({conns['refused']:,} refused, {conns['errors']:,} errors)",
            # At full size the promise is the bar; a smaller run must hold all it opened.
            conns["held"] >= (promised if full else conns["attempted"]),
            full,
        )
    ]
    p99 = trips["latency_ms"]["p99"]
    out.append(
        _verdict(
            f"fan-out p99 ≤ {P99_LIMIT_MS:g} ms",
            f"p99 {_ms(p99)} (p50 {_ms(trips['latency_ms']['p50'])})",
            p99 is not None and p99 <= P99_LIMIT_MS,
            full,
        )
    )
    lost = trips["loss"] + trips["riders"] - trips["riders_subscribed"]
    out.append(
        _verdict(
            "no location lost",
            f"{trips['received']:,} of {trips['expected']:,} delivered, "
            f"{trips['publish_errors']:,} publish errors, "
            f"{trips['riders_subscribed']:,} of {trips['riders']:,} riders subscribed",
            trips["expected"] > 0 and lost == 0 and trips["publish_errors"] == 0,
            full,
        )
    )
    pg = cert["pgbench"]
    if pg.get("skipped"):
        out.append(_verdict(f"pooler ≥ {POOLER_MIN_RATIO:g}x direct", pg["skipped"], None))
    elif pg.get("error"):
        out.append(_verdict(f"pooler ≥ {POOLER_MIN_RATIO:g}x direct", pg["error"], False))
    else:
        medians = {w: v["ratio"]["median"] for w, v in pg["workloads"].items()}
        measured = ", ".join(f"{w} {_ratio(m)}" for w, m in medians.items())
        out.append(
            _verdict(
                f"pooler ≥ {POOLER_MIN_RATIO:g}x direct (median of rounds)",
                measured,
                all(m is not None and m >= POOLER_MIN_RATIO for m in medians.values()),
            )
        )
    return out


def overall(results: Sequence[dict[str, str]]) -> str:
    found = {v["result"] for v in results}
    if FAIL in found:
        return FAIL
    if NOT_FULL in found:
        return NOT_FULL
    return PASS


def _spread_text(spread: dict[str, float | None]) -> str:
    if spread["median"] is None:
        return "—"
    return f"{spread['median']:.2f}x ({spread['min']:.2f}-{spread['max']:.2f})"


def render_markdown(cert: dict[str, Any]) -> str:
    params, machine, versions = cert["parameters"], cert["machine"], cert["versions"]
    conns, trips = cert["connections"], cert["trips"]
    lines = [
        f"# Capacity certificate: {cert['stack']} ({cert['phase']} phase)",
        "",
        f"Measured {cert['date']} by `sikka-scaling bench {cert['stack']}` at commit "
        f"`{versions['project_commit']}`: **{cert['overall']}**.",
        "",
        "| promise | measured | verdict |",
        "|---|---|---|",
        *(f"| {v['promise']} | {v['measured']} | {v['result']} |" for v in cert["verdicts"]),
        "",
        "## Connections through Nginx",
        "",
        f"{conns['attempted']:,} attempted from {params['address_count']} source addresses "
        f"({params['source_addresses']}, at most {params['per_address']} each), at most "
        f"{params['open_rate']:g} per second and {params['open_concurrency']} in flight; "
        f"opened in {conns['open_seconds']} s, counted again after the trip load.",
        "",
        "| held | refused | errors | per gateway |",
        "|---|---|---|---|",
        f"| {conns['held']:,} | {conns['refused']:,}{_counts(conns['refused_by'])} | "
        f"{conns['errors']:,}{_counts(conns['errors_by'])} | "
        f"{_counts(conns['per_gateway']).strip(' ()')} |",
        "",
        "## Trip load",
        "",
        f"{trips['trips']:,} trips, {trips['drivers']:,} drivers and {trips['riders']:,} riders "
        f"({trips['riders_subscribed']:,} subscribed), one location per second per driver for "
        f"{trips['seconds']} s; latency from the driver's send to each rider's receipt, on one "
        f"clock. The load generator's own CPU: {trips['client_cpu_percent']} % of one core.",
        "",
        "| sent | expected | received | loss | publish errors | p50 | p99 | max |",
        "|---|---|---|---|---|---|---|---|",
        f"| {trips['sent']:,} | {trips['expected']:,} | {trips['received']:,} | "
        f"{trips['loss']:,} | {trips['publish_errors']:,} | "
        f"{_ms(trips['latency_ms']['p50'])} | {_ms(trips['latency_ms']['p99'])} | "
        f"{_ms(trips['latency_ms']['max'])} |",
        "",
        "## PgBouncer against PostgreSQL directly (pgbench)",
        "",
    ]
    pg = cert["pgbench"]
    if pg.get("skipped") or pg.get("error"):
        lines += [pg.get("skipped") or f"Failed: {pg['error']}", ""]
    else:
        lines += [
            f"{pg['pooler_clients']} clients through the pooler{_addresses(pg)} against "
            f"{pg['direct_clients']} directly, {pg['seconds']} s per run, {pg['rounds']} rounds "
            f"alternating, scale {pg['scale']}; TPS without the initial connection time.",
            "",
            "| workload | direct TPS | pooler TPS | pooler / direct: median (min-max) "
            "| login ms, direct | login ms, pooler |",
            "|---|---|---|---|---|---|",
            *(
                f"| {w} | {_list(v['direct_tps'])} | {_list(v['pooler_tps'])} | "
                f"{_spread_text(v['ratio'])} | {_list(v.get('direct_connect_ms', []))} | "
                f"{_list(v.get('pooler_connect_ms', []))} |"
                for w, v in pg["workloads"].items()
            ),
            "",
        ]
        if any(0 in v["pooler_tps"] or 0 in v["direct_tps"] for v in pg["workloads"].values()):
            lines += [
                "A TPS of 0: no transaction completed within the run, its clients still logging "
                "in when it ended (pgbench's run time includes the logins; see "
                "`--pgbench-seconds`).",
                "",
            ]
    rd = cert["redis"]
    lines += ["## Redis against a plain redis-server (redis-benchmark)", ""]
    if rd.get("error"):
        lines += [f"Failed: {rd['error']}", ""]
    else:
        lines += _redis_lines(rd)
    lines += [
        "## Machine and versions",
        "",
        f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_mb']:,} MB, kernel "
        f"{machine['kernel']}, open files {machine['open_files']['soft']:,} (hard "
        f"{machine['open_files']['hard']:,}), load average at the start "
        f"{' / '.join(str(x) for x in machine['load_average'])}.",
        "",
        ", ".join(f"{k} {v}" for k, v in versions.items() if k != "project_commit"),
        "",
        "Parameters: " + ", ".join(f"{k}={v}" for k, v in params.items()),
        "",
    ]
    if cert.get("notes"):
        lines += ["Notes:", "", *(f"- {n}" for n in cert["notes"]), ""]
    return "\n".join(lines)


def _redis_lines(rd: dict[str, Any]) -> list[str]:
    return [
        f"{rd['target']} at {rd['endpoint']} against a plain `redis-server` (defaults, no "
        f"persistence) started by the bench: `-n {rd['requests']} -c {rd['clients']} "
        f"-P {rd['pipeline']}`{' --cluster' if rd['cluster'] else ''}, {rd['rounds']} rounds "
        "alternating.",
        "",
        "| test | phase req/s | plain req/s | phase / plain: median (min-max) |",
        "|---|---|---|---|",
        *(
            f"| {t} | {_list(v['phase_rps'])} | {_list(v['plain_rps'])} | "
            f"{_spread_text(v['ratio'])} |"
            for t, v in rd["tests"].items()
        ),
        "",
    ]


def _counts(counts: dict[str, int]) -> str:
    if not counts:
        return ""
    return " (" + ", ".join(f"{k}: {v:,}" for k, v in counts.items()) + ")"


def _addresses(pg: dict[str, Any]) -> str:
    """Over how many pooler addresses its clients were spread (older certificates: unsaid)."""
    count = pg.get("pooler_addresses")
    return f" (spread evenly over its {count} addresses)" if count else ""


def _list(values: Sequence[float | None]) -> str:
    return " / ".join("—" if v is None else f"{v:,.0f}" for v in values)


# ------------------------------------------------------------------------------- README

START, END = "<!-- capacity:start -->\n", "<!-- capacity:end -->"


def load_certificates(folder: Path = CERTIFICATES) -> list[dict[str, Any]]:
    """The committed certificates, in phase order (launch, growth, scale, then others)."""
    found = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    rank = {phase: i for i, phase in enumerate(PHASES)}
    return sorted(found, key=lambda c: (rank.get(c["stack"], len(PHASES)), c["stack"]))


def readme_table(certs: Sequence[dict[str, Any]]) -> str:
    rows = [
        "| stack | WebSockets held / promised | refused, errors | fan-out p50 / p99 | loss "
        "| pooler / direct (median) | Redis / plain SET, GET (median) | verdict | measured "
        "| load average |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cert in certs:
        conns, trips, pg, rd = cert["connections"], cert["trips"], cert["pgbench"], cert["redis"]
        latency = trips["latency_ms"]
        pooler = (
            "no pooler"
            if pg.get("skipped")
            else "failed"
            if pg.get("error")
            else ", ".join(
                f"{w} {_ratio(v['ratio']['median'])}" for w, v in pg["workloads"].items()
            )
        )
        redis_ratio = ", ".join(
            _ratio(rd["tests"][t]["ratio"]["median"]) for t in ("SET", "GET") if t in rd["tests"]
        )
        rows.append(
            f"| [{cert['stack']}](benchmarks/certificates/{cert['stack']}.md) "
            f"| {conns['held']:,} / {cert['parameters']['promised_connections']:,} "
            f"| {conns['refused']:,}, {conns['errors']:,} "
            f"| {_ms(latency['p50'])} / {_ms(latency['p99'])} "
            f"| {trips['loss']:,} of {trips['expected']:,} "
            f"| {pooler} | {redis_ratio} | {cert['overall']} | {cert['date'][:10]} "
            f"| {cert['machine']['load_average'][0]} |"
        )
    return "\n".join(rows) + "\n"


def with_readme_table(text: str, certs: Sequence[dict[str, Any]]) -> str:
    """``text`` (a README) with the block between the capacity markers regenerated."""
    start = text.index(START) + len(START)
    end = text.index(END)
    return text[:start] + readme_table(certs) + text[end:]
