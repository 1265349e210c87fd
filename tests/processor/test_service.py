"""The processor on a real broker: file, event, commit; idempotence; dead letters; metrics."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from services.common.avro import NOTES_SCHEMA, load_codec
from services.common.events import sha256_hex
from services.common.kafka import Publisher
from services.common.keys import task_key
from services.common.settings import Settings, StorageSettings
from services.processor import render
from services.processor.app import Processed, create_app, process_callback, quantized_key
from services.processor.notes_event import tempo_record

from ..fixtures.s3 import S3Server
from ..helpers import committed_offsets, eventually, read_topic
from .conftest import callback_event
from .readers import read_with_mido

pytestmark = pytest.mark.kafka

KEY = b"same-partition"  # every record of a test on one partition: offsets are counts


def midi_path(settings: Settings, task_id: str) -> Path:
    return settings.storage.data_dir / "midi" / f"{task_key(task_id)}.mid"


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def publish_callback(
    publisher: Publisher, settings: Settings, body: bytes, task_id: str
) -> None:
    value = callback_event(body, task_id).encode()
    await publisher.publish(settings.kafka.topics.callbacks, key=KEY, value=value)


async def notes_events(
    settings: Settings, count: int, *, timeout: float = 30.0
) -> list[tuple[bytes | None, dict[str, Any]]]:
    """The first ``count`` notes events (fewer after ``timeout``): record key, decoded value."""
    records = await read_topic(
        settings.kafka.bootstrap_servers, settings.kafka.topics.notes, count, timeout=timeout
    )
    return [(r.key, load_codec(NOTES_SCHEMA).decode(r.value)) for r in records]


async def process(
    publisher: Publisher, settings: Settings, body: bytes, task_id: str
) -> tuple[bytes | None, dict[str, Any]]:
    """Publish one callback and read back the one notes event it gives: key, decoded value."""
    await publish_callback(publisher, settings, body, task_id)
    (event,) = await notes_events(settings, 1)
    return event


async def all_committed(settings: Settings, count: int) -> bool:
    offsets = await committed_offsets(
        settings, settings.processor.group_id, settings.kafka.topics.callbacks
    )
    return sum(offsets.values()) == count


class TestCompleteCallback:
    async def test_file_event_commit_and_metrics(
        self,
        settings: Settings,
        publisher: Publisher,
        processor: TestServer,
        registry: CollectorRegistry,
        reference_examples: dict[str, bytes],
    ) -> None:
        """A success callback gives the MIDI file, then the notes event, then the commit."""
        body = reference_examples["success-task-id-top-level"]
        task_id = "5c79****be8e"
        key, event = await process(publisher, settings, body, task_id)
        assert key == task_id.encode()
        path = midi_path(settings, task_id)
        data = path.read_bytes()  # written before the event was published
        assert path.name == "5c79%2A%2A%2A%2Abe8e.mid"
        assert data == process_callback(body).midi
        assert event["midi"]["uri"] == path.resolve().as_uri()
        assert event["midi"]["size_bytes"] == len(data)
        assert event["state"] == "complete" and event["note_count"] == 6
        assert len(read_with_mido(data).notes) == 6
        await eventually(lambda: all_committed(settings, 1), what="the commit")
        assert metric(registry, "processor_notes_total") == 6
        assert metric(registry, "processor_tasks_total", state="complete") == 1
        assert metric(registry, "processor_midi_written_bytes_total") == len(data)
        assert metric(registry, "processor_end_to_end_latency_seconds_count") == 1
        assert (
            metric(
                registry,
                "processor_records_total",
                topic=settings.kafka.topics.callbacks,
                result="ok",
            )
            == 1
        )

    async def test_drops_are_counted(
        self,
        settings: Settings,
        publisher: Publisher,
        processor: TestServer,
        registry: CollectorRegistry,
    ) -> None:
        """Dropped notes appear in the event's map and in the metric, by reason."""
        notes = [
            {"pitch": 60, "start": 0, "end": 1},
            {"pitch": 60, "start": "x", "end": 1},
            {"pitch": 999, "start": 0, "end": 1},
        ]
        body = json.dumps(
            {
                "task_id": "d",
                "code": 200,
                "data": {"instruments": [{"name": "Oboe", "notes": notes}]},
            }
        ).encode()
        _, event = await process(publisher, settings, body, "d")
        assert event["dropped_notes"] == {"invalid_pitch": 1, "invalid_start": 1}
        await eventually(lambda: all_committed(settings, 1), what="the commit")
        assert metric(registry, "processor_notes_dropped_total", reason="invalid_pitch") == 1
        assert metric(registry, "processor_notes_dropped_total", reason="invalid_start") == 1
        assert metric(registry, "processor_notes_total") == 1


