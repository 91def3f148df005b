"""The configuration reference (README): every `sikka:` key with its per-phase default,
generated from the model so the documentation cannot drift from the code."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from scaling.model import Phase, PhaseSpec
from scaling.stackconfig import SECRET_KEYS, SECTIONS, parse


def _leaves(model: BaseModel, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        key = f"{prefix}.{field.alias or name}"
        if isinstance(value, BaseModel):
            out.update(_leaves(value, key))
        else:
            out[key] = value
    return out


# Defaults that derive from the stack's name, so that two stacks never share them.
DERIVED = {
    "sikka:kubernetes.namespace": "`sikka-<stack>`",
    "sikka:docker.network": "`sikka-<stack>`",
    "sikka:docker.subnet": "a /24 of `10.213.0.0/16` chosen from the stack name",
}


def _defaults(phase: Phase) -> dict[str, Any]:
    spec: PhaseSpec = parse({"sikka:phase": phase.value}, stack=phase.value)
    values: dict[str, Any] = {
        "sikka:phase": phase.value,
        "sikka:platform": spec.platform.value,
        "sikka:protectData": spec.protect_data,
    }
    for section in SECTIONS:
        values.update(_leaves(getattr(spec, section), f"sikka:{section}"))
    return values


def _show(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | list):
        return ", ".join(f"`{item}`" for item in value) or "none"
    return f"`{value}`"


def reference_table() -> str:
    columns = {phase: _defaults(phase) for phase in Phase}
    rows = ["| key | launch | growth | scale |", "|---|---|---|---|"]
    for key in columns[Phase.LAUNCH]:
        cells = " | ".join(DERIVED.get(key) or _show(columns[p][key]) for p in Phase)
        rows.append(f"| `{key}` | {cells} |")
    for key in SECRET_KEYS:
        rows.append(f"| `sikka:{key}` (secret) | generated | generated | generated |")
    return "\n".join(rows) + "\n"


def update_readme(path: str) -> None:
    """Rewrite the block between the reference markers of a README."""
    from pathlib import Path

    readme = Path(path)
    text = readme.read_text()
    start_marker, end_marker = "<!-- reference:start -->\n", "<!-- reference:end -->"
    start = text.index(start_marker) + len(start_marker)
    end = text.index(end_marker)
    readme.write_text(text[:start] + reference_table() + text[end:])


if __name__ == "__main__":  # python -m scaling.reference README.md
    import sys

    update_readme(sys.argv[1])
