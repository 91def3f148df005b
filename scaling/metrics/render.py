"""The check's report for people: one Rich table, a level per row (pure: returns text)."""

from __future__ import annotations

import io
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

# Units said after the number; counts (connections, keys, trips, ...) stand alone.
SUFFIXES = {"messages/s": "/s", "seconds": " s", "milliseconds": " ms"}


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
    number = f"{int(value)}" if float(value).is_integer() else f"{value:.2f}"
    return number + SUFFIXES.get(unit, "")


def table(rows: Sequence[Mapping[str, Any]], title: str, width: int | None = None) -> str:
    """The readings as a table, ``width`` columns wide at most (default: the terminal's,
    or 140 when there is none). ``band`` is where warning and critical start, in % of the
    limit; an ``error`` column, when a part could not be measured, says why."""
    width = width or shutil.get_terminal_size((140, 24)).columns
    t = Table(title=title, title_justify="left")
    for name, justify in (
        ("level", "left"),
        ("reading", "left"),
        ("instance", "left"),
        ("value", "right"),
        ("limit", "right"),
        ("%", "right"),
        ("band %", "right"),
    ):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    errors = any(row["error"] for row in rows)
    if errors:
        t.add_column("error", justify="left")
    for row in rows:
        percent = "-" if row["percent"] is None else f"{row['percent']:.1f}"
        band = ""
        if row.get("criticalFrom") is not None:
            band = f"{row['warningFrom']:g}/{row['criticalFrom']:g}"
        limit = "-"
        if row["limit"] is not None and row["unit"] != "percent":
            limit = human(row["limit"], row["unit"])
        t.add_row(
            row["level"] or "-",
            row["key"],
            row["instance"],
            human(row["value"], row["unit"]),
            limit,
            percent,
            band,
            *([row["error"] or ""] if errors else []),
        )
    out = io.StringIO()
    Console(file=out, width=width, force_terminal=False, color_system=None).print(t)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())
