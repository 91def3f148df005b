"""`sikka-scaling`: validate and render stacks (and, later, run them locally)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from scaling.issues import ConfigError
from scaling.model import PhaseSpec
from scaling.render.bundle import render_bundle
from scaling.stackconfig import load_stack_file, stack_file_name

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

PROJECT_DIR = Path(__file__).resolve().parent.parent

StackArg = Annotated[str, typer.Argument(help="Stack name (launch, growth, scale) or stack file")]


def stack_path(stack: str) -> Path:
    """A stack name is looked up in the current directory, then in the project's."""
    given = Path(stack)
    if given.suffix == ".yaml":
        return given
    for folder in (Path.cwd(), PROJECT_DIR):
        candidate = folder / stack_file_name(stack)
        if candidate.exists():
            return candidate
    raise typer.BadParameter(f"no {stack_file_name(stack)} here or in {PROJECT_DIR}")


def load(stack: str) -> PhaseSpec:
    path = stack_path(stack)
    try:
        return load_stack_file(path)
    except ConfigError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=1) from None


@app.command()
def validate(stack: StackArg) -> None:
    """Validate a stack file: every problem at once, each with its key; exit 1 if any."""
    spec = load(stack)
    typer.echo(
        f"{stack_path(stack).name}: ok ({spec.phase.value} phase on {spec.platform.value}: "
        f"postgres {spec.postgres.mode}, redis {spec.redis.mode}, "
        f"{spec.gateway.replicas} gateway(s))"
    )


@app.command()
def render(
    stack: StackArg,
    out: Annotated[Path, typer.Option("--out", help="Folder to write the configs into")],
) -> None:
    """Write the phase's deployment configs (no Pulumi needed)."""
    spec = load(stack)
    out.mkdir(parents=True, exist_ok=True)
    for name, content in render_bundle(spec).items():
        (out / name).write_text(content)
        typer.echo(f"wrote {out / name}")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code so tests can call ``main([...])``."""
    try:
        app(args=argv, standalone_mode=False)
    except typer.Exit as done:
        return done.exit_code
    except Exception as error:  # click's usage errors
        import click

        if isinstance(error, click.ClickException):
            error.show()
            return error.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
