"""Transitions on Docker and Kubernetes, as stack config: what a target stack follows.

A target stack names its source with ``sikka:promoteFrom`` (a stack name such as "launch",
or "organization/sikka-scaling/launch"). Two `pulumi up` runs move the data:

1. ``promoteFrom`` set, ``promoteCutover`` false (the default): the target's PostgreSQL is a
   standby of the source's (StackGres ``spec.replicateFrom`` on Kubernetes, Patroni's
   ``standby_cluster`` on Docker), its Redis master a replica of the source's Redis (no
   Sentinel runs yet); the target catches up while the source serves. A Citus target of a
   launch or growth source on Kubernetes subscribes to it instead (logical replication into
   its coordinator, a Job: scaling.kubernetes.logical).
2. ``promoteCutover: true``: the target is promoted (``replicateFrom`` removed, after the
   writes on the source have stopped; on Docker one-shot guards stop them, wait for the
   target, then remove ``standby_cluster`` and promote the Redis master:
   scaling.render.cutover; for the Citus target a Job checks the writes have stopped, sets
   the sequences, drops the subscription and distributes the tables). A Redis Cluster
   target, formed empty, takes the source master's keys then, under a pause of its writes
   (the one-shot ``redis-import``, a Job on Kubernetes: scaling.render.redis_import).

The source stack may say ``sikka:promoteTo`` (the target's name): a single PostgreSQL
(launch) then keeps a replication login and admits it from its private network, which the
target's members join (Docker).

Pure: every rule is a function of the stack's values; :func:`check` reports every problem
with its key, collected with every other problem before any resource is registered.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from scaling.issues import ConfigIssue, echo
from scaling.model import STACK_REFERENCE, Phase, PlatformKind, PostgresSpec, Promotion

NAMESPACE = "sikka"
FROM_KEY = "promoteFrom"
CUTOVER_KEY = "promoteCutover"
FORCE_KEY = "promoteForce"
TO_KEY = "promoteTo"
KEYS = (FROM_KEY, CUTOVER_KEY, FORCE_KEY, TO_KEY)
ORDER = tuple(Phase)

# The stack output a source exports for its targets (scaling.exports.transition_source), and
# its secret companion: the passwords the target inherits (the data carries the roles and
# their verifiers; the gateways' key keeps clients' tokens valid).
SOURCE_EXPORT = "transition"
SECRETS_EXPORT = "transition_secrets"
# Which of them the stack inherited from its own source: it keeps them (from its own last
# update's outputs) once sikka:promoteFrom is removed, so finishing a transition rotates none.
INHERITED_EXPORT = "transition_inherited"
INHERITED_SECRETS = (
    "postgres-password",
    "postgres-superuser-password",
    "replication-password",
    "monitoring-password",
    "redis-password",
    "gateway-jwt-secret",
)

# Stand-ins for what only the source stack's outputs know (its hosts, its network): the
# renderers write them, the Pulumi layer fills them from a StackReference (fill_tokens).
TOKEN = re.compile(r"@@source\.([a-z_]+)\.([a-z_]+)@@")


def token(section: str, field: str) -> str:
    """``token("postgres", "host") == "@@source.postgres.host@@"``."""
    return f"@@source.{section}.{field}@@"


def tokens_in(value: Any) -> set[tuple[str, str]]:
    """Every (section, field) token anywhere in ``value`` (strings, dicts, lists)."""
    if isinstance(value, str):
        return {(m[1], m[2]) for m in TOKEN.finditer(value)}
    if isinstance(value, Mapping):
        return {t for item in value.values() for t in tokens_in(item)}
    if isinstance(value, list | tuple):
        return {t for item in value for t in tokens_in(item)}
    return set()


def fill_tokens(value: Any, source: Mapping[str, Any]) -> Any:
    """``value`` with every token replaced from the source's ``transition`` output; a token
    standing alone becomes the output's own value (so a port stays an integer)."""
    if isinstance(value, str):
        whole = TOKEN.fullmatch(value)
        if whole:
            return _lookup(source, whole[1], whole[2])
        return TOKEN.sub(lambda m: str(_lookup(source, m[1], m[2])), value)
    if isinstance(value, Mapping):
        return {key: fill_tokens(item, source) for key, item in value.items()}
    if isinstance(value, list):
        return [fill_tokens(item, source) for item in value]
    if isinstance(value, tuple):
        return tuple(fill_tokens(item, source) for item in value)
    return value


def _lookup(source: Mapping[str, Any], section: str, field: str) -> Any:
    part = source.get(section)
    if not isinstance(part, Mapping) or part.get(field) in (None, ""):
        hint = (
            f"set sikka:{TO_KEY} (this stack's name) on the source and run `pulumi up` there"
            if (section, field) == ("docker", "network")
            else "run `pulumi up` on the source with this version of the program"
        )
        raise KeyError(f"the source's '{SOURCE_EXPORT}' output has no {section}.{field}: {hint}")
    value = part[field]
    # Stack outputs carry numbers as JSON does (5432.0 through a StackReference): a port
    # must read as an integer wherever it is written.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def stack_name(reference: str) -> str:
    """The stack's own name in a reference ("org/project/launch" → "launch")."""
    return reference.rsplit("/", 1)[-1]


