"""Two bodies of one task processed out of order: the older never replaces the newer file.

"Newer" is :func:`services.processor.app.midi_version`: the ingest's ``received_at``, then
the body's SHA-256 (docs/processing.md).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from services.common.avro import NOTES_SCHEMA, load_codec
from services.common.events import CallbackEvent, sha256_hex
from services.common.kafka import Publisher
from services.common.settings import Settings, StorageSettings
from services.common.storage import open_storage
from services.processor.app import create_app, midi_key, midi_version, process_callback

from ..archiver.support import callback_body
from ..helpers import read_topic

pytestmark = pytest.mark.kafka

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def event(body: bytes, received_at: datetime) -> CallbackEvent:
    return CallbackEvent(
        task_id="task-twice", received_at=received_at, body=body, body_sha256=sha256_hex(body)
    )


async def newer_then_older(
    settings: Settings, publisher: Publisher, *, same_body: bool = False
) -> tuple[CallbackEvent, bytes, list[dict[str, Any]]]:
    """Process the newer body, then the older one (or the same body received earlier);
    return the newer, the file kept, and the two notes events."""
    newer = event(callback_body("task-twice", pitch=70), T0 + timedelta(seconds=5))
    older = event(callback_body("task-twice", pitch=70 if same_body else 40), T0)
    for each in (newer, older):
        await publisher.publish(
            settings.kafka.topics.callbacks, key=b"task-twice", value=each.encode(), timeout=10
        )
    server = TestServer(create_app(settings, registry=CollectorRegistry()), host="127.0.0.1")
    await server.start_server()
    try:
        records = await read_topic(settings.kafka.bootstrap_servers, settings.kafka.topics.notes, 2)
    finally:
        await server.close()
    async with open_storage(settings.storage) as storage:
        kept = await storage.get(midi_key("task-twice"))
    return newer, kept, [load_codec(NOTES_SCHEMA).decode(r.value) for r in records]


class TestNewerWins:
    def test_newer_is_the_later_received_at_then_the_greater_sha256(self) -> None:
        """received_at decides; at the same instant the body hash does, the same anywhere."""
        a, b = b'{"code": 200, "a": 1}', b'{"code": 200, "b": 2}'
        assert midi_version(event(a, T0)) < midi_version(event(b, T0 + timedelta(microseconds=1)))
        later_tz = (T0 + timedelta(hours=1)).astimezone(timezone(timedelta(hours=2)))
        assert midi_version(event(a, T0)) < midi_version(event(a, later_tz))
        low, high = sorted((a, b), key=sha256_hex)
        assert midi_version(event(low, T0)) < midi_version(event(high, T0))

    async def test_older_body_keeps_the_newer_file_local(
        self, settings: Settings, publisher: Publisher
    ) -> None:
        """On local storage: the file is the newer body's; the older one's event has no
        file to point at."""
        newer, kept, events = await newer_then_older(settings, publisher)
        assert kept == process_callback(newer.body).midi
        assert events[0]["delivery_key"] == newer.delivery_key
        assert events[0]["midi"] is not None and events[1]["midi"] is None

    async def test_the_same_body_received_twice_out_of_order(
        self, settings: Settings, publisher: Publisher
    ) -> None:
        """A repeat of the body the dedupe missed, processed after its later twin: the file
        is the same rendering, so both events point at it and agree (one rendering key,
        one content)."""
        newer, kept, events = await newer_then_older(settings, publisher, same_body=True)
        assert kept == process_callback(newer.body).midi
        assert events[0]["rendering_key"] == events[1]["rendering_key"]
        assert events[1]["midi"] is not None and events[1]["midi"] == events[0]["midi"]

    @pytest.mark.s3
    async def test_older_body_keeps_the_newer_file_s3(
        self, settings: Settings, publisher: Publisher, s3_storage_settings: StorageSettings
    ) -> None:
        """The same on S3 (moto's server): the object is the newer body's file."""
        settings = settings.with_overrides(storage=s3_storage_settings)
        newer, kept, events = await newer_then_older(settings, publisher)
        assert kept == process_callback(newer.body).midi
        assert events[1]["midi"] is None
