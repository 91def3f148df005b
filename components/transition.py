"""A transition's source stack, read through a StackReference (scaling.promotion).

The target of ``sikka:promoteFrom`` reads the source stack's ``transition`` output (where
its PostgreSQL and Redis take a replica's connection, its network or namespace) and the
secret ``transition_secrets`` output (the passwords the target inherits: the replicated
data carries the roles and their verifiers). Nothing here is ever plaintext: the secrets
stay Pulumi secrets from the source's state to the target's resources.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

from scaling.kubernetes.postgres import follows_logically, is_sharded
from scaling.model import PhaseSpec, Promotion
from scaling.promotion import (
    SECRETS_EXPORT,
    SOURCE_EXPORT,
    fill_tokens,
    full_reference,
    tokens_in,
)
from scaling.topology.postgres import SOURCE_DOOR_PORT


class SourceStack:
    """The source stack of ``promotion``: its ``transition`` output (checked against the
    target's platform) and its inherited secrets."""

    def __init__(
        self, spec: PhaseSpec, promotion: Promotion, parent: pulumi.Resource | None = None
    ) -> None:
        organization = pulumi.get_organization() or "organization"
        self.name = full_reference(promotion.source, organization, pulumi.get_project())
        self.reference = pulumi.StackReference(
            self.name, opts=pulumi.ResourceOptions(parent=parent)
        )
        platform = spec.platform.value
        stack = spec.stack
        # Kubernetes: a Citus target follows a sharded source group by group and a plain one
        # by logical replication; any other target follows a plain source.
        sharded_source = is_sharded(spec) and not follows_logically(spec)

        def checked(value: Any) -> dict[str, Any]:
            if not isinstance(value, Mapping):
                raise pulumi.RunError(
                    f"Pulumi.{stack}.yaml: sikka:promoteFrom: stack {self.name!r} exports no "
                    f"'{SOURCE_EXPORT}' output: run `pulumi up` on it with this version of "
                    "the program first"
                )
            if value.get("platform") != platform:
                raise pulumi.RunError(
                    f"Pulumi.{stack}.yaml: sikka:promoteFrom: stack {self.name!r} runs on "
                    f"{value.get('platform')!r}, this stack on {platform!r}: a standby follows "
                    "a source on its own platform"
                )
            door = value.get("postgres") or {}
            if platform == "kubernetes" and bool(door.get("sharded")) != sharded_source:
                raise pulumi.RunError(
                    f"Pulumi.{stack}.yaml: sikka:promoteFrom: stack {self.name!r} runs "
                    f"{'a sharded' if door.get('sharded') else 'a plain'} PostgreSQL; this "
                    f"stack follows {'a sharded' if sharded_source else 'a plain'} one "
                    "(its phase, from its name or stack file, says so): name the right stack"
                )
            if platform == "docker" and door.get("port") != SOURCE_DOOR_PORT:
                raise pulumi.RunError(
                    f"Pulumi.{stack}.yaml: sikka:promoteFrom: stack {self.name!r} takes "
                    f"replication on port {door.get('port')!r}; a Docker target follows port "
                    f"{SOURCE_DOOR_PORT}"
                )
            return dict(value)

        self.outputs: pulumi.Output[dict[str, Any]] = self.reference.get_output(
            SOURCE_EXPORT
        ).apply(checked)
        self._secrets = pulumi.Output.secret(self.reference.get_output(SECRETS_EXPORT))
        self._stack = stack

    def secret(self, name: str) -> pulumi.Output[str]:
        """One of the source's inherited secrets, still a secret."""
        stack, reference = self._stack, self.name

        def pick(values: Any) -> str:
            if not isinstance(values, Mapping) or not values.get(name):
                raise pulumi.RunError(
                    f"Pulumi.{stack}.yaml: sikka:promoteFrom: stack {reference!r} exports no "
                    f"{name!r} in '{SECRETS_EXPORT}': set sikka:promoteTo (this stack's name) "
                    "on it and run `pulumi up` there, or set this stack's own secret for it"
                )
            return str(values[name])

        return pulumi.Output.secret(self._secrets.apply(pick))

    def filled(self, value: Any) -> Any:
        """``value`` with the source's tokens filled (an Output when it holds any)."""
        if not tokens_in(value):
            return value
        stack, reference = self._stack, self.name

        def fill(source: dict[str, Any]) -> Any:
            try:
                return fill_tokens(value, source)
            except KeyError as error:
                raise pulumi.RunError(
                    f"Pulumi.{stack}.yaml: sikka:promoteFrom: stack {reference!r}: {error.args[0]}"
                ) from None

        return self.outputs.apply(fill)


def filled(source: SourceStack | None, value: Any, what: str) -> Any:
    """``value`` with its source tokens filled; a token without a source is a programming
    error, caught before anything is registered."""
    if source is not None:
        return source.filled(value)
    if tokens_in(value):
        raise ValueError(f"{what}: names the transition's source, but the stack follows none")
    return value
