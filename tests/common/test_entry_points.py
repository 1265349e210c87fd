"""The console entry points the README, the Dockerfile and Kubernetes run exist and resolve."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
SCRIPTS = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]


@pytest.mark.parametrize(("name", "target"), sorted(SCRIPTS.items()))
def test_entry_point_target_is_callable(name: str, target: str) -> None:
    """Each [project.scripts] target imports and is a function."""
    module, _, function = target.partition(":")
    assert callable(getattr(importlib.import_module(module), function)), name


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_installed_script_runs(name: str) -> None:
    """The installed script starts and imports the project (``--help`` needs no server)."""
    script = Path(sys.executable).parent / name
    assert script.exists(), f"{script} is not installed: run `uv sync --frozen`"
    if name == "suno-archiver":
        result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "replay" in result.stdout and "export" in result.stdout
    else:
        # The servers take no arguments; import their main through the installed script's
        # interpreter the way the script does.
        code = f"from {SCRIPTS[name].replace(':', ' import ')}; print('ok')"
        result = subprocess.run(
            [sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60
        )
        assert result.stdout.strip() == "ok", result.stderr
