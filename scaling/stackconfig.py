"""From a stack's `sikka:` configuration to a validated PhaseSpec, every problem at once.

The same function serves `pulumi up` (values from the engine) and `sikka-scaling validate`
(values read from the stack file), so both report identical messages.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from scaling import promotion, rules
from scaling.defaults import PHASE_DEFAULTS
from scaling.issues import ConfigError, ConfigIssue, echo
from scaling.model import (
    AutoscalingSpec,
    Capacity,
    DockerSpec,
    GatewaySpec,
    KubernetesSpec,
    MonitoringSpec,
    NginxSpec,
    Phase,
    PhaseSpec,
    PlatformKind,
    PoolerSpec,
    PostgresSpec,
    RedisSpec,
    Thresholds,
)
from scaling.stackyaml import StackDocument, read_document

NAMESPACE = "sikka"
PROJECT = "sikka-scaling"  # Pulumi.yaml name: the namespace of un-prefixed keys

SECTIONS: dict[str, type[BaseModel]] = {
    "capacity": Capacity,
    "postgres": PostgresSpec,
    "pooler": PoolerSpec,
    "redis": RedisSpec,
    "gateway": GatewaySpec,
    "nginx": NginxSpec,
    "thresholds": Thresholds,
    "autoscaling": AutoscalingSpec,
    "monitoring": MonitoringSpec,
    "kubernetes": KubernetesSpec,
    "docker": DockerSpec,
}

# Keys that may only hold Pulumi secrets (`pulumi config set --secret`); when absent the
# program generates the password with pulumi-random. postgresPassword is the application
# role's; the superuser's and PgBouncer's console user's are used on Docker (StackGres makes
# its own); gatewayJwtSecret is the gateways' HS256 key (used while gateway.auth.mode is
# 'required' without a jwksUrl); postgresRewindPassword (pg_rewind's role) and
# patroniApiPassword (Patroni's REST API) are used where Patroni runs outside Kubernetes.
SECRET_KEYS = (
    "postgresPassword",
    "postgresSuperuserPassword",
    "replicationPassword",
    "pgbouncerAdminPassword",
    "postgresRewindPassword",
    "patroniApiPassword",
    "redisPassword",
    "monitoringPassword",
    "gatewayJwtSecret",
)

KNOWN_KEYS = ("phase", "platform", "protectData", *promotion.KEYS, *SECTIONS, *SECRET_KEYS)


def stack_file_name(stack: str) -> str:
    return f"Pulumi.{stack}.yaml"


def phase_for_stack(stack: str) -> Phase | None:
    """Stacks named after a phase ("growth", "growth-eu") must hold that phase."""
    for phase in Phase:
        if stack == phase.value or stack.startswith(f"{phase.value}-"):
            return phase
    return None


def decode(value: Any) -> Any:
    """Pulumi hands structured and scalar config to programs as JSON text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):  # not JSON, or nested past Python's stack
            return value
    return value


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "is required"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be a mapping (got {echo(error['input'])})"
    message = str(error["msg"]).removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    return f"{message} (got {echo(error['input'])})"


