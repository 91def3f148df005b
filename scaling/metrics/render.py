"""The check's report for people: one Rich table, a level per row (pure: returns text)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

STYLES = {
    "optimal": "green",
    "warning": "yellow",
    "critical": "bold red",
    "unreachable": "bold magenta",
}


def human(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("bytes", "bytes/s"):
        suffix = "/s" if unit == "bytes/s" else ""
        for scale, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if abs(value) >= scale:
                return f"{value / scale:.1f} {name}{suffix}"
        return f"{value:.0f} B{suffix}"
    if unit == "percent":
        return f"{value:.1f} %"
    if unit == "ratio":
        return f"{100 * value:.1f} %"
    if float(value).is_integer():
        return f"{int(value)} {unit}"
    return f"{value:.2f} {unit}"


def table(rows: Sequence[Mapping[str, Any]], title: str, width: int = 140) -> str:
    t = Table(title=title, title_justify="left")
    for name, justify in (
        ("level", "left"),
        ("reading", "left"),
        ("instance", "left"),
        ("value", "right"),
        ("limit", "right"),
        ("% of limit", "right"),
        ("note", "left"),
    ):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        level = row["level"] or "-"
        percent = "-" if row["percent"] is None else f"{row['percent']:.1f} %"
        note = row["error"] or ""
        if not note and row.get("criticalFrom") is not None and row["level"]:
            note = f"warning ≥ {row['warningFrom']:g} %, critical ≥ {row['criticalFrom']:g} %"
        limit = (
            "-"
            if row["limit"] is None or row["unit"] == "percent"
            else human(row["limit"], row["unit"])
        )
        t.add_row(
            f"[{STYLES.get(level, '')}]{level}[/]" if level in STYLES else level,
            row["key"],
            row["instance"],
            human(row["value"], row["unit"]),
            limit,
            percent,
            note,
        )
    out = io.StringIO()
    Console(file=out, width=width, force_terminal=False, color_system=None).print(t)
    return out.getvalue()
