"""Secrets the builder emits: placeholders only, never a value.

Every secret value appears as ``${VARIABLE}`` (the variables of
:data:`scaling.render.env.SECRET_VARIABLES`). The Pulumi layer resolves them with
:func:`fill_placeholders` inside an ``Output.apply`` over the generated passwords; the YAML
written by ``sikka-scaling render`` keeps the references, to be filled by whatever applies it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from scaling.model import PhaseSpec
from scaling.render.env import SECRET_VARIABLES
from scaling.topology import Node

from .manifests import Manifest, ObjectTier, labels, obj

# Secret name ("postgres-password") → variable ("POSTGRES_PASSWORD"), as everywhere else.
SECRET_PLACEHOLDERS: Mapping[str, str] = SECRET_VARIABLES

POSTGRES_SECRET = "postgres-credentials"
REDIS_SECRET = "redis-credentials"
GATEWAY_SECRET = "gateway-credentials"
APP_PASSWORD_KEY = "password"
REPLICATION_PASSWORD_KEY = "replication-password"
REDIS_PASSWORD_KEY = "password"
GATEWAY_JWT_SECRET_KEY = "jwt-secret"

# The topology names a secret ("redis-password"); on Kubernetes it is one key of one Secret.
# Both the Secrets' placeholders and the containers' secretKeyRefs are read from here.
SECRET_KEYS: Mapping[str, tuple[str, str]] = {
    "postgres-password": (POSTGRES_SECRET, APP_PASSWORD_KEY),
    "replication-password": (POSTGRES_SECRET, REPLICATION_PASSWORD_KEY),
    "redis-password": (REDIS_SECRET, REDIS_PASSWORD_KEY),
    "gateway-jwt-secret": (GATEWAY_SECRET, GATEWAY_JWT_SECRET_KEY),
}

_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def placeholder(secret: str) -> str:
    """``placeholder("redis-password") == "${REDIS_PASSWORD}"``."""
    return "${" + SECRET_PLACEHOLDERS[secret] + "}"


def secret_manifest(
    spec: PhaseSpec, tier: ObjectTier, name: str, string_data: dict[str, str]
) -> Manifest:
    return obj(
        tier,
        "v1",
        "Secret",
        name,
        spec.namespace,
        labels(spec, name, tier),
        type="Opaque",
        stringData=string_data,
    )


def secret_key_ref(name: str, key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": name, "key": key}}


def secret_placeholders(secret_object: str) -> dict[str, str]:
    """The stringData of one of the phase's Secrets: a placeholder per key it holds."""
    return {
        key: placeholder(secret)
        for secret, (name, key) in SECRET_KEYS.items()
        if name == secret_object
    }


def secret_env(node: Node) -> list[dict[str, Any]]:
    """The node's secret environment (variable → secret name) as secretKeyRefs."""
    return [
        {"name": variable, "valueFrom": secret_key_ref(*SECRET_KEYS[secret])}
        for variable, secret in node.secret_env.items()
    ]


def placeholders_in(body: Mapping[str, Any]) -> set[str]:
    """The variables a Secret body refers to (what the caller must supply)."""
    found: set[str] = set()
    for value in (body.get("stringData") or {}).values():
        found.update(_PLACEHOLDER.findall(value))
    return found


def _sql_literal_body(value: str) -> str:
    # Inside a standard-conforming '...' literal only the quote itself needs doubling.
    return value.replace("'", "''")


def fill_placeholders(body: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
    """A copy of a Secret body with each ``${VARIABLE}`` in stringData replaced.

    Values going into ``*.sql`` keys are quoted for a SQL string literal. Raises KeyError
    naming a variable that ``values`` lacks, so nothing half-filled is ever applied.
    """
    filled = copy.deepcopy(dict(body))
    data = filled.get("stringData") or {}
    for key, text in data.items():
        quote = _sql_literal_body if key.endswith(".sql") else (lambda v: v)

        def replace(match: re.Match[str], quote: Any = quote) -> str:
            variable = match.group(1)
            if variable not in values:
                raise KeyError(f"no value for secret variable {variable}")
            return str(quote(values[variable]))

        data[key] = _PLACEHOLDER.sub(replace, text)
    return filled
