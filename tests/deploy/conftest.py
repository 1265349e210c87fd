"""Fixtures for the deployment checks: a pinned kustomize and each overlay, built once."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

from .manifests import ENSURE_KUSTOMIZE, OVERLAYS, OVERLAYS_DIR, REPO, Build, kustomize_build


@pytest.fixture(name="kustomize", scope="session")
def fixture_kustomize() -> Path:
    """The pinned kustomize, installed by scripts/ensure-kustomize.sh if it is missing."""
    result = subprocess.run(
        ["bash", str(ENSURE_KUSTOMIZE)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=280,
    )
    path = Path(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else None
    if result.returncode != 0 or path is None or not path.is_file():
        pytest.fail(
            f"scripts/ensure-kustomize.sh could not provide kustomize "
            f"(exit {result.returncode}):\n{result.stdout}\n{result.stderr}",
            pytrace=False,
        )
    return path


@pytest.fixture(name="build_overlay", scope="session")
def fixture_build_overlay(kustomize: Path) -> Callable[[str], Build]:
    """Build an overlay by name (once per session)."""

    @cache
    def build(overlay: str) -> Build:
        return Build(overlay, kustomize_build(kustomize, OVERLAYS_DIR / overlay))

    return build


@pytest.fixture(name="build", params=OVERLAYS)
def fixture_build(request: pytest.FixtureRequest, build_overlay: Callable[[str], Build]) -> Build:
    """Each overlay's objects in turn: a test using it runs once per overlay."""
    return build_overlay(request.param)
