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

from scaling.safety import SHAPE_EXPORT


def previous_shape(parent: pulumi.Resource | None = None) -> Mapping[str, Any] | None:
    """The shape exported by the stack's last update, or None."""
    organization = pulumi.get_organization() or "organization"
    name = f"{organization}/{pulumi.get_project()}/{pulumi.get_stack()}"
    reference = pulumi.StackReference(name, opts=pulumi.ResourceOptions(parent=parent))
    # Read synchronously: the decision must come before any other resource is registered.
    details = _sync_await(reference.get_output_details(SHAPE_EXPORT))
    value = details.value if details.value is not None else details.secret_value
    return value if isinstance(value, Mapping) else None
