"""An instrument's notes as numpy columns, built once and shared by the array code.

The tempo estimate and the renderer both work on arrays; reading 100 000 Note objects into
columns costs each of them more than its own arithmetic. The columns are built once per
instrument (by the fast decoder, which has them anyway, or on first use) and kept on the
instrument, so parsing happens once and the typed value is passed on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .normalize import Instrument

__all__ = ["NoteColumns", "note_columns"]


@dataclass(frozen=True, slots=True)
class NoteColumns:
    """The fields of an instrument's notes, one array each, in the notes' order."""

    pitch: npt.NDArray[np.int64]
    start: npt.NDArray[np.float64]
    end: npt.NDArray[np.float64]
    velocity: npt.NDArray[np.float64]
    midi_velocity: npt.NDArray[np.int64]

    def slice(self, begin: int, end: int) -> NoteColumns:
        """Notes ``begin`` to ``end`` (views, not copies)."""
        return NoteColumns(
            self.pitch[begin:end],
            self.start[begin:end],
            self.end[begin:end],
            self.velocity[begin:end],
            self.midi_velocity[begin:end],
        )


def note_columns(instrument: Instrument) -> NoteColumns:
    """``instrument``'s notes as columns: the ones it carries, else built and kept."""
    columns = instrument.columns
    if isinstance(columns, NoteColumns):
        return columns
    notes = instrument.notes
    count = len(notes)
    columns = NoteColumns(
        pitch=np.fromiter((note.pitch for note in notes), np.int64, count),
        start=np.fromiter((note.start for note in notes), np.float64, count),
        end=np.fromiter((note.end for note in notes), np.float64, count),
        velocity=np.fromiter((note.velocity for note in notes), np.float64, count),
        midi_velocity=np.fromiter((note.midi_velocity for note in notes), np.int64, count),
    )
    # A cache, not state: equality, hashing and repr ignore it, and every value it holds
    # is derived from ``notes``, which is immutable.
    object.__setattr__(instrument, "columns", columns)
    return columns
