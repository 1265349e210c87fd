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
from dataclasses import replace
from typing import Any

import msgspec
import numpy as np

from services.common.callback import callback_kind, is_record_info, well_formed

from .columns import NoteColumns
from .normalize import (
    DEFAULT_VELOCITY,
    MAX_SECONDS,
    Instrument,
    NormalizedCallback,
    Note,
    _number,
    normalize,
)

__all__ = ["decode_well_formed"]


class _RawNote(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """A note as sent. msgspec refuses booleans for these types, reads JSON integers as
    floats for ``float`` (exactly, as ``float()`` does) and keeps the last of duplicate keys,
    as ``json.loads`` does. Any other member sends the body the general way: msgspec would
    skip it unread, where ``json.loads`` may refuse it (an integer past 4 300 digits)."""

    pitch: int
    #: The JSON text of the value: a column's times are read all at once (:func:`_times`).
    start: msgspec.Raw
    end: msgspec.Raw
    velocity: float | str | None = None


class _RawInstrument(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    notes: list[_RawNote] | None = None


class _KnownData(msgspec.Struct, forbid_unknown_fields=True):
    """``data`` of a MIDI callback as the provider sends it (any other member: see
    :class:`_KnownBody`)."""

    instruments: list[_RawInstrument]
    state: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    taskId: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    task_id: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


class _KnownBody(msgspec.Struct, forbid_unknown_fields=True):
    """A MIDI callback of the provider's shape, decoded in one pass. A member it does not
    name is refused (msgspec would skip it unread, where ``json.loads`` may refuse it), and
    the body is then read member by member."""

    data: _KnownData
    code: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    msg: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    task_id: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    taskId: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


#: Strings each followed by a comma, every one a number as :data:`~.normalize._NUMERIC`
#: reads them. Possessive quantifiers (the same language: no part can give characters
#: back to a later one and match) make it about twice as fast.
_NUMERIC_LIST = re.compile(
    r"(?:\s*+[+-]?(?:\d++(?:\.\d*+)?|\.\d++)(?:[eE][+-]?\d++)?\s*+,)*+", re.ASCII
)

_MEMBERS: msgspec.json.Decoder[dict[str, msgspec.Raw]] = msgspec.json.Decoder(
    dict[str, msgspec.Raw]
)
_FLOATS: msgspec.json.Decoder[list[float]] = msgspec.json.Decoder(list[float])
_FLOAT_OR_TEXT: msgspec.json.Decoder[list[float | str]] = msgspec.json.Decoder(list[float | str])
_KNOWN: msgspec.json.Decoder[_KnownBody] = msgspec.json.Decoder(_KnownBody)
_INSTRUMENTS: msgspec.json.Decoder[list[_RawInstrument]] = msgspec.json.Decoder(
    list[_RawInstrument]
)


Read = tuple[dict[str, Any], list[_RawInstrument]]


def _decode_known(body: bytes) -> Read | None:
    """The body's members, but for the instruments, as ``json.loads`` reads them, and the
    instruments typed, in one pass; for a body of the provider's own shape only."""
    try:
        known = _KNOWN.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None
    payload = _loaded(_set_members(known), _set_members(known.data))
    return None if payload is None else (payload, known.data.instruments)


def _decode_members(body: bytes) -> Read | None:
    """The same for a body with other members: each one kept as JSON text, then read."""
    try:
        members = _MEMBERS.decode(body)
        raw_data = members.pop("data", None)
        if raw_data is None:
            return None
        data = _MEMBERS.decode(raw_data)
        raw_instruments = data.pop("instruments", None)
        if raw_instruments is None:
            return None
        instruments = _INSTRUMENTS.decode(raw_instruments)
    except (msgspec.DecodeError, RecursionError):
        return None
    payload = _loaded(members, data)
    return None if payload is None else (payload, instruments)


def _set_members(struct: msgspec.Struct) -> dict[str, msgspec.Raw]:
    return {
        name: value
        for name in struct.__struct_fields__
        if isinstance(value := getattr(struct, name), msgspec.Raw)
    }


def _loaded(members: dict[str, msgspec.Raw], data: dict[str, msgspec.Raw]) -> dict[str, Any] | None:
    """The payload without its notes, read by json.loads exactly as the general path reads
    it (which also decides what to do with what json.loads refuses: a long integer)."""
    try:
        payload: dict[str, Any] = {key: json.loads(bytes(raw)) for key, raw in members.items()}
        payload["data"] = {key: json.loads(bytes(raw)) for key, raw in data.items()}
    except (ValueError, RecursionError):
        return None
    return payload


def decode_well_formed(body: bytes) -> NormalizedCallback | None:
    """The normalized MIDI callback of ``body`` when it is a completed task's whose every
    instrument and note is kept as sent; ``None`` for any other body (take the general
    path: ``json.loads``, :func:`~services.common.callback.callback_kind`, ``normalize``).
    """
    decoded = _decode_known(body) or _decode_members(body)
    if decoded is None:
        return None
    payload, instruments = decoded
    payload["data"]["instruments"] = []  # a marker of the MIDI kind, as the real list is
    if is_record_info(payload) or callback_kind(payload) != "midi":
        return None
    head = normalize(payload)
    if head.state != "complete":
        return None
    read = _notes([raw for instrument in instruments for raw in instrument.notes or ()])
    if read is None:
        return None
    notes, columns = read
    kept = []
    begin = 0
    for instrument in instruments:
        end = begin + len(instrument.notes or ())
        part = columns.slice(begin, end)
        kept.append(Instrument(well_formed(instrument.name), tuple(notes[begin:end]), part))
        begin = end
    return replace(head, instruments=tuple(kept))


def _times(tokens: list[msgspec.Raw]) -> list[float] | None:
    """A column's times as floats, strings read as JSON numbers; ``None`` when a string is
    not one. All at once: the tokens joined, their quotes dropped, read as one JSON array of
    numbers. Where that does not apply (a string with an escape, ``"+2"``, ``".5"``), each
    token is read as JSON and the strings by the number rule."""
    joined = b",".join(tokens)
    try:
        read = _FLOATS.decode(b"[" + joined.replace(b'"', b"") + b"]")
    except msgspec.DecodeError:
        read = None
    if read is None or len(read) != len(tokens):  # "1,5" is two; a blank string, none
        try:
            values = _FLOAT_OR_TEXT.decode(b"[" + joined + b"]")
        except msgspec.DecodeError:  # not a number or a string, or a number out of range
            return None
        return _mixed_times(values)
    # An integer literal is read as an integer first, so the string "-0" lost its sign:
    # a zero that was a string is read again from its text (which has no escape).
    for index in np.flatnonzero(np.array(read) == 0.0).tolist():
        text = bytes(tokens[index])
        if text.startswith(b'"'):
            read[index] = float(text[1:-1])
    return read


def _mixed_times(values: list[float | str]) -> list[float] | None:
    """The times as floats, strings read by the number rule; ``None`` when a string breaks
    it. One regular-expression pass over all the strings, not a call of
    :func:`~.normalize._seconds` each."""
    texts = [value for value in values if type(value) is str]
    if not texts:
        return values  # type: ignore[return-value]  # msgspec made every number a float
    joined = ",".join(texts)
    if joined.count(",") != len(texts) - 1:
        return None  # a comma in a string would make it two: no number has one
    if not _NUMERIC_LIST.fullmatch(joined + ","):
        return None
    numbers = map(float, texts)
    merged = [next(numbers) if type(value) is str else value for value in values]
    return merged  # type: ignore[return-value]  # the strings replaced by their floats


def _velocities(values: list[float | str | None]) -> list[float] | None:
    if set(map(type, values)) == {float}:
        return values  # type: ignore[return-value]
    read = [DEFAULT_VELOCITY if value is None else _number(value) for value in values]
    return None if None in read else read  # type: ignore[return-value]


def _notes(raw_notes: list[_RawNote]) -> tuple[list[Note], NoteColumns] | None:
    """The notes (of all instruments at once) and their columns, or ``None`` when one needs
    a rule (it is dropped, or read other than as sent). Checked by columns: the loop over a
    note's fields in Python is what made ``normalize`` slow."""
    pitches = [raw.pitch for raw in raw_notes]
    starts = _times([raw.start for raw in raw_notes])
    ends = _times([raw.end for raw in raw_notes])
    velocities = _velocities([raw.velocity for raw in raw_notes])
    if starts is None or ends is None or velocities is None:
        return None
    if pitches and not (min(pitches) >= 0 and max(pitches) <= 127):
        return None
    start, end = np.array(starts, dtype=np.float64), np.array(ends, dtype=np.float64)
    velocity = np.array(velocities, dtype=np.float64)
    if not (
        np.all((start >= 0.0) & (start < end) & (end <= MAX_SECONDS))
        and np.all((velocity >= 0.0) & (velocity <= 1.0))
    ):
        return None
    # round(v * 127) (half to even, as np.rint), at least 1: normalize's MIDI velocity
    midi = np.maximum(np.rint(velocity * 127), 1).astype(np.int64)
    columns = NoteColumns(np.array(pitches, dtype=np.int64), start, end, velocity, midi)
    notes = list(map(Note, pitches, starts, ends, velocities, midi.tolist()))
    return notes, columns
