"""The console entry points the README, the Dockerfile and Kubernetes run exist and resolve."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from subprocess import CompletedProcess

import pytest

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
SCRIPTS = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]


@pytest.mark.parametrize(("name", "target"), sorted(SCRIPTS.items()))
def test_entry_point_target_is_callable(name: str, target: str) -> None:
    """Each [project.scripts] target imports and is a function."""
    module, _, function = target.partition(":")
    assert callable(getattr(importlib.import_module(module), function)), name


#: A setting every program reads, set to a value none accepts: a server then stops right
#: after loading its settings, before it reaches for Kafka, with the message a user sees.
BAD_SETTING = {"LOG_LEVEL": "LOUD"}


def run_script(name: str, *args: str, env: dict[str, str] | None = None) -> CompletedProcess[str]:
    """Run the console script ``name`` as installed beside this interpreter."""
    script = Path(sys.executable).parent / name
    assert script.exists(), f"{script} is not installed: run `uv sync --frozen`"
    return subprocess.run(
        [script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_installed_script_runs(name: str) -> None:
    """The installed script runs its program: it reads the settings and names itself when
    one is wrong (exit 1, no traceback); the archiver and the tracker also list their
    commands for --help."""
    serve = ("run",) if name in ("suno-archiver", "suno-tracker") else ()
    result = run_script(name, *serve, env=BAD_SETTING)
    assert result.returncode == 1, result.stderr
    # One line naming the program, the variable and the bad value (the wording is settings').
    message = result.stderr.strip()
    assert message.startswith(f"{name}: configuration error: LOG_LEVEL "), message
    assert "'LOUD'" in message and "\n" not in message, message
    if name == "suno-tracker":
        result = run_script(name, "--help")
        assert result.returncode == 0, result.stderr
        for command in ("run", "submit", "tasks", "task"):
            assert f"    {command} " in result.stdout, command
    if name == "suno-archiver":
        result = run_script(name, "--help")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("usage: suno-archiver")
        for command in ("run", "list", "export", "replay", "dlq"):
            assert f"    {command} " in result.stdout, command
