"""Fixtures for the archiver's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.common.kafka import Publisher, ensure_topics
from services.common.settings import Settings


@pytest.fixture(name="publisher")
async def fixture_publisher(settings: Settings) -> AsyncIterator[Publisher]:
    """A started publisher on the session broker, with this test's three topics created."""
    topics = settings.kafka.topics
    await ensure_topics(settings.kafka, "test", [topics.callbacks, topics.notes, topics.dlq])
    publisher = Publisher(settings.kafka, "test")
    await publisher.start()
    try:
        yield publisher
    finally:
        await publisher.stop()
