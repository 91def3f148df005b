"""Reads the stack's `sikka:` config from the Pulumi engine and validates it."""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from scaling.issues import ConfigError
from scaling.model import PhaseSpec
from scaling.stackconfig import (
    NAMESPACE,
    parse,
    read_stack_file,
    source_phase_beside,
    stack_file_name,
)

# The stack file an offline evaluation reads (components.offline_preview.run_stack with a
# file); None: the project's Pulumi.<stack>.yaml, the file `pulumi` itself reads.
STACK_FILE: ContextVar[Path | None] = ContextVar("sikka_stack_file", default=None)


class StackConfigError(ConfigError, pulumi.RunError):
    """A ConfigError that Pulumi's language host reports as a plain message (every problem,
    with its key) instead of a Python traceback."""


def engine_config() -> tuple[dict[str, Any], set[str]]:
    """Every config value the engine handed this program, and which are secret."""
    values: dict[str, Any] = dict(runtime_config.get_config_env())
    values.update(runtime_config.CONFIG.get())
    secret_keys = set(runtime_config.get_config_secret_keys_env())
    secret_keys |= {key for key in values if runtime_config.is_config_secret(key)}
    return values, secret_keys


def spec_from_pulumi(project_dir: Path | None = None) -> PhaseSpec:
    """The validated PhaseSpec for the current stack; raises ConfigError listing every problem.

    `pulumi up` and `pulumi preview` pass the stack file's config to the program. When the
    engine passes none of ours (a bare mock run), the stack file is read directly, so the
    program evaluates the same way either way.
    """
    stack = pulumi.get_stack()
    values, secret_keys = engine_config()
    project = project_dir or Path(__file__).resolve().parent.parent
    path = STACK_FILE.get() or project / stack_file_name(stack)
    try:
        if not any(key.startswith(f"{NAMESPACE}:") for key in values) and path.exists():
            values, secret_keys = read_stack_file(path)
        # A sikka:promoteFrom stack not named after its phase: its stack file beside says.
        source_phase = source_phase_beside(path.parent, values)
        return parse(values, stack=stack, secret_keys=secret_keys, source_phase=source_phase)
    except ConfigError as error:
        raise StackConfigError(error.source, error.issues) from None
