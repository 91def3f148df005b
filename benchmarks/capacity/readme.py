"""The README's "Capacity certificate" table from the committed certificates.

python -m benchmarks.capacity.readme README.md           # rewrite the table
python -m benchmarks.capacity.readme README.md --check   # exit 1 when it differs
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.capacity.certificate import load_certificates, with_readme_table


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    readme = Path(argv[0])
    text = readme.read_text()
    wanted = with_readme_table(text, load_certificates())
    if "--check" in argv[1:]:
        if wanted != text:
            print(f"{readme}: the capacity table differs from benchmarks/certificates/*.json")
            return 1
        return 0
    readme.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
