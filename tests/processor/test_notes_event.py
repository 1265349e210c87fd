"""The notes event: every kept note exactly, drops by reason, failed tasks without a file."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from services.common.avro import NOTES_SCHEMA, load_codec
from services.common.events import CallbackEvent, sha256_hex
from services.processor.app import process_callback
from services.processor.notes_event import MidiLocation, encode_notes_event, notes_record

RECEIVED = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
PROCESSED = datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC)


def event_for(body: bytes) -> CallbackEvent:
    return CallbackEvent(
        task_id="t-1", received_at=RECEIVED, body=body, body_sha256=sha256_hex(body)
    )


def round_trip(body: bytes, location: MidiLocation | None = None) -> dict:
    processed = process_callback(body)
    value = encode_notes_event(
        notes_record(event_for(body), processed.normalized, location, PROCESSED)
    )
    return load_codec(NOTES_SCHEMA).decode(value)


class TestCompleteTask:
    def test_reference_example(self, reference_examples: dict[str, bytes]) -> None:
        """The provider's example: both instruments, every note exactly as parsed."""
        body = reference_examples["success-task-id-in-data"]
        location = MidiLocation("file:///x.mid", "ab" * 32, 158)
        decoded = round_trip(body, location)
        assert decoded["state"] == "complete" and decoded["code"] == 200
        assert decoded["task_id"] == "t-1" and decoded["delivery_key"] == f"t-1:{sha256_hex(body)}"
        assert decoded["note_count"] == 6 and decoded["dropped_note_count"] == 0
        assert decoded["dropped_notes"] == {}
        sent = json.loads(body)["data"]["instruments"]
        for got, raw in zip(decoded["instruments"], sent, strict=True):
            assert got["name"] == raw["name"]
            assert [
                (n["pitch"], n["start_seconds"], n["end_seconds"], n["velocity"])
                for n in got["notes"]
            ] == [
                (n["pitch"], float(n["start"]), float(n["end"]), float(n["velocity"]))
                for n in raw["notes"]
            ]
        drums, bass = decoded["instruments"]
        assert (drums["program"], drums["channel"], drums["is_drum"]) == (0, 9, True)
        assert (bass["program"], bass["channel"], bass["is_drum"]) == (33, 0, False)
        assert decoded["midi"] == {
            "uri": "file:///x.mid",
            "sha256": "ab" * 32,
            "size_bytes": 158,
            "ticks_per_quarter": 960,
            "tempo_bpm": 120.0,
        }
        assert decoded["received_at"] == RECEIVED and decoded["processed_at"] == PROCESSED

    def test_provider_order_and_drops(self) -> None:
        """Notes keep the provider's order; drops are counted by reason."""
        notes = [
            {"pitch": 62, "start": "2.5", "end": 3.0, "velocity": 0.3},
            {"pitch": 60, "start": 0.1, "end": 0.2},
            {"pitch": 61, "start": 5, "end": 4},
            {"pitch": 300, "start": 0, "end": 1},
            {"pitch": 61, "start": 5, "end": 6, "velocity": "loud"},
        ]
        body = json.dumps(
            {
                "task_id": "t-1",
                "code": 200,
                "data": {"instruments": [{"name": "Oboe", "notes": notes}]},
            }
        ).encode()
        decoded = round_trip(body)
        (oboe,) = decoded["instruments"]
        assert [
            (n["pitch"], n["start_seconds"], n["velocity"], n["midi_velocity"])
            for n in oboe["notes"]
        ] == [
            (62, 2.5, 0.3, 38),
            (60, 0.1, 1.0, 127),
        ]
        assert decoded["dropped_notes"] == {
            "invalid_pitch": 1,
            "end_not_after_start": 1,
            "invalid_velocity": 1,
        }
        assert decoded["dropped_note_count"] == 3 and decoded["note_count"] == 2


class TestFailedTask:
    def test_failure_example(self, reference_examples: dict[str, bytes]) -> None:
        """code 500: state failed, code and msg, no instruments, no MIDI file."""
        processed = process_callback(reference_examples["failure-data-null"])
        assert processed.midi is None
        decoded = round_trip(reference_examples["failure-data-null"])
        assert (decoded["state"], decoded["code"], decoded["msg"]) == (
            "failed",
            500,
            "MIDI generation failed",
        )
        assert decoded["instruments"] == [] and decoded["midi"] is None
        assert decoded["provider_state"] is None
