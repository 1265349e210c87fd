"""A migrated registry on the test's own database; the whole system on local ports (the
``stack`` fixture, from :mod:`.stack`)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator

import pytest

from services.tracker.registry import Registry

from .stack import fixture_stack

__all__ = ["fixture_stack", "sha", "unique"]


@pytest.fixture(name="registry")
async def fixture_registry(database_url: str) -> AsyncIterator[Registry]:
    registry = await Registry.connect(database_url)
    try:
        yield registry
    finally:
        await registry.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
