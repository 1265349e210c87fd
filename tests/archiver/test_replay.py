"""Replay end to end: archive, delete the MIDI files, replay, get byte-identical MIDI back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from services.archiver.app import create_app as create_archiver
from services.archiver.archive import archive_event
from services.archiver.catalog import ArchiveEntry, scan
from services.archiver.cli import main
from services.archiver.replay import replay
from services.common.events import CallbackEvent
from services.common.kafka import Publisher
from services.common.keys import task_key
from services.common.settings import Settings
from services.common.storage import TEMPORARY_PREFIX, LocalStorage
from services.processor.app import create_app as create_processor

from ..helpers import committed_offsets, eventually, read_topic, service_environment
from .support import at, callback_body, make_event

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def snapshot(folder: Path) -> dict[str, bytes]:
    """The finished files below ``folder`` (a write in progress is a temporary file beside
    its target: counting it let a wait end one file early, seen once under load)."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.startswith(TEMPORARY_PREFIX)
    }


def retarget(body: bytes, task_id: str) -> bytes:
    """One of the provider's examples, made into its own task (keeps the provider's shape)."""
    payload = json.loads(body)
    if "task_id" in payload:
        payload["task_id"] = task_id
    else:
        payload["data"]["taskId"] = task_id
    return json.dumps(payload, indent=1).encode()


def run_cli(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exited:
        return exited.code if isinstance(exited.code, int) else 1
    return 0


async def test_replay_restores_byte_identical_midi(
    settings: Settings,
    publisher: Publisher,
    reference_examples: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The processor re-renders replayed callbacks into the same bytes; the archive is
    unchanged (replays are no-ops there), and every replay is marked on the topic."""
    events = [
        make_event(
            "replay-top",
            retarget(reference_examples["success-task-id-top-level"], "replay-top"),
            received_at=at(0),
        ),
        make_event(
            "replay-data",
            retarget(reference_examples["success-task-id-in-data"], "replay-data"),
            received_at=at(1),
        ),
        # Two different bodies for one task: the later one's MIDI is the one kept.
        make_event("replay-twice", callback_body("replay-twice", pitch=40), received_at=at(2)),
        make_event("replay-twice", callback_body("replay-twice", pitch=80), received_at=at(3)),
    ]
    for event in events:
        await publisher.publish(
            settings.kafka.topics.callbacks,
            key=event.task_id.encode(),
            value=event.encode(),
            timeout=10,
        )
    data_dir = settings.storage.data_dir
    midi_dir, raw_dir = data_dir / "midi", data_dir / "raw"
    tasks = sorted({event.task_id for event in events})
    processor = TestServer(create_processor(settings))
    registry = CollectorRegistry()
    archiver = TestServer(create_archiver(settings, registry=registry))
    await processor.start_server()
    await archiver.start_server()
    try:
        bootstrap, topics = settings.kafka.bootstrap_servers, settings.kafka.topics
        notes = await read_topic(bootstrap, topics.notes, len(events))
        assert len(notes) == len(events)
        await eventually(
            lambda: len(snapshot(raw_dir)) == 8,
            what="four bodies archived, each with its sidecar",
        )
        midi_before = snapshot(midi_dir)
        assert sorted(midi_before) == sorted(f"{task_key(t)}.mid" for t in tasks)
        archive_before = snapshot(raw_dir)
        for path in midi_dir.iterdir():
            path.unlink()

        for name, value in service_environment(settings).items():
            monkeypatch.setenv(name, value)
        assert await asyncio.to_thread(run_cli, ["replay", "--all", "--quiet"]) == 0

        notes = await read_topic(bootstrap, topics.notes, 2 * len(events))
        assert len(notes) == 2 * len(events)
        await eventually(lambda: len(snapshot(midi_dir)) == len(tasks), what="MIDI files back")
        assert snapshot(midi_dir) == midi_before

        callbacks = await read_topic(bootstrap, topics.callbacks, 2 * len(events))
        replays = [r for r in callbacks if ("replay", b"1") in list(r.headers)]
        assert len(replays) == len(events)
        decoded = [CallbackEvent.decode(r.value) for r in replays]
        assert all(event.replay for event in decoded)
        assert sorted(e.body for e in decoded) == sorted(e.body for e in events)
        # Per task, replays keep the order the callbacks first arrived in.
        twice = [e.received_at for e in decoded if e.task_id == "replay-twice"]
        assert twice == [at(2), at(3)]

        async def archiver_done() -> bool:
            offsets = await committed_offsets(settings, settings.archiver.group_id)
            return sum(offsets.values()) == 2 * len(events)

        await eventually(archiver_done, what="the archiver past the replays")
        assert snapshot(raw_dir) == archive_before
        assert registry.get_sample_value("archiver_replayed_total") == len(events)
        assert registry.get_sample_value("archiver_archived_total", {"outcome": "existing"}) == 4
    finally:
        await processor.close()
        await archiver.close()


async def test_replay_with_acknowledgements_overlapping_keeps_the_order(
    settings: Settings, publisher: Publisher, tmp_path: Path
) -> None:
    """With several records awaiting their acknowledgement at once, every one is sent,
    reported in order, and one task's bodies reach its partition in received order."""
    storage = LocalStorage(tmp_path / "archive")
    events = [
        make_event("window", callback_body("window", pitch=30 + index), received_at=at(index))
        for index in range(10)
    ]
    for event in events:
        await archive_event(storage, event)
    entries = sorted(
        [entry async for entry in scan(storage) if isinstance(entry, ArchiveEntry)],
        key=ArchiveEntry.sort_key,
    )
    reported: list[str] = []
    topic = settings.kafka.topics.callbacks

    sent = await replay(
        storage,
        publisher,
        topic,
        entries,
        on_sent=lambda entry: reported.append(entry.body_sha256),
        window=3,
    )

    in_order = [event.body_sha256 for event in events]
    assert sent == len(events) and reported == in_order
    records = await read_topic(settings.kafka.bootstrap_servers, topic, len(events))
    assert [CallbackEvent.decode(record.value).body_sha256 for record in records] == in_order
