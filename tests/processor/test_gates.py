"""What never becomes a MIDI file: unverified events (when verified ones are required) and
callbacks of other operations sent to the same URL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from services.common.kafka import Publisher
from services.common.settings import Settings
from services.processor.app import Skipped, create_app, process_callback

from ..helpers import eventually, read_topic
from ..kinds import OTHER_KINDS, body
from .conftest import callback_event
from .test_service import KEY, all_committed, metric, midi_path, notes_events

pytestmark = pytest.mark.kafka


@pytest.fixture(name="strict_processor")
async def fixture_strict_processor(
    settings: Settings, registry: CollectorRegistry
) -> AsyncIterator[Settings]:
    """The processor as deployed: it requires verified events (the setting's default)."""
    strict = settings.with_overrides(processor={"require_verified": True})
    server = TestServer(create_app(strict, registry=registry), host="127.0.0.1")
    await server.start_server()
    try:
        yield strict
    finally:
        await server.close()


class TestUnverified:
    async def test_is_dead_lettered_and_never_touches_the_file(
        self,
        strict_processor: Settings,
        publisher: Publisher,
        registry: CollectorRegistry,
        reference_examples: dict[str, bytes],
    ) -> None:
        """An UNVERIFIED event for a task that has a file: dead-lettered with reason
        unverified, the file unchanged, no notes event; the verified one after it flows."""
        settings = strict_processor
        topics = settings.kafka.topics
        existing = midi_path(settings, "victim")
        existing.parent.mkdir(parents=True)
        existing.write_bytes(b"MThd the task's real file")
        midi = reference_examples["success-task-id-in-data"]
        forged = callback_event(midi, "victim", signature="UNVERIFIED").encode()
        signed = callback_event(midi, "signed", signature="VERIFIED").encode()
        for value in (forged, signed):
            await publisher.publish(topics.callbacks, key=KEY, value=value)
        await eventually(lambda: all_committed(settings, 2), what="both committed")

        (dead,) = await read_topic(settings.kafka.bootstrap_servers, topics.dlq, 1)
        headers = {k: v.decode() for k, v in dead.headers}
        assert (dead.value, headers["dlq.reason"]) == (forged, "unverified")
        assert "PROCESSOR_REQUIRE_VERIFIED" in headers["dlq.error"]
        assert existing.read_bytes() == b"MThd the task's real file"
        assert midi_path(settings, "signed").exists()
        assert [key for key, _ in await notes_events(settings, 1)] == [b"signed"]
        assert metric(registry, "processor_dead_letters_total", reason="unverified") == 1


class TestOtherKinds:
    @pytest.mark.parametrize("name", sorted(OTHER_KINDS))
    def test_process_callback_skips_them(self, name: str) -> None:
        """The pure step gives a Skipped of the callback's kind, not a result to render."""
        kind, make = OTHER_KINDS[name]
        assert process_callback(body(make("other-1"))) == Skipped(kind)

    async def test_skipped_counted_and_committed(
        self,
        strict_processor: Settings,
        publisher: Publisher,
        registry: CollectorRegistry,
    ) -> None:
        """Verified callbacks of every other kind: no file, no notes event, no dead letter;
        each counted by kind and committed."""
        settings = strict_processor
        names = sorted(OTHER_KINDS)
        for name in names:
            kind, make = OTHER_KINDS[name]
            value = callback_event(body(make(name)), name, signature="VERIFIED").encode()
            await publisher.publish(settings.kafka.topics.callbacks, key=KEY, value=value)
        await eventually(lambda: all_committed(settings, len(names)), what="all committed")
        assert not (settings.storage.data_dir / "midi").exists()
        assert await notes_events(settings, 1, timeout=2) == []
        for kind in ("music_generation", "separation", "unknown"):
            expected = sum(1 for k, _ in OTHER_KINDS.values() if k == kind)
            assert metric(registry, "processor_callbacks_skipped_total", kind=kind) == expected
        assert (
            metric(
                registry,
                "processor_records_total",
                topic=settings.kafka.topics.callbacks,
                result="dead_lettered",
            )
            == 0
        )
        assert metric(registry, "processor_tasks_total", state="complete") == 0
