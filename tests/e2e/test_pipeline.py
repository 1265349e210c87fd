"""The whole pipeline through a real broker: POST -> Kafka -> MIDI file + raw archive."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import fastavro
import fastavro.schema
import mido
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.archiver.app import create_app as create_archiver
from services.common.keys import task_key
from services.common.settings import Settings
from services.ingest.app import CALLBACK_PATH
from services.ingest.app import create_app as create_ingest
from services.processor.app import create_app as create_processor

from ..helpers import eventually, read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def decode_with_schemas_only(value: bytes) -> dict:
    """Decode a single-object message knowing nothing but the files in ``schemas/``."""
    assert value[:2] == b"\xc3\x01"
    for path in SCHEMAS.glob("*/v*.avsc"):
        schema = fastavro.schema.load_schema(str(path))
        canonical = fastavro.schema.to_parsing_canonical_form(schema)
        if bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO")) == value[2:10]:
            return fastavro.schemaless_reader(io.BytesIO(value[10:]), schema, None)
    raise AssertionError("no schema in schemas/ has the message's fingerprint")


def midi_notes(path: Path) -> list[tuple[str, int, int, int]]:
    """(track name, pitch, on tick, off tick) of every note in a MIDI file, via mido."""
    found = []
    for track in mido.MidiFile(path).tracks:
        name, now, open_notes = "", 0, {}
        for message in track:
            now += message.time
            if message.type == "track_name":
                name = message.name
            elif message.type == "note_on" and message.velocity > 0:
                open_notes[message.note] = now
            elif message.type in ("note_off", "note_on"):
                found.append((name, message.note, open_notes.pop(message.note), now))
    return sorted(found)


async def test_both_shapes_flow_to_midi_archive_and_topics(
    settings: Settings, reference_examples: dict[str, bytes]
) -> None:
    ingest = TestClient(TestServer(create_ingest(settings)))
    processor = TestServer(create_processor(settings))
    archiver = TestServer(create_archiver(settings))
    await ingest.start_server()
    await processor.start_server()
    await archiver.start_server()
    try:
        sent = {}
        for name in ("success-task-id-top-level", "success-task-id-in-data"):
            body = reference_examples[name]
            # The two shapes share a task id; make each its own task to see both results.
            payload = json.loads(body)
            task_id = f"{name}-5c79be8e"
            if "task_id" in payload:
                payload["task_id"] = task_id
            else:
                payload["data"]["taskId"] = task_id
            body = json.dumps(payload, indent=1).encode()
            response = await ingest.post(
                CALLBACK_PATH, data=body, headers={"Content-Type": "application/json"}
            )
            assert response.status == 200, await response.text()
            assert await response.json() == {"status": "received"}
            sent[task_id] = body

        data_dir = settings.storage.data_dir
        for task_id, body in sent.items():
            key = task_key(task_id)
            digest = hashlib.sha256(body).hexdigest()
            midi_path = data_dir / "midi" / f"{key}.mid"
            raw_path = data_dir / "raw" / key / f"{digest}.json"
            await eventually(midi_path.exists, what=f"{midi_path}")
            await eventually(raw_path.exists, what=f"{raw_path}")
            assert raw_path.read_bytes() == body

            # 960 ticks a quarter at 120 BPM = 1920 ticks a second: the 1/192 s grid is exact.
            expected = []
            for instrument in json.loads(body)["data"]["instruments"]:
                for note in instrument["notes"]:
                    expected.append(
                        (
                            instrument["name"],
                            note["pitch"],
                            round(float(note["start"]) * 1920),
                            round(float(note["end"]) * 1920),
                        )
                    )
            assert midi_notes(midi_path) == sorted(expected)

        callbacks = await read_topic(
            settings.kafka.bootstrap_servers, settings.kafka.topics.callbacks, len(sent)
        )
        notes = await read_topic(
            settings.kafka.bootstrap_servers, settings.kafka.topics.notes, len(sent)
        )
        assert sorted(r.key.decode() for r in callbacks) == sorted(sent)
        assert sorted(r.key.decode() for r in notes) == sorted(sent)
        for record in callbacks:
            event = decode_with_schemas_only(record.value)
            assert event["body"] == sent[event["task_id"]]
            assert event["body_sha256"] == hashlib.sha256(event["body"]).hexdigest()
            assert event["code"] == 200 and event["state"] == "complete"
        for record in notes:
            event = decode_with_schemas_only(record.value)
            assert event["state"] == "complete"
            assert event["note_count"] == 6
            assert [i["name"] for i in event["instruments"]] == ["Drums", "Electric Bass (finger)"]
            assert event["midi"]["uri"].endswith(f"{task_key(event['task_id'])}.mid")
    finally:
        await ingest.close()
        await processor.close()
        await archiver.close()


class Pipeline:
    """The three services on test servers, sharing one test's settings."""

    def __init__(self, settings: Settings) -> None:
        self.ingest = TestClient(TestServer(create_ingest(settings)))
        self.servers = [
            TestServer(create_processor(settings)),
            TestServer(create_archiver(settings)),
        ]

    async def __aenter__(self) -> TestClient:
        await self.ingest.start_server()
        for server in self.servers:
            await server.start_server()
        return self.ingest

    async def __aexit__(self, *_exc: object) -> None:
        await self.ingest.close()
        for server in self.servers:
            await server.close()


