"""Fixtures for the processor's broker tests: a running processor app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from services.common.events import CallbackEvent, sha256_hex
from services.common.kafka import Publisher
from services.common.settings import Settings
from services.processor.app import create_app


def callback_event(body: bytes, task_id: str = "task-1", **fields: object) -> CallbackEvent:
    return CallbackEvent(
        task_id=task_id,
        received_at=datetime.now(UTC),
        body=body,
        body_sha256=sha256_hex(body),
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture(name="registry")
def fixture_registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture(name="processor")
async def fixture_processor(
    settings: Settings, registry: CollectorRegistry, publisher: Publisher
) -> AsyncIterator[TestServer]:
    """The processor app, started (consumer running) and stopped around one test."""
    server = TestServer(create_app(settings, registry=registry), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()
