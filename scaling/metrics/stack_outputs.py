"""A deployed stack's outputs, read through the Pulumi CLI (`pulumi stack output`).

The outputs carry the connection URIs, passwords included (``--show-secrets``): they are
parsed into :class:`~scaling.metrics.endpoints.Endpoints` and never printed. An error says
what the CLI answered on stderr, never what it printed on stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from scaling.metrics.endpoints import EndpointsError

PULUMI = "pulumi"
TIMEOUT = 120.0  # seconds: a remote backend may be slow to answer


def pulumi_cli() -> str | None:
    """The Pulumi CLI on PATH, or None."""
    return shutil.which(PULUMI)


def read_outputs(stack: str, project_dir: Path, cli: str | None = None) -> dict[str, Any]:
    """`pulumi stack output --json --show-secrets --stack STACK` run in ``project_dir``."""
    found = cli or pulumi_cli()
    if found is None:
        raise EndpointsError("the Pulumi CLI is not on PATH: no stack outputs can be read")
    command = [found, "stack", "output", "--json", "--show-secrets", "--non-interactive"]
    try:
        done = subprocess.run(
            [*command, "--stack", stack],
            cwd=project_dir,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env={**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise EndpointsError(
            f"`pulumi stack output --stack {stack}` did not answer in {TIMEOUT:.0f} s"
        ) from None
    except OSError as error:
        raise EndpointsError(f"cannot run {found}: {error.strerror or error}") from None
    if done.returncode != 0:
        said = " ".join(done.stderr.split())[:400] or f"exit code {done.returncode}"
        raise EndpointsError(f"`pulumi stack output --stack {stack}` failed: {said}")
    try:
        outputs = json.loads(done.stdout)
    except json.JSONDecodeError as error:
        raise EndpointsError(
            f"`pulumi stack output --stack {stack}` did not print JSON ({error.msg})"
        ) from None
    if not isinstance(outputs, dict) or "postgres" not in outputs:
        raise EndpointsError(
            f"stack {stack!r} has no postgres output: not deployed by this project, or "
            "not yet (`pulumi up`)"
        )
    return outputs