async def test_failure_callbacks_are_archived_and_reported_without_midi(
    settings: Settings, reference_examples: dict[str, bytes]
) -> None:
    """Both failure shapes: raw body archived, a notes event with state failed, no .mid."""
    async with Pipeline(settings) as ingest:
        sent = {}
        for name in ("failure-data-null", "failure-task-id-in-data"):
            payload = json.loads(reference_examples[name])
            task_id = f"{name}-task"
            if "task_id" in payload:
                payload["task_id"] = task_id
            else:
                payload["data"]["taskId"] = task_id
            body = json.dumps(payload).encode()
            response = await ingest.post(
                CALLBACK_PATH, data=body, headers={"Content-Type": "application/json"}
            )
            assert response.status == 200, await response.text()
            sent[task_id] = body
        notes = await read_topic(
            settings.kafka.bootstrap_servers, settings.kafka.topics.notes, len(sent)
        )
        data_dir = settings.storage.data_dir
        for task_id, body in sent.items():
            raw = data_dir / "raw" / task_key(task_id) / f"{hashlib.sha256(body).hexdigest()}.json"
            await eventually(raw.exists, what=str(raw))
            assert raw.read_bytes() == body
    events = {e["task_id"]: e for e in map(decode_with_schemas_only, (r.value for r in notes))}
    assert set(events) == set(sent)
    for event in events.values():
        assert event["state"] == "failed"
        assert event["code"] == 500
        assert event["msg"] == "MIDI generation failed"
        assert event["midi"] is None and event["instruments"] == []
    assert not (data_dir / "midi").exists() or not any((data_dir / "midi").iterdir())


async def test_a_callback_at_the_body_limit_flows_end_to_end(settings: Settings) -> None:
    """A callback just under the 8 MiB ingest limit fits every topic, producer and fetch."""
    limit = settings.ingest.max_body_bytes
    note = {"pitch": 60, "start": "0.0", "end": "0.005208333333333333", "velocity": 1}
    per_note = len(json.dumps(note)) + 2
    count = (limit - 4096) // per_note
    notes = [
        {**note, "start": str(i / 192), "end": str((i + 1) / 192), "pitch": 21 + i % 88}
        for i in range(count)
    ]
    payload = {
        "task_id": "big-task",
        "code": 200,
        "msg": "success",
        "data": {"state": "complete", "instruments": [{"name": "Piano", "notes": notes}]},
    }
    body = json.dumps(payload).encode()
    while len(body) > limit:  # trim by the measured overshoot, a few passes at most
        notes_list = payload["data"]["instruments"][0]["notes"]
        del notes_list[-((len(body) - limit) // per_note + 1) :]
        body = json.dumps(payload).encode()
    assert limit - len(body) < 512 * 1024, "the body should be close to the limit"
    async with Pipeline(settings) as ingest:
        response = await ingest.post(
            CALLBACK_PATH, data=body, headers={"Content-Type": "application/json"}
        )
        assert response.status == 200, await response.text()
        key = task_key("big-task")
        raw = settings.storage.data_dir / "raw" / key / f"{hashlib.sha256(body).hexdigest()}.json"
        midi = settings.storage.data_dir / "midi" / f"{key}.mid"
        await eventually(raw.exists, timeout=90, what="the archived body")
        await eventually(midi.exists, timeout=90, what="the MIDI file")
        assert raw.read_bytes() == body
        [event] = await read_topic(
            settings.kafka.bootstrap_servers, settings.kafka.topics.notes, 1, timeout=90
        )
    assert decode_with_schemas_only(event.value)["note_count"] == len(
        payload["data"]["instruments"][0]["notes"]
    )
