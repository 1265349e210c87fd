"""From the provider's raw callback JSON to typed notes: a pure function, every rule counted.

The provider's JSON is loose (times as numbers *or* strings, ``data`` sometimes ``null``,
instruments sometimes missing), so this module is the one place that decides what a note
is. Nothing is dropped silently: every note (or structure) that is left out is counted
under one reason from :data:`DROP_REASONS`, and the counts travel in the notes event and
the ``processor_notes_dropped_total{reason}`` metric. The rules are tabulated in
``docs/processing.md``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec

from services.common.callback import (
    callback_code,
    callback_msg,
    callback_state,
    result_data,
    well_formed,
)

__all__ = [
    "DEFAULT_VELOCITY",
    "DROP_REASONS",
    "MAX_SECONDS",
    "Instrument",
    "NormalizedCallback",
    "Note",
    "TaskState",
    "normalize",
    "well_formed",
]

TaskState = Literal["complete", "failed", "unknown"]

#: Velocity used when a note has none (absent or ``null``): the value the provider sends
#: for every note in all its published examples, i.e. MIDI velocity 127.
DEFAULT_VELOCITY: Final = 1.0

#: Latest time accepted, in seconds (24 hours). A note beyond it is dropped: no audio the
#: provider transcribes is that long, and 24 h (165 888 000 ticks at 1920 ticks/s) stays
#: below the 2**28 - 1 ticks a single MIDI delta time can express.
MAX_SECONDS: Final = 86_400.0

#: Every reason a note (or a malformed structure) is dropped, in the order the rules are
#: checked: a note is counted once, under the first rule it fails.
DROP_REASONS: Final = (
    "invalid_data",  # code 200 but ``data`` is neither an object nor null (counted once)
    "invalid_instruments",  # ``instruments`` is neither a list nor null (counted once)
    "invalid_instrument",  # an instrument is not an object, or its ``notes`` not a list
    "invalid_note",  # a note is not an object
    "invalid_pitch",  # missing, not an integer (or integral number/string), outside 0..127
    "invalid_start",  # missing, unparsable, non-finite or negative
    "invalid_end",  # missing, unparsable, non-finite or negative
    "time_out_of_range",  # start or end beyond MAX_SECONDS
    "end_not_after_start",  # end <= start
    "invalid_velocity",  # present but unparsable, non-finite or outside 0..1
)

# JSON may escape a lone surrogate ("\\ud800"), which json.loads keeps in the str; no UTF-8
# encoder (Avro's, the MIDI file's) takes one. A valid pair is already one code point.

# A decimal number as JSON writes one, with an optional sign and surrounding whitespace.
# Python's float() alone would also take "inf", "nan", "1_000" and "١٢": not numbers here.
_NUMERIC = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*", re.ASCII)


class Note(msgspec.Struct, frozen=True, gc=False):
    """One kept note, times and velocity exactly as parsed from the provider's JSON.

    A msgspec struct, not a dataclass: a callback may hold 100 000 of them, and a struct is
    built several times faster (and, holding only numbers, is left alone by the garbage
    collector).
    """

    pitch: int
    start: float
    end: float
    velocity: float
    #: ``velocity`` (0..1) as MIDI 1..127: ``round(v * 127)`` (half to even), at least 1,
    #: since MIDI velocity 0 would turn the note-on into a note-off.
    midi_velocity: int


@dataclass(frozen=True, slots=True)
class Instrument:
    """One instrument: its name as sent, its kept notes in the provider's order."""

    name: str
    notes: tuple[Note, ...]
    #: The notes as numpy columns (:class:`.columns.NoteColumns`), kept by whoever builds
    #: them first (:func:`.columns.note_columns`); not part of the value.
    columns: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class NormalizedCallback:
    state: TaskState
    code: int | None
    msg: str | None
    provider_state: str | None
    instruments: tuple[Instrument, ...] = ()
    dropped: Mapping[str, int] = field(default_factory=dict)

    @property
    def note_count(self) -> int:
        return sum(len(instrument.notes) for instrument in self.instruments)

    @property
    def dropped_count(self) -> int:
        return sum(self.dropped.values())


def _text(value: str | None) -> str | None:
    return None if value is None else well_formed(value)


