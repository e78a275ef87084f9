"""Write the README's generated blocks: the steps table and the saga diagrams.

    python scripts/readme_diagrams.py          # rewrite them in README.md
    python scripts/readme_diagrams.py --check  # exit 1 if README.md differs

``tests/test_diagrams.py`` runs the check.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from checkout.diagrams import render, steps_table  # noqa: E402
from checkout.flow import DEFINITIONS  # noqa: E402

README = ROOT / "README.md"
BLOCKS = {
    "steps": lambda: steps_table(DEFINITIONS.current),
    "diagrams": lambda: render(DEFINITIONS.current),
}


def generated(text: str) -> str:
    """``text`` with every generated block replaced by what the definition gives now."""
    for name, make in BLOCKS.items():
        pattern = re.compile(rf"(<!-- {name}:[^\n]*-->\n).*?(<!-- /{name} -->)", re.DOTALL)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- {name}: ... --> block")
        text = pattern.sub(lambda m, make=make: m.group(1) + make() + m.group(2), text)
    return text


def main(argv: list[str]) -> int:
    current = README.read_text()
    wanted = generated(current)
    if "--check" in argv:
        if current != wanted:
            print("README.md's generated blocks differ: run python scripts/readme_diagrams.py")
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