def _fields_at(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """The keys (stack-file spelling) a section accepts at ``loc``, for did-you-mean hints."""
    current: Any = model
    for part in loc:
        fields = {f.alias or n: f for n, f in current.model_fields.items()}
        annotation = fields[part].annotation if part in fields else None
        models = [
            t
            for t in (annotation, *get_args(annotation))
            if isinstance(t, type) and issubclass(t, BaseModel)
        ]
        if not models:
            return []
        current = models[0]
    return [f.alias or n for n, f in current.model_fields.items()]


def _validation_issues(
    prefix: str, model: type[BaseModel], error: ValidationError
) -> list[ConfigIssue]:
    issues = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"])
        key = f"{NAMESPACE}:{prefix}" + (f".{path}" if path else "")
        message = _describe(item)
        if item["type"] == "extra_forbidden":
            *parent, name = item["loc"]
            hint = difflib.get_close_matches(str(name), _fields_at(model, parent), n=1)
            message += f"; did you mean '{hint[0]}'?" if hint else ""
        issues.append(ConfigIssue(key, message))
    return issues


def _without(value: Mapping[str, Any], locs: list[tuple[Any, ...]]) -> dict[str, Any]:
    """``value`` with the keys at ``locs`` (nested, as pydantic reports them) removed."""
    pruned = dict(value)
    for loc in locs:
        head, *rest = loc
        if not rest:
            pruned.pop(head, None)
        elif isinstance(pruned.get(head), Mapping):
            pruned[head] = _without(pruned[head], [tuple(rest)])
    return pruned


def _unknown_key(key: str) -> ConfigIssue:
    hint = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
    suffix = f"; did you mean '{NAMESPACE}:{hint[0]}'?" if hint else ""
    return ConfigIssue(f"{NAMESPACE}:{key}", f"unknown key{suffix}")


# Namespaces of the providers and tools this project configures: never typos of ours.
OTHER_NAMESPACES = frozenset({"pulumi", "kubernetes", "docker", "random", "command"})


def _edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and swaps of
    neighbours each count 1 ("sika" and "skika" are both 1 from "sikka")."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            best = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                best = min(best, previous2[j - 2] + 1)
            current.append(best)
        previous2, previous = previous, current
    return previous[-1]


def _misspelt_namespace(namespace: str) -> bool:
    lowered = namespace.lower()
    if lowered in OTHER_NAMESPACES:
        return False
    return lowered == NAMESPACE or _edit_distance(lowered, NAMESPACE) <= 2


# Pulumi stack names: letters, digits, '-', '_', '.'; at most 100 characters.
STACK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def parse(
    values: Mapping[str, Any],
    *,
    stack: str,
    secret_keys: set[str] | frozenset[str] = frozenset(),
    found: Sequence[ConfigIssue] = (),
    source_phase: Phase | None = None,
) -> PhaseSpec:
    """Validate a stack's config (keys with namespace, e.g. ``"sikka:phase"``).

    ``found``: problems already found reading the stack file, reported with the rest.
    ``source_phase``: the phase of the stack ``sikka:promoteFrom`` names, as its stack file
    beside this one holds it (:func:`source_phase_beside`), for a source not named after one.
    Raises :class:`ConfigError` listing every problem, each with its dotted key.
    """
    source = stack_file_name(stack)
    issues: list[ConfigIssue] = list(found)
    if not STACK_NAME.fullmatch(stack):
        issues.append(
            ConfigIssue(
                "stack",
                f"{echo(stack)} is not a stack name: letters, digits, '-', '_' and '.', "
                "at most 100 characters",
            )
        )
    raw: dict[str, Any] = {}
    for full_key, value in values.items():
        namespace, colon, key = full_key.partition(":")
        if not colon:
            # Pulumi reads a key without a namespace as the project's ("sikka-scaling:").
            namespace, key = PROJECT, full_key
        if namespace == PROJECT:
            # `pulumi config set phase …` without a namespace lands here and would be ignored.
            issues.append(
                ConfigIssue(
                    full_key,
                    f"project keys live in the '{NAMESPACE}' namespace: use '{NAMESPACE}:{key}'",
                )
            )
            continue
        if namespace != NAMESPACE:
            if _misspelt_namespace(namespace):
                issues.append(
                    ConfigIssue(
                        full_key,
                        f"unknown namespace '{namespace}'; did you mean '{NAMESPACE}:{key}'?",
                    )
                )
            continue  # other packages' config (kubernetes:context, ...) is not ours
        if key not in KNOWN_KEYS:
            issues.append(_unknown_key(key))
            continue
        if key in SECRET_KEYS:
            if full_key not in secret_keys:
                issues.append(
                    ConfigIssue(
                        full_key,
                        f"must be a secret: `pulumi config set --secret {full_key} ...` "
                        "(or leave it unset to generate one)",
                    )
                )
            continue
        raw[key] = decode(value)

    expected = phase_for_stack(stack)
    phase: Phase | None = None
    if "phase" not in raw:
        issues.append(ConfigIssue(f"{NAMESPACE}:phase", "is required (launch, growth or scale)"))
    else:
        try:
            phase = Phase(raw["phase"])
        except ValueError:
            issues.append(
                ConfigIssue(
                    f"{NAMESPACE}:phase",
                    f"must be one of launch, growth, scale (got {echo(raw['phase'])})",
                )
            )
    if phase is not None and expected is not None and phase != expected:
        issues.append(
            ConfigIssue(
                f"{NAMESPACE}:phase",
                f"stack '{stack}' holds the {expected.value} phase, not {phase.value!r}",
            )
        )
    # Keep checking the rest against the stack's own phase when the key itself is bad.
    defaults_phase = phase or expected
    if defaults_phase is None:
        raise ConfigError(source, issues)

    merged = deep_merge(PHASE_DEFAULTS[defaults_phase], raw)
    sections: dict[str, Any] = {}
    try:
        sections["platform"] = PlatformKind(merged["platform"])
    except ValueError:
        issues.append(
            ConfigIssue(
                f"{NAMESPACE}:platform",
                f"must be 'docker' or 'kubernetes' (got {echo(merged['platform'])})",
            )
        )
    for name, model in SECTIONS.items():
        value = merged.get(name, {})
        if not isinstance(value, Mapping):
            issues.append(
                ConfigIssue(f"{NAMESPACE}:{name}", f"must be a mapping (got {echo(value)})")
            )
            continue
        try:
            sections[name] = model.model_validate(value)
        except ValidationError as error:
            issues.extend(_validation_issues(name, model, error))
            # Unknown keys alone (at any depth) still leave a usable section: drop them so
            # that the cross-field rules also run and every problem is reported in one go.
            unknown = [e["loc"] for e in error.errors() if e["type"] == "extra_forbidden"]
            if len(unknown) == len(error.errors()):
                with contextlib.suppress(ValidationError):  # already reported
                    sections[name] = model.model_validate(_without(value, unknown))
    protect = merged.get("protectData", True)
    if isinstance(protect, bool):
        sections["protect_data"] = protect
    else:
        issues.append(
            ConfigIssue(f"{NAMESPACE}:protectData", f"must be true or false (got {echo(protect)})")
        )
    issues.extend(rules.check(sections))
    promoted, promote_to, problems = promotion.check(
        raw,
        stack=stack,
        phase=defaults_phase,
        platform=sections.get("platform"),
        postgres=sections.get("postgres"),
        stack_file_phase=source_phase,
    )
    issues.extend(problems)
    sections["promotion"] = promoted
    sections["promote_to"] = promote_to
    if issues:
        raise ConfigError(source, issues)
    try:
        return PhaseSpec(phase=defaults_phase, stack=stack, **sections)
    except ValidationError as error:  # every field was checked above; kept as a backstop
        raise ConfigError(source, _validation_issues("", PhaseSpec, error)) from None


def read_stack_document(path: Path) -> StackDocument:
    """A stack file's config, its `secure:` keys, and the problems found reading it (see
    :mod:`scaling.stackyaml`); raises ConfigError when nothing can be read."""
    return read_document(path)


def read_stack_file(path: Path) -> tuple[dict[str, Any], set[str]]:
    """The config mapping of a stack file, and which keys hold `secure:` values; raises
    ConfigError on any problem reading it."""
    document = read_document(path)
    if document.issues:
        raise ConfigError(path.name, document.issues)
    return document.config, document.secret_keys


def stack_from_path(path: Path) -> str:
    name = path.name
    if not (name.startswith("Pulumi.") and name.endswith(".yaml")):
        raise ValueError(f"{path}: a stack file is named Pulumi.<stack>.yaml")
    return name[len("Pulumi.") : -len(".yaml")]


def source_phase_beside(directory: Path, values: Mapping[str, Any]) -> Phase | None:
    """The phase held by the stack file of the stack ``sikka:promoteFrom`` names, when that
    file is in ``directory`` (None when absent or unreadable: the rules then say so)."""
    reference = decode(values.get(f"{NAMESPACE}:{promotion.FROM_KEY}"))
    if not isinstance(reference, str) or not reference:
        return None
    name = promotion.stack_name(reference)
    if not STACK_NAME.fullmatch(name):
        return None
    path = directory / stack_file_name(name)
    if not path.is_file():
        return None
    try:
        document = read_document(path)
    except (ConfigError, OSError):
        return None
    try:
        return Phase(decode(document.config.get(f"{NAMESPACE}:phase")))
    except ValueError:
        return None


def load_stack_file(path: Path) -> PhaseSpec:
    document = read_document(path)
    return parse(
        document.config,
        stack=stack_from_path(path),
        secret_keys=document.secret_keys,
        found=document.issues,
        source_phase=source_phase_beside(path.parent, document.config),
    )
