"""The configuration reference (README): every `sikka:` key with its per-phase default,
generated from the model so the documentation cannot drift from the code."""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

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


def _fields(model: type[BaseModel], prefix: str) -> dict[str, FieldInfo]:
    out: dict[str, FieldInfo] = {}
    for name, field in model.model_fields.items():
        key = f"{prefix}.{field.alias or name}"
        inner = [t for t in (field.annotation, *get_args(field.annotation)) if t is not None]
        nested = [t for t in inner if isinstance(t, type) and issubclass(t, BaseModel)]
        if nested:
            out.update(_fields(nested[0], key))
        else:
            out[key] = field
    return out


def _number(value: int) -> str:
    return f"{value:,}"


def allowed(field: FieldInfo) -> str:
    """What a key accepts, from the model: ranges, choices, patterns, lengths."""
    annotation: Any = field.annotation
    metadata = list(field.metadata)
    description = field.description
    optional = False
    if get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation):
        optional = True
        rest = [t for t in get_args(annotation) if t is not type(None)]
        annotation = rest[0] if len(rest) == 1 else annotation
    if get_origin(annotation) is Annotated:
        annotation, *extra = get_args(annotation)
        for item in extra:
            if isinstance(item, FieldInfo):
                metadata += item.metadata
                description = description or item.description
            else:
                metadata.append(item)
    constraints = {
        name: getattr(item, name)
        for item in metadata
        for name in ("ge", "le", "max_length", "pattern")
        if getattr(item, name, None) is not None
    }
    if description:
        text = description
    elif annotation is bool:
        text = "true, false"
    elif get_origin(annotation) is Literal:
        text = ", ".join(f"`{value}`" for value in get_args(annotation))
    elif annotation is int:
        low, high = constraints.get("ge"), constraints.get("le")
        text = (
            f"{_number(low)}\N{EN DASH}{_number(high)}"
            if low is not None and high is not None
            else f"≥ {_number(low)}"
            if low is not None
            else "a whole number"
        )
    elif constraints.get("pattern"):
        text = f"`{constraints['pattern']}`"
    else:
        text = "text"
    if constraints.get("max_length") and annotation is str:
        text += f", at most {constraints['max_length']} characters"
    if optional:
        text += "; or unset"
    return text.replace("|", "\\|")


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
        # A transition (scaling.promotion): unset for a fresh phase.
        "sikka:promoteFrom": None,
        "sikka:promoteCutover": False,
        "sikka:promoteForce": False,
        "sikka:promoteTo": None,
    }
    for section in SECTIONS:
        values.update(_leaves(getattr(spec, section), f"sikka:{section}"))
    return values


def _show(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return ", ".join(f"`{key}: {item}`" for key, item in value.items()) or "none"
    if isinstance(value, tuple | list):
        return ", ".join(f"`{item}`" for item in value) or "none"
    return f"`{value}`"


ALLOWED = {
    "sikka:phase": "`launch`, `growth`, `scale`",
    "sikka:platform": "`docker`, `kubernetes`",
    "sikka:protectData": "true, false",
    "sikka:promoteFrom": (
        "the stack this one takes its data from (`launch`, `organization/sikka-scaling/launch`): "
        "the previous phase unless `promoteForce`; unset for a fresh phase"
    ),
    "sikka:promoteCutover": "true (promotes: the second `pulumi up`), false; needs `promoteFrom`",
    "sikka:promoteForce": "true (lets `promoteFrom` skip a phase or go backwards), false",
    "sikka:promoteTo": (
        "on a transition's source: the stack that follows it (its PostgreSQL then admits the "
        "target's standby); or unset"
    ),
}


def reference_table() -> str:
    columns = {phase: _defaults(phase) for phase in Phase}
    fields = {
        k: v for name, model in SECTIONS.items() for k, v in _fields(model, f"sikka:{name}").items()
    }
    rows = ["| key | launch | growth | scale | allowed |", "|---|---|---|---|---|"]
    for key in columns[Phase.LAUNCH]:
        cells = " | ".join(DERIVED.get(key) or _show(columns[p][key]) for p in Phase)
        rows.append(f"| `{key}` | {cells} | {ALLOWED.get(key) or allowed(fields[key])} |")
    for key in SECRET_KEYS:
        rows.append(
            f"| `sikka:{key}` (secret) | generated | generated | generated | a Pulumi secret |"
        )
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
