"""The README documents every setting the services read."""

from __future__ import annotations

from devenv.docs import README, render
from services.common.settings import ENVIRONMENT


def test_readme_configuration_table_is_current() -> None:
    """README.md's table equals the one generated from ENVIRONMENT (python -m devenv.docs)."""
    text = README.read_text()
    assert render(text) == text, "run `python -m devenv.docs` to update README.md"
    for name, _, _ in ENVIRONMENT:
        assert f"| `{name}` |" in text
