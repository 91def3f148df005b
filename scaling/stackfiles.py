"""Finding a stack's file from what a person typed: a stack name or a path.

`validate`, `render`, `preview` and `local up` all resolve their argument here, so they read
the same file."""

from __future__ import annotations

from pathlib import Path

from scaling.stackconfig import STACK_NAME, stack_file_name, stack_from_path

PROJECT_DIR = Path(__file__).resolve().parent.parent


class StackFileNotFound(LookupError):
    """The argument names no readable stack file (missing, a folder, or misnamed)."""


def _is_path(stack: str) -> bool:
    return Path(stack).suffix in (".yaml", ".yml") or "/" in stack


def _known_stacks() -> str:
    names = sorted(
        p.name[len("Pulumi.") : -len(".yaml")] for p in PROJECT_DIR.glob("Pulumi.*.yaml")
    )
    return f" (the project's stacks: {', '.join(names)})" if names else ""


def stack_path(stack: str) -> Path:
    """A path ending in .yaml is taken as given; a stack name is looked up in the current
    directory, then in the project's."""
    if _is_path(stack):
        given = Path(stack)
        stack_name(stack)  # the file's name must say which stack it is
        if not given.exists():
            raise StackFileNotFound(f"{stack}: no such file")
        if not given.is_file():
            raise StackFileNotFound(f"{stack}: not a file")
        return given
    stack_name(stack)
    for folder in (Path.cwd(), PROJECT_DIR):
        candidate = folder / stack_file_name(stack)
        if candidate.is_file():
            return candidate
    raise StackFileNotFound(
        f"no {stack_file_name(stack)} here or in {PROJECT_DIR}{_known_stacks()}"
    )


def stack_name(stack: str) -> str:
    """The stack's name, without reading its file."""
    if _is_path(stack):
        try:
            name = stack_from_path(Path(stack))
        except ValueError:
            raise StackFileNotFound(f"{stack}: a stack file is named Pulumi.<stack>.yaml") from None
    else:
        name = stack
    if not STACK_NAME.fullmatch(name):
        raise StackFileNotFound(
            f"{name!r} is not a stack name (letters, digits, '-', '_', '.'; at most 100) "
            "nor a stack file"
        )
    return name
