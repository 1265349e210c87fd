"""The notes event: every kept note exactly, drops by reason, failed tasks without a file."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from services.common.avro import HEADER_SIZE, NOTES_SCHEMA, load_codec
from services.common.events import CallbackEvent, sha256_hex
from services.processor import render
from services.processor.app import Processed, process_callback
from services.processor.notes_event import (
    MidiLocation,
    encode_notes_event,
    notes_record,
    tempo_record,
)

RECEIVED = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
PROCESSED = datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC)


def event_for(body: bytes) -> CallbackEvent:
    return CallbackEvent(
        task_id="t-1", received_at=RECEIVED, body=body, body_sha256=sha256_hex(body)
    )


def record_of(body: bytes, location: MidiLocation | None = None) -> dict[str, Any]:
    """The event's fields for ``body`` as the processor builds them."""
    processed = process_callback(body)
    assert isinstance(processed, Processed)
    return notes_record(
        event_for(body),
        processed.normalized,
        location,
        PROCESSED,
        rendered=processed.midi,
        tempo=processed.tempo,
    )


def round_trip(body: bytes, location: MidiLocation | None = None) -> dict[str, Any]:
    return load_codec(NOTES_SCHEMA).decode(encode_notes_event(record_of(body, location)))


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


class TestRenderingKey:
    """One rendering of one delivery: repeated by a redelivery, new when the result changes."""

    def key(self, body: bytes, **changes: object) -> str:
        processed = process_callback(body)
        assert isinstance(processed, Processed)
        event = replace(event_for(body), **changes)  # type: ignore[arg-type]
        record = notes_record(
            event,
            processed.normalized,
            None,
            PROCESSED,
            rendered=processed.midi,
            tempo=processed.tempo,
        )
        return str(record["rendering_key"])

    def test_same_body_same_key_even_replayed(self, reference_examples: dict[str, bytes]) -> None:
        body = reference_examples["success-task-id-in-data"]
        first = self.key(body)
        assert len(first) == 64 and first == self.key(body)
        assert self.key(body, replay=True) == first

    @pytest.mark.parametrize("example", ["success-task-id-in-data", "failure-task-id-in-data"])
    def test_a_new_renderer_version_is_a_new_key(
        self, reference_examples: dict[str, bytes], example: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With a file (its bytes) and without one (the normalized result)."""
        body = reference_examples[example]
        before = self.key(body, replay=True)
        monkeypatch.setattr(render, "RENDERER_VERSION", render.RENDERER_VERSION + 1)
        assert self.key(body, replay=True) != before

    def test_different_bodies_different_keys(self, reference_examples: dict[str, bytes]) -> None:
        keys = {self.key(body) for body in reference_examples.values()}
        assert len(keys) == len(reference_examples)

    def test_written_as_the_current_version_and_read_from_v1(
        self, reference_examples: dict[str, bytes]
    ) -> None:
        """A v1 event (written before the field) reads with the default, empty key."""
        body = reference_examples["success-task-id-in-data"]
        decoded = round_trip(body)
        assert decoded["rendering_key"] == self.key(body)
        codec = load_codec(NOTES_SCHEMA)
        old = codec.versions[1].encode(record_of(body))
        assert codec.decode(old)["rendering_key"] == ""


class TestTempoFields:
    """Version 3: the file's tempo map, the quantized variant and the preview."""

    def test_tempo_round_trips_and_old_readers_skip_it(
        self, reference_examples: dict[str, bytes]
    ) -> None:
        """Written as v3 with the tempo map; a v2 reader reads the same event without it."""
        body = reference_examples["success-task-id-in-data"]
        processed = process_callback(body)
        assert isinstance(processed, Processed) and processed.tempo is not None
        location = MidiLocation("file:///x.mid", "ab" * 32, 158)
        decoded = round_trip(body, location)
        assert decoded["tempo"] == tempo_record(processed.tempo)
        # Six notes cannot tell a tempo: the file says 120 BPM, and the event says why.
        assert (decoded["tempo"]["estimated"], decoded["tempo"]["reason"]) == (
            False,
            "too_few_notes",
        )
        assert decoded["tempo"]["bpm"] == 120.0
        assert decoded["tempo"]["changes"][0]["tick"] == 0
        assert decoded["midi"]["tempo_bpm"] == processed.tempo.bpm
        assert decoded["quantized"] is None and decoded["preview"] is None
        codec = load_codec(NOTES_SCHEMA)
        value = codec.encode(record_of(body, location))
        old = codec.writer_of(value).read(value[HEADER_SIZE:], codec.versions[2])
        assert "tempo" not in old and old["note_count"] == decoded["note_count"]

    def test_a_v2_event_reads_with_no_tempo(self, reference_examples: dict[str, bytes]) -> None:
        body = reference_examples["success-task-id-in-data"]
        codec = load_codec(NOTES_SCHEMA)
        decoded = codec.decode(codec.versions[2].encode(record_of(body)))
        assert decoded["tempo"] is None and decoded["quantized"] is None
