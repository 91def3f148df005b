"""What this stack last deployed, read back from its own outputs.

A stack may reference itself: the StackReference reads the outputs of its last update (none
on the first), so `pulumi up` can refuse a change that would lose data before it registers
anything (scaling.safety).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
from pulumi.runtime.sync_await import _sync_await

from scaling.promotion import INHERITED_EXPORT, SECRETS_EXPORT
from scaling.safety import SHAPE_EXPORT


def previous_outputs(
    names: tuple[str, ...], parent: pulumi.Resource | None = None
) -> dict[str, Any]:
    """The outputs ``names`` of the stack's last update (None for each it did not export),
    read through one StackReference to the stack itself; secret ones come back as plain
    values in memory: the caller keeps them secret."""
    organization = pulumi.get_organization() or "organization"
    name = f"{organization}/{pulumi.get_project()}/{pulumi.get_stack()}"
    reference = pulumi.StackReference(name, opts=pulumi.ResourceOptions(parent=parent))
    found: dict[str, Any] = {}
    for output in names:
        # Read synchronously: the decision must come before any other resource is registered.
        details = _sync_await(reference.get_output_details(output))
        found[output] = details.value if details.value is not None else details.secret_value
    return found


def previous_shape(parent: pulumi.Resource | None = None) -> Mapping[str, Any] | None:
    """The shape exported by the stack's last update, or None."""
    return shape_of(previous_outputs((SHAPE_EXPORT,), parent))


def shape_of(outputs: Mapping[str, Any]) -> Mapping[str, Any] | None:
    value = outputs.get(SHAPE_EXPORT)
    return value if isinstance(value, Mapping) else None


def inherited_before(outputs: Mapping[str, Any]) -> dict[str, str]:
    """The secrets the stack inherited from a transition's source at its last update
    (scaling.promotion), with their values: it keeps them once sikka:promoteFrom is removed,
    so finishing a transition rotates no password."""
    names = outputs.get(INHERITED_EXPORT)
    values = outputs.get(SECRETS_EXPORT)
    if not isinstance(names, list) or not isinstance(values, Mapping):
        return {}
    return {n: str(values[n]) for n in names if isinstance(n, str) and values.get(n)}