def _number(value: Any) -> float | None:
    """A JSON number or numeric string as a float; ``None`` when it is neither or not finite.

    A numeric string is what JSON would write as a number, with an optional sign and
    surrounding whitespace: ``float()`` alone would also take ``"inf"``, ``"nan"``,
    ``"1_000"`` and non-ASCII digits, so those are refused first.
    """
    if isinstance(value, float):
        number = value
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer literal too large for a double
            return None
    elif isinstance(value, str) and _NUMERIC.fullmatch(value):
        number = float(value)  # overflow gives inf, refused below
    else:
        return None
    return number if math.isfinite(number) else None


def _seconds(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and number >= 0 else None


def _pitch(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value <= 127 else None
    number = _number(value)
    if number is None or not number.is_integer() or not 0 <= number <= 127:
        return None
    return int(number)


def _note(raw: Any) -> Note | str:
    """The note, or the reason it is dropped (the first rule of DROP_REASONS it fails).

    Plain ints and floats in range take the short path: they are nearly every note of a
    large callback, and this loop is most of the normalization's cost.
    """
    if type(raw) is not dict:
        return "invalid_note"
    pitch = raw.get("pitch")
    if type(pitch) is not int or not 0 <= pitch <= 127:
        pitch = _pitch(pitch)
        if pitch is None:
            return "invalid_pitch"
    start = raw.get("start")
    if type(start) is not float or not 0.0 <= start <= MAX_SECONDS:
        start = _seconds(start)
        if start is None:
            return "invalid_start"
    end = raw.get("end")
    if type(end) is not float or not 0.0 <= end <= MAX_SECONDS:
        end = _seconds(end)
        if end is None:
            return "invalid_end"
    if start > MAX_SECONDS or end > MAX_SECONDS:
        return "time_out_of_range"
    if end <= start:
        return "end_not_after_start"
    velocity = raw.get("velocity")
    if velocity is None:
        velocity = DEFAULT_VELOCITY
    elif type(velocity) is not float or not 0.0 <= velocity <= 1.0:
        velocity = _number(velocity)
        if velocity is None or not 0.0 <= velocity <= 1.0:
            return "invalid_velocity"
    return Note(pitch, start, end, velocity, max(1, round(velocity * 127)))


def _instrument(raw: Any, dropped: dict[str, int]) -> Instrument | None:
    if not isinstance(raw, Mapping):
        dropped["invalid_instrument"] = dropped.get("invalid_instrument", 0) + 1
        return None
    raw_notes = raw.get("notes")
    if raw_notes is None:
        raw_notes = []
    elif not isinstance(raw_notes, list):
        dropped["invalid_instrument"] = dropped.get("invalid_instrument", 0) + 1
        return None
    name = raw.get("name")
    notes: list[Note] = []
    append = notes.append
    for raw_note in raw_notes:
        note = _note(raw_note)
        if isinstance(note, str):
            dropped[note] = dropped.get(note, 0) + 1
        else:
            append(note)
    return Instrument(well_formed(name) if isinstance(name, str) else "", tuple(notes))


def normalize(payload: Mapping[str, Any]) -> NormalizedCallback:
    """The typed content of one callback body (already parsed from JSON), or of a
    ``record-info`` answer (its ``successFlag`` and ``midiData`` read the same way).

    Only a callback with ``code`` 200 carries notes; any other code is a failed task and
    a missing code an unknown one, both without instruments.
    """
    code = callback_code(payload)
    state: TaskState = "unknown" if code is None else ("complete" if code == 200 else "failed")
    dropped: dict[str, int] = {}
    instruments: list[Instrument] = []
    if state == "complete":
        data = result_data(payload)
        raw_instruments: Any = None
        if isinstance(data, Mapping):
            raw_instruments = data.get("instruments")
        elif data is not None:
            dropped["invalid_data"] = 1
        if isinstance(raw_instruments, list):
            for raw in raw_instruments:
                instrument = _instrument(raw, dropped)
                if instrument is not None:
                    instruments.append(instrument)
        elif raw_instruments is not None:
            dropped["invalid_instruments"] = 1
    return NormalizedCallback(
        state=state,
        code=code,
        msg=_text(callback_msg(payload)),
        provider_state=_text(callback_state(payload)),
        instruments=tuple(instruments),
        dropped={reason: dropped[reason] for reason in DROP_REASONS if reason in dropped},
    )
