"""The README's "Capacity certificate" table, and each certificate's Markdown, from the
committed certificates' JSON.

    python -m benchmarks.capacity.readme README.md           # rewrite both
    python -m benchmarks.capacity.readme README.md --check   # exit 1 when either differs
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.capacity.certificate import (
    CERTIFICATES,
    load_certificates,
    render_markdown,
    with_readme_table,
)


def wanted_files(readme: Path) -> dict[Path, str]:
    files = {readme: with_readme_table(readme.read_text(), load_certificates())}
    for path in sorted(CERTIFICATES.glob("*.json")):
        files[path.with_suffix(".md")] = render_markdown(json.loads(path.read_text()))
    return files


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    files = wanted_files(Path(argv[0]))
    stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
    if "--check" in argv[1:]:
        for path in stale:
            print(f"{path}: differs from benchmarks/certificates/*.json")
        return 1 if stale else 0
    for path in stale:
        path.write_text(files[path])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