def full_reference(reference: str, organization: str, project: str) -> str:
    """The fully qualified name a StackReference needs."""
    parts = reference.split("/")
    if len(parts) == 3:
        return reference
    if len(parts) == 2:
        return f"{organization}/{reference}"
    return f"{organization}/{project}/{reference}"


def source_phase_of(reference: str, stack_file_phase: Phase | None) -> Phase | None:
    """The source's phase: its name tells ("growth", "growth-eu"), else its stack file."""
    name = stack_name(reference)
    for phase in Phase:
        if name == phase.value or name.startswith(f"{phase.value}-"):
            return phase
    return stack_file_phase


def direction(source: Phase, target: Phase) -> str | None:
    """Why ``source → target`` is not the next step (None when it is)."""
    if source.next == target:
        return None
    chain = " → ".join(p.value for p in ORDER)
    if source == target:
        return f"{source.value} → {target.value} stays in the same phase ({chain})"
    if ORDER.index(target) < ORDER.index(source):
        return f"{source.value} → {target.value} goes backwards ({chain})"
    skipped = ", ".join(p.value for p in ORDER[ORDER.index(source) + 1 : ORDER.index(target)])
    return f"{source.value} → {target.value} skips {skipped} ({chain})"


def _issue(key: str, message: str) -> ConfigIssue:
    return ConfigIssue(f"{NAMESPACE}:{key}", message)


def _flag(raw: Mapping[str, Any], key: str, found: list[ConfigIssue]) -> bool:
    value = raw.get(key, False)
    if isinstance(value, bool):
        return value
    found.append(_issue(key, f"must be true or false (got {echo(value)})"))
    return False


def _reference(raw: Mapping[str, Any], key: str, found: list[ConfigIssue]) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not STACK_REFERENCE.fullmatch(value):
        found.append(
            _issue(
                key,
                "must be a stack name such as 'launch' or "
                f"'organization/sikka-scaling/launch' (got {echo(value)})",
            )
        )
        return None
    return value


def check(
    raw: Mapping[str, Any],
    *,
    stack: str,
    phase: Phase,
    platform: PlatformKind | None,
    postgres: PostgresSpec | None,
    stack_file_phase: Phase | None = None,
) -> tuple[Promotion | None, str | None, list[ConfigIssue]]:
    """The stack's promotion (or None for a fresh phase), its ``promoteTo``, and every
    problem with them.

    ``raw``: the stack's un-namespaced values; ``stack_file_phase``: the phase the source's
    stack file (beside this one) holds, read by the caller, for sources not named after a
    phase.
    """
    found: list[ConfigIssue] = []
    source = _reference(raw, FROM_KEY, found)
    cutover = _flag(raw, CUTOVER_KEY, found)
    force = _flag(raw, FORCE_KEY, found)
    promote_to = _reference(raw, TO_KEY, found)
    if promote_to is not None and stack_name(promote_to) == stack:
        found.append(
            _issue(TO_KEY, f"names this stack itself ({stack!r}); name the stack that follows it")
        )
    if FROM_KEY not in raw:
        if cutover:
            found.append(
                _issue(
                    CUTOVER_KEY,
                    f"needs sikka:{FROM_KEY} (the stack this one is promoted from); "
                    "remove it for a fresh phase",
                )
            )
        if FORCE_KEY in raw:
            found.append(_issue(FORCE_KEY, f"has no effect without sikka:{FROM_KEY}"))
        return None, promote_to, found
    if source is None:
        return None, promote_to, found
    name = stack_name(source)
    source_phase = source_phase_of(source, stack_file_phase)
    if name == stack:
        found.append(
            _issue(
                FROM_KEY,
                f"names this stack itself ({stack!r}); name the stack the data comes from, "
                "such as 'launch'",
            )
        )
    elif source_phase is None:
        if not force:
            found.append(
                _issue(
                    FROM_KEY,
                    f"cannot tell the phase of stack {name!r} (its name names none and "
                    f"Pulumi.{name}.yaml is not beside this stack file); set "
                    f"sikka:{FORCE_KEY}: true to follow it anyway",
                )
            )
    else:
        why = direction(source_phase, phase)
        if why is not None and not force:
            found.append(_issue(FROM_KEY, f"{why}; set sikka:{FORCE_KEY}: true to do it anyway"))
    found.extend(_supported(phase, platform, postgres))
    promotion = Promotion(
        source=source, source_stack=name, source_phase=source_phase, cutover=cutover, force=force
    )
    return promotion, promote_to, found


def _supported(
    phase: Phase, platform: PlatformKind | None, postgres: PostgresSpec | None
) -> Iterator[ConfigIssue]:
    """What no sikka:promoteForce makes possible: the mechanisms themselves."""
    if postgres is None or platform is None:
        return
    if platform == PlatformKind.DOCKER and postgres.mode != "replicated":
        yield _issue(
            FROM_KEY,
            f"on Docker the target follows its source as a Patroni standby cluster: the "
            f"{phase.value} phase's postgres.mode {postgres.mode!r} runs no Patroni "
            "(use a 'replicated' target, such as growth)",
        )
    # A Citus target on Kubernetes follows a sharded source by StackGres replicateFrom
    # (group by group) and a launch or growth source by logical replication into its
    # coordinator (scaling.kubernetes.logical): both are rendered.


def following(promotion: Promotion | None) -> bool:
    """Whether the phase is a standby of its source now (promoteFrom set, no cut-over)."""
    return promotion is not None and promotion.following
