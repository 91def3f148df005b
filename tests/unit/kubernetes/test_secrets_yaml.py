"""No secret value anywhere: placeholders in Secrets, references everywhere else; and the
YAML `render` writes is the same objects."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from k8s_support import SPECS, find, pod_templates

from scaling.kubernetes import (
    SECRET_PLACEHOLDERS,
    Manifest,
    build_manifests,
    fill_placeholders,
    placeholders_in,
    to_yaml,
)
from scaling.model import PhaseSpec
from scaling.render.env import SECRET_VARIABLES, required_secrets
from scaling.stackconfig import SECRET_KEYS

PLACEHOLDER = re.compile(r"\$\{[A-Z_]+\}")
SECRET_KEY = re.compile(r"(password|passwd|secret|token|\.sql$)", re.IGNORECASE)


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]")
    else:
        yield path, value


def _secret_name(stack_key: str) -> str:
    """The secret a stack key sets: "postgresPassword" → "postgres-password"."""
    return re.sub(r"[A-Z]", lambda match: "-" + match.group().lower(), stack_key)


def test_placeholders_cover_the_stack_secrets() -> None:
    assert sorted(SECRET_PLACEHOLDERS.values()) == [
        "DATABASE_PASSWORD",
        "DATABASE_PASSWORD_SCRAM",
        "GATEWAY_JWT_SECRET",
        "MONITORING_PASSWORD",
        "MONITORING_PASSWORD_SCRAM",
        "PATRONI_RESTAPI_PASSWORD",
        "PATRONI_REWIND_PASSWORD",
        "PGBOUNCER_ADMIN_PASSWORD",
        "PGBOUNCER_ADMIN_PASSWORD_SCRAM",
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "REPLICATION_PASSWORD",
    ]
    # Every secret a stack file may set has its placeholder.
    assert {_secret_name(key) for key in SECRET_KEYS} <= set(SECRET_PLACEHOLDERS)


def test_secret_values_are_placeholders_only(spec: PhaseSpec, manifests: list[Manifest]) -> None:
    secrets = [m for m in manifests if m.kind == "Secret"]
    assert {m.name for m in secrets} == {
        "postgres-credentials",
        "redis-credentials",
        "gateway-credentials",
    }
    referenced: set[str] = set()
    for secret in secrets:
        assert "data" not in secret.body  # stringData only: nothing pre-encoded
        for key, value in secret.body["stringData"].items():
            if SECRET_KEY.search(key):
                assert PLACEHOLDER.search(value), f"{secret.name}.{key}"
        referenced |= placeholders_in(secret.body)
    # StackGres generates the superuser's and its pooler console's passwords itself.
    assert referenced == {SECRET_VARIABLES[name] for name in required_secrets(spec)}
    assert not referenced & {"POSTGRES_PASSWORD", "PGBOUNCER_ADMIN_PASSWORD"}


def test_no_object_outside_secrets_holds_a_password(manifests: list[Manifest]) -> None:
    for m in manifests:
        if m.kind == "Secret":
            continue
        for path, value in _walk(m.body):
            if isinstance(value, str):
                assert not PLACEHOLDER.search(value), f"{m.key}{path}"
                # A literal after a password directive would be a leaked value.
                assert not re.search(r"(requirepass|auth-pass|PASSWORD ')\s*\"?\w", value), (
                    f"{m.key}{path}"
                )


def test_password_env_comes_from_secret_refs_only(manifests: list[Manifest]) -> None:
    for owner, template in pod_templates(manifests):
        for container in template["spec"]["containers"]:
            for item in container.get("env", []):
                if "PASSWORD" in item["name"] or "SECRET" in item["name"]:
                    assert "value" not in item, f"{owner.key}:{item['name']}"
                    assert "secretKeyRef" in item["valueFrom"]


def test_fill_placeholders_substitutes_and_quotes_for_sql() -> None:
    secret = find(build_manifests(SPECS["growth"]()), "Secret", "postgres-credentials")
    values = {"DATABASE_PASSWORD": "pa'ss", "REPLICATION_PASSWORD": "r3pl", "REDIS_PASSWORD": "x"}
    filled = fill_placeholders(secret.body, values)
    assert filled["stringData"]["password"] == "pa'ss"
    assert filled["stringData"]["replication-password"] == "r3pl"
    assert "PASSWORD 'pa''ss';" in filled["stringData"]["create-app-user.sql"]
    # The builder's object is untouched.
    assert secret.body["stringData"]["password"] == "${DATABASE_PASSWORD}"


def test_fill_placeholders_refuses_a_missing_value() -> None:
    secret = find(build_manifests(SPECS["scale"]()), "Secret", "redis-credentials")
    with pytest.raises(KeyError, match="REDIS_PASSWORD"):
        fill_placeholders(secret.body, {"DATABASE_PASSWORD": "p"})


def test_to_yaml_round_trips(manifests: list[Manifest]) -> None:
    text = to_yaml(manifests)
    documents = list(yaml.safe_load_all(text))
    assert documents == [m.body for m in manifests]
    # Construction order is kept: apiVersion, kind, metadata lead every document.
    assert all(list(doc)[:3] == ["apiVersion", "kind", "metadata"] for doc in documents)
    assert text.count("\n---\n") == len(manifests) - 1


def test_builder_is_deterministic() -> None:
    spec = SPECS["scale"]()
    assert to_yaml(build_manifests(spec)) == to_yaml(build_manifests(spec))
