"""PLACEHOLDER (lead's branch only, replaced by the beats helper's estimator at merge)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .normalize import Instrument


@dataclass(frozen=True, slots=True)
class TempoSection:
    start_seconds: float
    bpm: float


@dataclass(frozen=True, slots=True)
class BeatGrid:
    beats: tuple[float, ...]
    downbeat: int
    beats_per_bar: int
    sections: tuple[TempoSection, ...]
    bpm: float
    estimated: bool
    reason: str


def estimate_beats(instruments: Sequence[Instrument]) -> BeatGrid:
    onsets = sorted(note.start for instrument in instruments for note in instrument.notes)
    if len(onsets) < 8:
        return BeatGrid((), 0, 4, (), 120.0, False, "too_few_notes")
    period = 0.6
    first = onsets[0] % period
    count = int((onsets[-1] - first) / period) + 2
    beats = tuple(first + i * period for i in range(count))
    return BeatGrid(beats, 0, 4, (TempoSection(first, 100.0),), 100.0, True, "estimated")
