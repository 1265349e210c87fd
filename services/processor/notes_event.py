"""The notes event (schema ``suno.midi.v1.MidiNotes``) built from a normalized callback.

It is the contract downstream consumers build on, so it carries every kept note exactly as
parsed (provider order, floats untouched) beside the program and channel the MIDI file
uses, and the drop counts by reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.common.avro import NOTES_SCHEMA, load_codec
from services.common.events import CallbackEvent

from .normalize import NormalizedCallback
from .render import TEMPO_BPM, TICKS_PER_QUARTER, layout_tracks

__all__ = ["MidiLocation", "encode_notes_event", "notes_record"]


@dataclass(frozen=True, slots=True)
class MidiLocation:
    uri: str
    sha256: str
    size_bytes: int


def notes_record(
    event: CallbackEvent,
    normalized: NormalizedCallback,
    midi: MidiLocation | None,
    processed_at: datetime,
) -> dict[str, Any]:
    instruments = [
        {
            "name": instrument.name,
            "program": layout.program,
            "channel": layout.channel,
            "is_drum": layout.is_drum,
            "notes": [
                {
                    "pitch": note.pitch,
                    "start_seconds": note.start,
                    "end_seconds": note.end,
                    "velocity": note.velocity,
                    "midi_velocity": note.midi_velocity,
                }
                for note in instrument.notes
            ],
        }
        for instrument, layout in zip(
            normalized.instruments, layout_tracks(normalized.instruments), strict=True
        )
    ]
    return {
        "task_id": event.task_id,
        "delivery_key": event.delivery_key,
        "body_sha256": event.body_sha256,
        "state": normalized.state,
        "provider_state": normalized.provider_state,
        "code": normalized.code,
        "msg": normalized.msg,
        "instruments": instruments,
        "note_count": normalized.note_count,
        "dropped_note_count": sum(normalized.dropped.values()),
        "dropped_notes": dict(normalized.dropped),
        "midi": None
        if midi is None
        else {
            "uri": midi.uri,
            "sha256": midi.sha256,
            "size_bytes": midi.size_bytes,
            "ticks_per_quarter": TICKS_PER_QUARTER,
            "tempo_bpm": TEMPO_BPM,
        },
        "received_at": event.received_at,
        "processed_at": processed_at,
        "replay": event.replay,
    }


def encode_notes_event(record: dict[str, Any]) -> bytes:
    return load_codec(NOTES_SCHEMA).encode(record)
