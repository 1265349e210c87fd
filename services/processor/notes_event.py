"""The notes event (schema ``suno.midi.v1.MidiNotes``) built from a normalized callback.

It is the contract downstream consumers build on, so it carries every kept note exactly as
parsed (provider order, floats untouched) beside the program and channel the MIDI file
uses, and the drop counts by reason.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from services.common.avro import NOTES_SCHEMA, load_codec
from services.common.events import CallbackEvent, sha256_hex

from . import render
from .normalize import NormalizedCallback
from .render import layout_tracks
from .tempo_map import DEFAULT_BPM, TICKS_PER_QUARTER, TempoMap

__all__ = [
    "MidiLocation",
    "PreviewLocation",
    "encode_notes_event",
    "notes_record",
    "rendering_key",
    "tempo_record",
]

#: The notes event's fields that come from normalizing the body (the rest say where, when
#: and how it was delivered): what ``rendering_key`` digests when there is no file.
_NORMALIZED_FIELDS = ("state", "provider_state", "code", "msg", "instruments", "dropped_notes")


@dataclass(frozen=True, slots=True)
class MidiLocation:
    uri: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class PreviewLocation:
    """Where a task's audio preview went: what the event's optional ``preview`` carries."""

    uri: str
    sha256: str
    size_bytes: int
    media_type: str
    duration_seconds: float


def notes_record(
    event: CallbackEvent,
    normalized: NormalizedCallback,
    midi: MidiLocation | None,
    processed_at: datetime,
    *,
    rendered: bytes | None,
    tempo: TempoMap | None,
    quantized: tuple[MidiLocation, str] | None = None,
    preview: PreviewLocation | None = None,
) -> dict[str, Any]:
    """The event's fields; ``rendered`` is the MIDI file this body rendered to, even when
    ``midi`` is ``None`` because the task's file is a newer body's; ``tempo`` its tempo map;
    ``quantized`` the quantized variant and its grid; ``preview`` the audio preview."""
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
    record: dict[str, Any] = {
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
            **asdict(midi),
            "ticks_per_quarter": TICKS_PER_QUARTER,
            "tempo_bpm": DEFAULT_BPM if tempo is None else tempo.bpm,
        },
        "received_at": event.received_at,
        "processed_at": processed_at,
        "replay": event.replay,
        "tempo": None if tempo is None else tempo_record(tempo),
        # The locations' fields are the schema's, name for name.
        "quantized": None if quantized is None else {**asdict(quantized[0]), "grid": quantized[1]},
        "preview": None if preview is None else asdict(preview),
    }
    record["rendering_key"] = rendering_key(
        event.delivery_key,
        sha256_hex(rendered) if rendered is not None else _normalized_sha256(record),
    )
    return record


def tempo_record(tempo: TempoMap) -> dict[str, Any]:
    """The event's ``tempo`` field: the map as the file writes it."""
    return {
        "estimated": tempo.estimated,
        "reason": tempo.reason,
        "bpm": tempo.bpm,
        "changes": [
            {
                "tick": change.tick,
                "seconds": change.seconds,
                "microseconds_per_quarter": change.microseconds_per_quarter,
                "bpm": change.bpm,
            }
            for change in tempo.changes
        ],
        "time_signatures": [
            {
                "tick": signature.tick,
                "seconds": signature.seconds,
                "numerator": signature.numerator,
                "denominator": signature.denominator,
            }
            for signature in tempo.time_signatures
        ],
    }


def rendering_key(delivery_key: str, result_sha256: str) -> str:
    """One rendering of one delivery, for downstream to deduplicate on: a redelivery of a
    record renders the same result and repeats the key; a replay repeats it unless the
    result or :data:`~.render.RENDERER_VERSION` changed. ``result_sha256`` is the MIDI
    file's SHA-256, or the normalized result's when there is no file."""
    material = f"{delivery_key}\n{render.RENDERER_VERSION}\n{result_sha256}"
    return hashlib.sha256(material.encode()).hexdigest()


def _normalized_sha256(record: dict[str, Any]) -> str:
    normalized = {name: record[name] for name in _NORMALIZED_FIELDS}
    return sha256_hex(json.dumps(normalized, sort_keys=True, separators=(",", ":")).encode())


def encode_notes_event(record: dict[str, Any]) -> bytes:
    return load_codec(NOTES_SCHEMA).encode(record)