class TestFailedCallback:
    async def test_no_file_and_a_failed_event(
        self,
        settings: Settings,
        publisher: Publisher,
        processor: TestServer,
        registry: CollectorRegistry,
        reference_examples: dict[str, bytes],
    ) -> None:
        """code 500: no MIDI file, a notes event with state failed, code and msg."""
        body = reference_examples["failure-task-id-in-data"]
        _, event = await process(publisher, settings, body, "5c79****be8e")
        assert (event["state"], event["code"], event["msg"]) == (
            "failed",
            500,
            "MIDI generation failed",
        )
        assert event["midi"] is None and event["instruments"] == []
        await eventually(lambda: all_committed(settings, 1), what="the commit")
        assert not (settings.storage.data_dir / "midi").exists()
        assert metric(registry, "processor_tasks_total", state="failed") == 1
        assert metric(registry, "processor_midi_written_bytes_total") == 0


class TestIdempotence:
    async def test_same_record_twice_changes_nothing(
        self,
        settings: Settings,
        publisher: Publisher,
        processor: TestServer,
        reference_examples: dict[str, bytes],
    ) -> None:
        """A redelivered callback rewrites the same bytes and republishes the same event."""
        value = callback_event(reference_examples["success-task-id-in-data"], "dup").encode()
        await publisher.publish(settings.kafka.topics.callbacks, key=KEY, value=value)
        await eventually(lambda: all_committed(settings, 1), what="the first commit")
        path = midi_path(settings, "dup")
        first = path.read_bytes()
        first_mtime = path.stat().st_mtime_ns
        await publisher.publish(settings.kafka.topics.callbacks, key=KEY, value=value)
        await eventually(lambda: all_committed(settings, 2), what="the second commit")
        assert path.stat().st_mtime_ns >= first_mtime
        assert path.read_bytes() == first
        assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files
        events = [event for _, event in await notes_events(settings, 2)]
        for event in events:
            del event["processed_at"]
        assert events[0] == events[1]
        assert len(events[0]["rendering_key"]) == 64  # the same rendering: dedupe on it

    async def test_a_replay_repeats_the_key_unless_the_renderer_changed(
        self,
        settings: Settings,
        publisher: Publisher,
        processor: TestServer,
        reference_examples: dict[str, bytes],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Downstream deduplicating on ``rendering_key`` drops a replay that renders the same
        and keeps one a newer renderer made (``delivery_key`` is the same in all three)."""
        original = callback_event(reference_examples["success-task-id-in-data"], "again")
        replayed = replace(original, replay=True).encode()
        for value in (original.encode(), replayed):
            await publisher.publish(settings.kafka.topics.callbacks, key=KEY, value=value)
        await eventually(lambda: all_committed(settings, 2), what="the replay's commit")
        monkeypatch.setattr(render, "RENDERER_VERSION", render.RENDERER_VERSION + 1)
        await publisher.publish(settings.kafka.topics.callbacks, key=KEY, value=replayed)
        events = [event for _, event in await notes_events(settings, 3)]
        assert [event["replay"] for event in events] == [False, True, True]
        assert len({event["delivery_key"] for event in events}) == 1
        keys = [event["rendering_key"] for event in events]
        assert keys[0] == keys[1] != keys[2]


class TestDeadLetters:
    async def test_bad_records_go_to_the_dlq_and_the_consumer_moves_on(
        self,
        settings: Settings,
        publisher: Publisher,
        processor: TestServer,
        registry: CollectorRegistry,
        reference_examples: dict[str, bytes],
    ) -> None:
        """Undecodable and non-JSON records are dead-lettered with why and where; next one flows."""
        topics = settings.kafka.topics
        sent = [
            b"\x00not an avro event",
            callback_event(b"{not json", "bad-json").encode(),
            callback_event(b"[1, 2]", "not-object").encode(),
            callback_event(reference_examples["success-task-id-in-data"], "good").encode(),
        ]
        for value in sent:
            await publisher.publish(topics.callbacks, key=KEY, value=value)
        await eventually(lambda: all_committed(settings, 4), what="all four committed")
        assert midi_path(settings, "good").exists()
        dead = await read_topic(settings.kafka.bootstrap_servers, topics.dlq, 3)
        assert [r.value for r in dead] == sent[:3]
        assert all(r.key == KEY for r in dead)
        headers = [{k: v.decode() for k, v in r.headers} for r in dead]
        assert [h["dlq.reason"] for h in headers] == [
            "undecodable",
            "invalid_callback",
            "invalid_callback",
        ]
        assert "not JSON" in headers[1]["dlq.error"] and "list" in headers[2]["dlq.error"]
        partition = {h["dlq.source.partition"] for h in headers}
        assert len(partition) == 1
        assert [int(h["dlq.source.offset"]) for h in headers] == [0, 1, 2]
        assert {h["dlq.source.topic"] for h in headers} == {topics.callbacks}
        assert {h["dlq.consumer.group"] for h in headers} == {settings.processor.group_id}
        assert metric(registry, "processor_dead_letters_total", reason="undecodable") == 1
        assert metric(registry, "processor_dead_letters_total", reason="invalid_callback") == 2
        assert [key for key, _ in await notes_events(settings, 1)] == [b"good"]

    async def test_task_ids_no_file_can_be_named_after_are_dead_lettered(
        self,
        settings: Settings,
        publisher: Publisher,
        processor: TestServer,
        registry: CollectorRegistry,
        reference_examples: dict[str, bytes],
    ) -> None:
        """An over-long or empty task id from another producer cannot stall the partition."""
        body = reference_examples["success-task-id-in-data"]
        topics = settings.kafka.topics
        sent = [
            callback_event(body, "a" * 300).encode(),
            callback_event(body, "").encode(),
            callback_event(body, "after").encode(),
        ]
        for value in sent:
            await publisher.publish(topics.callbacks, key=KEY, value=value)
        await eventually(lambda: all_committed(settings, 3), what="all three committed")
        dead = await read_topic(settings.kafka.bootstrap_servers, topics.dlq, 2)
        assert [dict(r.headers)["dlq.reason"] for r in dead] == [b"invalid_task_id"] * 2
        assert midi_path(settings, "after").exists()
        assert not (settings.storage.data_dir / "midi" / ".mid").exists()
        assert metric(registry, "processor_dead_letters_total", reason="invalid_task_id") == 2


class TestEventLoop:
    async def test_cpu_work_runs_off_the_event_loop_thread(
        self,
        settings: Settings,
        publisher: Publisher,
        processor: TestServer,
        monkeypatch: pytest.MonkeyPatch,
        reference_examples: dict[str, bytes],
    ) -> None:
        """Normalizing and rendering run on a worker thread, never on the loop's thread.

        How long the loop may stall is measured by bench/processor/loop_stall.py, not here.
        """
        import threading

        from services.processor import app as processor_app

        loop_thread = threading.get_ident()
        threads: list[int] = []
        real = processor_app.process_callback

        def spy(body: bytes, **options: Any) -> processor_app.Processed | processor_app.Skipped:
            threads.append(threading.get_ident())
            return real(body, **options)

        monkeypatch.setattr(processor_app, "process_callback", spy)
        body = reference_examples["success-task-id-top-level"]
        await publish_callback(publisher, settings, body, "threaded")
        await eventually(lambda: all_committed(settings, 1), what="the record")
        assert midi_path(settings, "threaded").exists()
        assert threads and all(ident != loop_thread for ident in threads)


@pytest.mark.s3
class TestS3Storage:
    async def test_midi_written_to_s3(
        self,
        settings: Settings,
        publisher: Publisher,
        registry: CollectorRegistry,
        s3_server: S3Server,
        s3_storage_settings: StorageSettings,
        reference_examples: dict[str, bytes],
    ) -> None:
        """With STORAGE_BACKEND=s3 the file lands in the bucket and the event points at it."""
        settings = settings.with_overrides(storage=s3_storage_settings)
        body = reference_examples["success-task-id-in-data"]
        server = TestServer(create_app(settings, registry=registry), host="127.0.0.1")
        await server.start_server()
        try:
            _, event = await process(publisher, settings, body, "s3-task/1")
            await eventually(lambda: all_committed(settings, 1), what="the commit")
        finally:
            await server.close()
        key = f"pipeline/midi/{task_key('s3-task/1')}.mid"
        assert event["midi"]["uri"] == f"s3://{s3_storage_settings.s3_bucket}/{key}"
        stored = s3_server.client().get_object(Bucket=s3_storage_settings.s3_bucket, Key=key)
        data = stored["Body"].read()
        assert data == process_callback(body).midi
        assert event["midi"]["size_bytes"] == len(data)
        assert len(read_with_mido(data).notes) == 6


class TestStorageOutage:
    async def test_retried_without_commit_until_storage_is_back(
        self,
        settings: Settings,
        publisher: Publisher,
        processor: TestServer,
        registry: CollectorRegistry,
        reference_examples: dict[str, bytes],
    ) -> None:
        """A failing write is retried, nothing is published or committed until it succeeds."""
        blocker = settings.storage.data_dir / "midi"
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_bytes(b"a file where the midi folder should be")
        body = reference_examples["success-task-id-in-data"]
        await publish_callback(publisher, settings, body, "later")
        topic = settings.kafka.topics.callbacks
        await eventually(
            lambda: metric(registry, "processor_records_total", topic=topic, result="retried") >= 2,
            what="two retries",
        )
        assert not await all_committed(settings, 1)
        assert await notes_events(settings, 1, timeout=1) == []
        blocker.unlink()
        await eventually(lambda: all_committed(settings, 1), what="the commit after recovery")
        assert midi_path(settings, "later").exists()
        assert metric(registry, "processor_tasks_total", state="complete") == 1
        assert metric(registry, "processor_dead_letters_total", reason="processing_failed") == 0


class TestLogContext:
    async def test_task_id_is_bound_to_its_record_only(
        self,
        settings: Settings,
        publisher: Publisher,
        processor: TestServer,
        reference_examples: dict[str, bytes],
    ) -> None:
        """Log lines carry the record's task id; a following undecodable record has none."""
        topics = settings.kafka.topics
        with structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]
        ) as logs:
            body = reference_examples["success-task-id-in-data"]
            await publish_callback(publisher, settings, body, "first")
            await publisher.publish(topics.callbacks, key=KEY, value=b"garbage")
            await eventually(lambda: all_committed(settings, 2), what="both records")
        (processed,) = [e for e in logs if e["event"] == "callback_processed"]
        assert processed["task_id"] == "first" and processed["notes"] == 6
        (dead,) = [e for e in logs if e["event"] == "record_dead_lettered"]
        assert "task_id" not in dead and dead["reason"] == "undecodable"


