"""The archiver service on the session broker: archive, dead-letter, survive bad storage."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from services.archiver.app import create_app
from services.common.kafka import Publisher
from services.common.settings import Settings, StorageSettings
from services.common.storage import open_storage

from ..helpers import committed_offsets, eventually, read_topic
from .support import (
    assert_content_addressed,
    at,
    bodies,
    make_event,
    temporary_files,
)

pytestmark = pytest.mark.kafka


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def publish(publisher: Publisher, settings: Settings, value: bytes, key: bytes) -> None:
    await publisher.publish(
        settings.kafka.topics.callbacks,
        key=key,
        value=value,
        headers=[("origin", b"test")],
        timeout=10,
    )


class TestArchiving:
    async def test_events_archived_once_and_offsets_committed(
        self, settings: Settings, publisher: Publisher
    ) -> None:
        """Bodies byte-exact under their hash, repeats and replays no-ops, offsets committed."""
        registry = CollectorRegistry()
        events = [make_event(f"svc-{i}", received_at=at(i)) for i in range(5)]
        for event in events:
            await publish(publisher, settings, event.encode(), event.task_id.encode())
        # A provider retry and a replay of the first callback: same body, same key.
        await publish(publisher, settings, events[0].encode(), b"svc-0")
        replayed = make_event("svc-0", received_at=at(0))
        await publish(publisher, settings, replayed.encode(), b"svc-0")
        server = TestServer(create_app(settings, registry=registry))
        await server.start_server()
        try:
            data_dir = settings.storage.data_dir
            await eventually(
                lambda: (
                    sample(
                        registry,
                        "archiver_records_total",
                        topic=settings.kafka.topics.callbacks,
                        result="ok",
                    )
                    == 7
                ),
                what="7 records handled",
            )
            found = bodies(data_dir)
            assert sorted(found.values()) == sorted(e.body for e in events)
            assert_content_addressed(found)
            assert sample(registry, "archiver_archived_total", outcome="new") == 5
            assert sample(registry, "archiver_archived_total", outcome="existing") == 2
            assert sample(registry, "archiver_written_bytes_total") > sum(
                len(e.body) for e in events
            )
            first_meta = json.loads(
                (data_dir / "raw" / "svc-0" / f"{events[0].body_sha256}.meta.json").read_bytes()
            )
            assert first_meta["received_at"] == at(0).isoformat()
            await eventually(
                lambda: _total(committed_offsets(settings, settings.archiver.group_id), 7),
                what="seven offsets committed",
            )
        finally:
            await server.close()

    async def test_undecodable_record_goes_to_the_dlq_and_the_archiver_moves_on(
        self, settings: Settings, publisher: Publisher
    ) -> None:
        """Garbage bytes and a body/hash mismatch are dead-lettered with the source headers."""
        registry = CollectorRegistry()
        await publish(publisher, settings, b"\x00\xffnot avro at all", b"garbage")
        bad = make_event("bad-hash")
        forged = replace(bad, body=b'{"forged": true}')
        await publish(publisher, settings, forged.encode(), b"bad-hash")
        good = make_event("after-garbage")
        await publish(publisher, settings, good.encode(), b"after-garbage")
        server = TestServer(create_app(settings, registry=registry))
        await server.start_server()
        try:
            dead = await read_topic(settings.kafka.bootstrap_servers, settings.kafka.topics.dlq, 2)
            assert len(dead) == 2
            by_key = {record.key: dict(record.headers) for record in dead}
            garbage = by_key[b"garbage"]
            assert garbage["dlq.reason"] == b"undecodable"
            assert garbage["dlq.source.topic"] == settings.kafka.topics.callbacks.encode()
            assert garbage["origin"] == b"test"
            assert {"dlq.source.partition", "dlq.source.offset"} <= set(garbage)
            assert by_key[b"bad-hash"]["dlq.reason"] == b"sha256_mismatch"
            assert [r.value for r in dead if r.key == b"garbage"] == [b"\x00\xffnot avro at all"]
            await eventually(lambda: bodies(settings.storage.data_dir), what="good archived")
            assert list(bodies(settings.storage.data_dir).values()) == [good.body]
            await eventually(
                lambda: _total(committed_offsets(settings, settings.archiver.group_id), 3),
                what="all three offsets committed",
            )
            assert sample(registry, "archiver_dead_letters_total", reason="undecodable") == 1
        finally:
            await server.close()


class TestStorageFailure:
    async def test_unwritable_storage_retries_without_committing(
        self, settings: Settings, publisher: Publisher, tmp_path: Path
    ) -> None:
        """Storage under a regular file (unwritable even for root): no commit, retries, a
        metric; once writable, the record is archived and committed exactly once."""
        registry = CollectorRegistry()
        data_dir = settings.storage.data_dir
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        data_dir.write_bytes(b"a file where the data folder should be")
        event = make_event("blocked")
        await publish(publisher, settings, event.encode(), b"blocked")
        server = TestServer(create_app(settings, registry=registry))
        await server.start_server()
        try:
            await eventually(
                lambda: (
                    sample(registry, "archiver_storage_errors_total", operation="put_sidecar") >= 3
                ),
                what="three failed writes",
            )
            assert await committed_offsets(settings, settings.archiver.group_id) == {}
            assert sample(registry, "archiver_archived_total", outcome="new") == 0

            data_dir.unlink()
            data_dir.mkdir()
            await eventually(lambda: bodies(data_dir), timeout=40, what="the record archived")
            assert list(bodies(data_dir).values()) == [event.body]
            await eventually(
                lambda: _total(committed_offsets(settings, settings.archiver.group_id), 1),
                what="the offset committed",
            )
            assert sample(registry, "archiver_archived_total", outcome="new") == 1
            assert (
                sample(
                    registry,
                    "archiver_records_total",
                    topic=settings.kafka.topics.callbacks,
                    result="ok",
                )
                == 1
            )
            assert sample(registry, "archiver_dead_letters_total", reason="processing_failed") == 0
            assert temporary_files(data_dir) == []
        finally:
            await server.close()
        dead = await read_topic(
            settings.kafka.bootstrap_servers, settings.kafka.topics.dlq, 1, timeout=2
        )
        assert dead == []

    async def test_stale_temporary_files_removed_at_start(
        self, settings: Settings, publisher: Publisher
    ) -> None:
        """Temporary files a killed archiver left in raw/ are gone once it has started."""
        stale = settings.storage.data_dir / "raw" / "t" / ".tmp-killed"
        stale.parent.mkdir(parents=True)
        stale.write_bytes(b"half a bo")
        server = TestServer(create_app(settings))
        await server.start_server()
        try:
            assert not stale.exists()
            assert stale.parent.is_dir()
        finally:
            await server.close()


@pytest.mark.s3
class TestOnS3:
    async def test_archives_into_the_bucket(
        self, settings: Settings, publisher: Publisher, s3_storage_settings: StorageSettings
    ) -> None:
        """The same service with STORAGE_BACKEND=s3 writes the same layout to the bucket."""
        settings = settings.with_overrides(storage=s3_storage_settings)
        event = make_event("on-s3")
        await publish(publisher, settings, event.encode(), b"on-s3")
        server = TestServer(create_app(settings))
        await server.start_server()
        try:
            async with open_storage(s3_storage_settings) as storage:
                key = f"raw/on-s3/{event.body_sha256}.json"
                await eventually(lambda: storage.exists(key), what="body in the bucket")
                assert await storage.get(key) == event.body
                meta = json.loads(await storage.get(key.replace(".json", ".meta.json")))
                assert meta["delivery_key"] == event.delivery_key
        finally:
            await server.close()


async def _total(offsets: Awaitable[dict[int, int]], expected: int) -> bool:
    return sum((await offsets).values()) == expected
