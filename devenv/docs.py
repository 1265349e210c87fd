"""Keeps the README's configuration table equal to the settings' own declarations.

python -m devenv.docs          # rewrite the table in README.md
python -m devenv.docs --check  # exit 1 when the README is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.common.settings import VARIABLES

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- ENVIRONMENT:BEGIN -->", "<!-- ENVIRONMENT:END -->"


def environment_table() -> str:
    rows = []
    for variable in VARIABLES:
        shown = f"`{variable.default_text}`" if variable.default_text else "(unset)"
        secret = " **secret**" if variable.secret else ""
        rows.append(f"| `{variable.name}` | {shown} | {variable.documented}{secret} |")
    return "\n".join(rows)


def render(text: str) -> str:
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{environment_table()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devenv.docs", description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = README.read_text()
    updated = render(text)
    if args.check:
        sys.exit(0 if updated == text else "README.md's configuration table is out of date")
    README.write_text(updated)


if __name__ == "__main__":
    main()