def steady_song(notes: int = 48) -> bytes:
    """A callback whose notes fall on a 100 BPM grid (a beat every 0.6 s from 0.3 s)."""
    played = [
        {"pitch": 60 + (k % 5), "start": 0.3 + 0.6 * k, "end": 0.5 + 0.6 * k, "velocity": 0.8}
        for k in range(notes)
    ]
    instruments = [{"name": "Acoustic Grand Piano", "notes": played}]
    return json.dumps(
        {"code": 200, "msg": "success", "data": {"taskId": "x", "instruments": instruments}}
    ).encode()


class TestTempoAndQuantized:
    async def test_event_carries_the_files_tempo_map(
        self, settings: Settings, publisher: Publisher, processor: TestServer
    ) -> None:
        """The event's tempo is the file's, and no quantized variant unless asked for."""
        body = steady_song()
        _, event = await process(publisher, settings, body, "tempo")
        processed = process_callback(body)
        assert isinstance(processed, Processed) and processed.tempo is not None
        assert event["tempo"] == tempo_record(processed.tempo)
        assert event["midi"]["tempo_bpm"] == processed.tempo.bpm
        assert read_with_mido(midi_path(settings, "tempo").read_bytes()).tempos == [
            change.microseconds_per_quarter for change in processed.tempo.changes
        ]
        assert event["quantized"] is None
        assert not (settings.storage.data_dir / quantized_key("tempo")).exists()

    async def test_quantized_variant_beside_the_exact_file(
        self, settings: Settings, publisher: Publisher, registry: CollectorRegistry
    ) -> None:
        """PROCESSOR_QUANTIZED_FILE: a second file on the grid; the exact one unchanged."""
        settings = settings.with_overrides(
            processor=replace(settings.processor, quantized_file=True, quantize_grid="1/8")
        )
        body = steady_song()
        server = TestServer(create_app(settings, registry=registry), host="127.0.0.1")
        await server.start_server()
        try:
            _, event = await process(publisher, settings, body, "quantized")
        finally:
            await server.close()
        snapped = process_callback(body, grid="1/8")
        assert isinstance(snapped, Processed) and snapped.quantized is not None
        path = settings.storage.data_dir / quantized_key("quantized")
        assert path.read_bytes() == snapped.quantized
        assert midi_path(settings, "quantized").read_bytes() == process_callback(body).midi
        assert event["quantized"] == {
            "uri": path.resolve().as_uri(),
            "sha256": sha256_hex(snapped.quantized),
            "size_bytes": len(snapped.quantized),
            "grid": "1/8",
        }
