"""Finding a stack's file from what a person typed: a stack name or a path."""

from __future__ import annotations

from pathlib import Path

from scaling.stackconfig import stack_file_name, stack_from_path

PROJECT_DIR = Path(__file__).resolve().parent.parent


class StackFileNotFound(LookupError):
    pass


def stack_path(stack: str) -> Path:
    """A path ending in .yaml is taken as given; a stack name is looked up in the current
    directory, then in the project's."""
    given = Path(stack)
    if given.suffix == ".yaml":
        return given
    for folder in (Path.cwd(), PROJECT_DIR):
        candidate = folder / stack_file_name(stack)
        if candidate.exists():
            return candidate
    raise StackFileNotFound(f"no {stack_file_name(stack)} here or in {PROJECT_DIR}")


def stack_name(stack: str) -> str:
    """The stack's name, without reading its file."""
    given = Path(stack)
    return stack_from_path(given) if given.suffix == ".yaml" else stack
