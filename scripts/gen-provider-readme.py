#!/usr/bin/env python3
"""Writes integrations/airflow/README.md (the provider package's README, the
text its users read on PyPI) from the "## Airflow" section of the top-level
README: one source, followed by integrations/airflow/README-tail.md (what
only the package's readers need: its tests). Relative links are made absolute (they would not resolve
from the package). --check exits 1 when the file differs (the provider's
unit tests run it).

    scripts/gen-provider-readme.py [--check]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOP = REPO / "README.md"
OUT = REPO / "integrations" / "airflow" / "README.md"
TAIL = REPO / "integrations" / "airflow" / "README-tail.md"
BASE = "https://github.com/tether-hpc/tether/blob/main/"

HEADER = """<!-- airflow-provider-tether. Generated from the "## Airflow" section of
     tether's top-level README by scripts/gen-provider-readme.py: edit that
     section, then run the script (a test checks that they agree). -->

# airflow-provider-tether

"""


def section(text: str) -> str:
    m = re.search(r"^## Airflow\n.*?(?=^## )", text, re.S | re.M)
    if not m:
        raise SystemExit("README.md has no '## Airflow' section")
    return m.group(0).rstrip() + "\n"


def absolute_links(md: str) -> str:
    def fix(m: re.Match) -> str:
        target = m.group(2)
        if re.match(r"[a-z]+:|#|/", target):
            return m.group(0)
        return f"{m.group(1)}({BASE}{target})"

    return re.sub(r"(\[[^\]]*\])\(([^)\s]+)\)", fix, md)


def render() -> str:
    return HEADER + absolute_links(section(TOP.read_text())) + "\n" + TAIL.read_text()


def main() -> int:
    want = render()
    if "--check" in sys.argv[1:]:
        if OUT.read_text() != want:
            print(f"{OUT.relative_to(REPO)} differs from the README's Airflow section: run scripts/gen-provider-readme.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(want)
    return 0


if __name__ == "__main__":
    sys.exit(main())
