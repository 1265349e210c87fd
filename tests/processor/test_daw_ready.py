"""The processor's files as a DAW reads them: the known-answer songs (devenv/songs.py) go
through ``process_callback``, and pretty_midi, which did not write them, computes their
beats and bar lines from the tempo and time-signature events."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pretty_midi
import pytest

from devenv import bar_grid
from devenv.songs import known_answer_suite, make_song
from services.processor.app import Processed, process_callback

TOLERANCE = 0.030  # seconds: a beat or bar line this close to the music's is on it


@dataclass(frozen=True)
class FileReading:
    seed: int
    true_bpm: float
    file_bpm: float
    estimated: bool
    beat_miss: float  # worst distance from a true beat to the file's nearest beat, s
    bar_miss: float  # worst distance from a true downbeat to the file's nearest bar line, s
    note_miss: float  # worst distance from a note's onset to the file's, s

    @property
    def right_tempo(self) -> bool:
        return self.estimated and abs(self.file_bpm / self.true_bpm - 1) <= 0.02


def worst(true: tuple[float, ...], found: np.ndarray, start: float, end: float) -> float:
    inside = [t for t in true if start <= t <= end]
    if not inside or not len(found):
        return float("inf")
    return max(float(np.min(np.abs(found - t))) for t in inside)


def onset_miss(sent: list[tuple[float, int]], read_back: list[tuple[float, int]]) -> float:
    """Worst distance from a sent onset to the file's nearest onset of that pitch (two
    same-pitch notes on one tick are one note in a file, so not a count comparison)."""
    by_pitch: dict[int, list[float]] = {}
    for start, pitch in read_back:
        by_pitch.setdefault(pitch, []).append(start)
    arrays = {pitch: np.array(starts) for pitch, starts in by_pitch.items()}
    return max(
        float(np.min(np.abs(arrays[pitch] - start))) if pitch in arrays else float("inf")
        for start, pitch in sent
    )


def read(seed_index: int) -> FileReading:
    spec = known_answer_suite()[seed_index]
    song = make_song(spec)
    processed = process_callback(song.body())
    assert isinstance(processed, Processed) and processed.midi and processed.tempo
    midi = pretty_midi.PrettyMIDI(io.BytesIO(processed.midi))
    # Onsets: an end may be cut short where the next same-pitch note starts (render stats).
    sent = sorted(
        (note.start, note.pitch)
        for instrument in processed.normalized.instruments
        for note in instrument.notes
    )
    read_back = sorted((n.start, n.pitch) for i in midi.instruments for n in i.notes)
    first, last = sent[0][0], sent[-1][0]
    return FileReading(
        seed=spec.seed,
        true_bpm=song.truth.bpm,
        file_bpm=processed.tempo.bpm,
        estimated=processed.tempo.estimated,
        beat_miss=worst(song.truth.beats, midi.get_beats(), first, last),
        bar_miss=worst(song.truth.downbeats, midi.get_downbeats(), first, last),
        note_miss=onset_miss(sent, read_back),
    )


@pytest.fixture(name="readings", scope="module")
def fixture_readings() -> list[FileReading]:
    return [read(index) for index in range(len(known_answer_suite()))]


class TestOnTheBarGrid:
    def test_most_files_carry_the_songs_own_tempo(self, readings: list[FileReading]) -> None:
        """The estimator's own tests hold it to its accuracy; here: the files do carry it
        (an octave off counts as a miss here, so the bar is lower than the estimator's)."""
        right = [r for r in readings if r.right_tempo]
        assert len(right) >= 0.85 * len(readings), [
            (r.seed, r.true_bpm, r.file_bpm) for r in readings if not r.right_tempo
        ]

    def test_beats_and_bar_lines_on_the_musics(self, readings: list[FileReading]) -> None:
        """Where the file has the song's tempo, every beat and every bar line a DAW draws
        is within 30 ms of the music's, through the whole song."""
        for reading in readings:
            if reading.right_tempo:
                assert reading.beat_miss <= TOLERANCE, reading
                assert reading.bar_miss <= TOLERANCE, reading

    def test_every_note_within_one_ms(self, readings: list[FileReading]) -> None:
        """Whatever the tempo map, the reader finds every onset where the provider put it."""
        for reading in readings:
            assert reading.note_miss <= 0.001, reading


def test_the_readmes_before_and_after_is_made_from_todays_files() -> None:
    """docs/images/bar-grid.svg is what devenv.bar_grid draws from the current code's files."""
    assert bar_grid.IMAGE.read_text() == bar_grid.render_svg(make_song(bar_grid.SONG).body()), (
        "run `python -m devenv.bar_grid` to update docs/images/bar-grid.svg"
    )
