"""From a stack's `sikka:` configuration to a validated PhaseSpec, every problem at once.

The same function serves `pulumi up` (values from the engine) and `sikka-scaling validate`
(values read from the stack file), so both report identical messages.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from scaling import rules
from scaling.defaults import PHASE_DEFAULTS
from scaling.issues import ConfigError, ConfigIssue
from scaling.model import (
    AutoscalingSpec,
    Capacity,
    DockerSpec,
    GatewaySpec,
    KubernetesSpec,
    NginxSpec,
    Phase,
    PhaseSpec,
    PlatformKind,
    PoolerSpec,
    PostgresSpec,
    RedisSpec,
    Thresholds,
)

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
    "kubernetes": KubernetesSpec,
    "docker": DockerSpec,
}

# Keys that may only hold Pulumi secrets (`pulumi config set --secret`); when absent the
# program generates the password with pulumi-random. gatewayJwtSecret is the gateways'
# HS256 key (used while gateway.auth.mode is 'required' without a jwksUrl).
SECRET_KEYS = ("postgresPassword", "replicationPassword", "redisPassword", "gatewayJwtSecret")

KNOWN_KEYS = ("phase", "platform", "protectData", *SECTIONS, *SECRET_KEYS)


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
        except ValueError:
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
    message = str(error["msg"]).removeprefix("Value error, ")
    message = message[0].lower() + message[1:]
    return f"{message} (got {error['input']!r})"


def _validation_issues(prefix: str, error: ValidationError) -> list[ConfigIssue]:
    issues = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"])
        key = f"{NAMESPACE}:{prefix}" + (f".{path}" if path else "")
        issues.append(ConfigIssue(key, _describe(item)))
    return issues


def _unknown_key(key: str) -> ConfigIssue:
    hint = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
    suffix = f"; did you mean '{NAMESPACE}:{hint[0]}'?" if hint else ""
    return ConfigIssue(f"{NAMESPACE}:{key}", f"unknown key{suffix}")


def parse(
    values: Mapping[str, Any], *, stack: str, secret_keys: set[str] | frozenset[str] = frozenset()
) -> PhaseSpec:
    """Validate a stack's config (keys with namespace, e.g. ``"sikka:phase"``).

    Raises :class:`ConfigError` listing every problem, each with its dotted key.
    """
    source = stack_file_name(stack)
    issues: list[ConfigIssue] = []
    raw: dict[str, Any] = {}
    for full_key, value in values.items():
        namespace, _, key = full_key.partition(":")
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
                    f"must be one of launch, growth, scale (got {raw['phase']!r})",
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
                f"must be 'docker' or 'kubernetes' (got {merged['platform']!r})",
            )
        )
    for name, model in SECTIONS.items():
        value = merged.get(name, {})
        if not isinstance(value, Mapping):
            issues.append(ConfigIssue(f"{NAMESPACE}:{name}", f"must be a mapping (got {value!r})"))
            continue
        try:
            sections[name] = model.model_validate(value)
        except ValidationError as error:
            issues.extend(_validation_issues(name, error))
            # Unknown keys alone still leave a usable section: drop them so that the
            # cross-field rules also run and every problem is reported in one go.
            unknown = {e["loc"][0] for e in error.errors() if e["type"] == "extra_forbidden"}
            if len(unknown) == len(error.errors()):
                known = {k: v for k, v in value.items() if k not in unknown}
                sections[name] = model.model_validate(known)
    protect = merged.get("protectData", True)
    if isinstance(protect, bool):
        sections["protect_data"] = protect
    else:
        issues.append(
            ConfigIssue(f"{NAMESPACE}:protectData", f"must be true or false (got {protect!r})")
        )
    issues.extend(rules.check(sections))
    if issues:
        raise ConfigError(source, issues)
    return PhaseSpec(phase=defaults_phase, stack=stack, **sections)


def read_stack_file(path: Path) -> tuple[dict[str, Any], set[str]]:
    """The config mapping of a stack file, and which keys hold `secure:` values."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(
            path.name, [ConfigIssue("config", f"is not valid YAML: {error}")]
        ) from None
    config = document.get("config") or {}
    if not isinstance(config, Mapping):
        raise ConfigError(path.name, [ConfigIssue("config", "must be a mapping")])
    values: dict[str, Any] = {}
    secret_keys: set[str] = set()
    for key, value in config.items():
        if isinstance(value, Mapping) and set(value) == {"secure"}:
            secret_keys.add(key)
        values[key] = value
    return values, secret_keys


def stack_from_path(path: Path) -> str:
    name = path.name
    if not (name.startswith("Pulumi.") and name.endswith(".yaml")):
        raise ValueError(f"{path}: a stack file is named Pulumi.<stack>.yaml")
    return name[len("Pulumi.") : -len(".yaml")]


def load_stack_file(path: Path) -> PhaseSpec:
    values, secret_keys = read_stack_file(path)
    return parse(values, stack=stack_from_path(path), secret_keys=secret_keys)
