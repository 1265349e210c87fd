"""The fast path from a callback's bytes to typed notes, for bodies that need no rule.

``json.loads`` builds a dict, two strings and up to four numbers per note and
:func:`~.normalize.normalize` then reads them back: most of the processor's cost on a large
callback. msgspec decodes the instruments straight into typed structs instead. It is only a
shortcut: when a body holds anything a rule of ``normalize`` would act on (a note to drop,
a pitch written ``44.0``, JSON msgspec does not take, a record-info answer, a failed task),
:func:`decode_well_formed` returns ``None`` and the caller takes the general path, so the
result, drop reasons and counts included, is always the one ``normalize`` gives.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import msgspec

from services.common.callback import callback_kind, is_record_info, well_formed

from .normalize import (
    _NUMERIC,
    DEFAULT_VELOCITY,
    MAX_SECONDS,
    Instrument,
    NormalizedCallback,
    Note,
    _number,
    normalize,
)

__all__ = ["decode_well_formed"]


class _RawNote(msgspec.Struct, gc=False):
    """A note as sent. msgspec refuses booleans for these types, reads JSON integers as
    floats for ``float`` (exactly, as ``float()`` does) and keeps the last of duplicate keys,
    as ``json.loads`` does."""

    pitch: int
    start: float | str
    end: float | str
    velocity: float | str | None = None


class _RawInstrument(msgspec.Struct):
    name: str
    notes: list[_RawNote] | None = None


#: Strings each followed by a comma, every one a number as :data:`~.normalize._NUMERIC`
#: reads them.
_NUMERIC_LIST = re.compile(f"(?:{_NUMERIC.pattern},)*", re.ASCII)

_MEMBERS: msgspec.json.Decoder[dict[str, msgspec.Raw]] = msgspec.json.Decoder(
    dict[str, msgspec.Raw]
)
_INSTRUMENTS: msgspec.json.Decoder[list[_RawInstrument]] = msgspec.json.Decoder(
    list[_RawInstrument]
)


def decode_well_formed(body: bytes) -> NormalizedCallback | None:
    """The normalized MIDI callback of ``body`` when it is a completed task's whose every
    instrument and note is kept as sent; ``None`` for any other body (take the general
    path: ``json.loads``, :func:`~services.common.callback.callback_kind`, ``normalize``).
    """
    try:
        members = _MEMBERS.decode(body)
        raw_data = members.get("data")
        if raw_data is None:
            return None
        data = _MEMBERS.decode(raw_data)
        raw_instruments = data.pop("instruments", None)
        if raw_instruments is None:
            return None
        instruments = _INSTRUMENTS.decode(raw_instruments)
    except (msgspec.DecodeError, RecursionError):
        return None
    # Everything but the notes is small: read by json.loads, exactly as the general path
    # (which also decides what to do with what json.loads refuses, such as a long integer).
    try:
        payload: dict[str, Any] = {
            key: json.loads(bytes(raw)) for key, raw in members.items() if key != "data"
        }
        payload["data"] = {key: json.loads(bytes(raw)) for key, raw in data.items()}
    except (ValueError, RecursionError):
        return None
    payload["data"]["instruments"] = []  # a marker of the MIDI kind, as the real list is
    if is_record_info(payload) or callback_kind(payload) != "midi":
        return None
    head = normalize(payload)
    if head.state != "complete":
        return None
    kept = []
    for instrument in instruments:
        notes = _notes(instrument.notes or [])
        if notes is None:
            return None
        kept.append(Instrument(well_formed(instrument.name), notes))
    return replace(head, instruments=tuple(kept))


def _texts_as_floats(raw_notes: list[_RawNote]) -> Iterator[float] | None:
    """The notes' times sent as strings, as floats in order; ``None`` when one is not a
    number as JSON writes it. One regular-expression pass over them all: a per-string call
    of :func:`~.normalize._seconds` costs more than the rest of a note."""
    texts = [value for raw in raw_notes for value in (raw.start, raw.end) if type(value) is str]
    joined = ",".join(texts) + "," if texts else ""
    if joined.count(",") != len(texts) or not _NUMERIC_LIST.fullmatch(joined):
        return None  # a comma in a string would make it two: no number has one
    return map(float, texts)


def _notes(raw_notes: list[_RawNote]) -> tuple[Note, ...] | None:
    """The notes, or ``None`` as soon as one needs a rule (it is dropped, or read other than
    as sent)."""
    floats = _texts_as_floats(raw_notes)
    if floats is None:
        return None
    notes: list[Note] = []
    append = notes.append
    for raw in raw_notes:
        pitch, start, end, velocity = raw.pitch, raw.start, raw.end, raw.velocity
        if type(start) is str:
            start = next(floats)
        if type(end) is str:
            end = next(floats)
        if not (0 <= pitch <= 127 and 0.0 <= start < end <= MAX_SECONDS):  # type: ignore[operator]
            return None
        if velocity is None:
            velocity = DEFAULT_VELOCITY
        elif type(velocity) is str:
            velocity = _number(velocity)
            if velocity is None:
                return None
        if not 0.0 <= velocity <= 1.0:  # type: ignore[operator]
            return None
        append(Note(pitch, start, end, velocity, max(1, round(velocity * 127))))  # type: ignore[arg-type]
    return tuple(notes)
