"""`pulumi preview` of a stack through the Automation API (``pulumi.automation``).

Used by `sikka-scaling transition` while it prepares: the Automation API drives the Pulumi
CLI, so without the CLI on PATH this says so plainly and nothing is run. The stack must
exist in the backend the CLI is logged into (``pulumi stack init``): a preview never
creates one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from scaling.stackfiles import PROJECT_DIR

TAIL = 400  # characters of the CLI's error output quoted in a failure


def project_dir(stack_file: Path) -> Path:
    """The Pulumi project a stack file belongs to: its folder when it holds Pulumi.yaml,
    else this project."""
    folder = stack_file.resolve().parent
    return folder if (folder / "Pulumi.yaml").is_file() else PROJECT_DIR


def preview(stack: str, stack_file: Path) -> tuple[bool, str]:
    """(previewed, one line): the change summary, or why no preview ran."""
    if shutil.which("pulumi") is None:
        return False, (
            f"the Pulumi CLI is not on PATH: no `pulumi preview` of {stack} "
            f"(`sikka-scaling preview {stack}` lists its resources under the mock engine)"
        )
    from pulumi import automation as auto

    work_dir = project_dir(stack_file)
    try:
        selected = auto.select_stack(stack_name=stack, work_dir=str(work_dir))
        # A stack file outside the project is handed to the CLI as the config to use.
        own = stack_file.resolve().parent == work_dir.resolve()
        result = selected.preview(
            color="never",
            suppress_progress=True,
            config_file=None if own else str(stack_file.resolve()),
        )
    except auto.StackNotFoundError:
        return False, (
            f"`pulumi preview` of {stack}: no stack {stack!r} in the Pulumi backend "
            f"(`pulumi stack init {stack}` in {work_dir})"
        )
    except auto.CommandError as error:
        said = " ".join(str(error).split())[-TAIL:]
        return False, f"`pulumi preview` of {stack} failed: {said}"
    counts = {str(getattr(op, "value", op)): n for op, n in result.change_summary.items() if n}
    changes = ", ".join(f"{n} {op}" for op, n in sorted(counts.items()))
    return True, changes or "no changes"
