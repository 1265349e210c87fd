"""The tempo map: beats on quarters, bars on downbeats, every note within 1 ms, as read."""

from __future__ import annotations

import io
import math

import pretty_midi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.processor import tempo_map
from services.processor.beats import BeatGrid, TempoSection
from services.processor.normalize import Instrument, NormalizedCallback, Note
from services.processor.render import grid_step, render_midi
from services.processor.tempo_map import (
    MAX_BEAT_DRIFT_US,
    TICKS_PER_QUARTER,
    TempoMap,
    default_map,
    estimate_map,
    from_beats,
)

from .readers import merged_playback_problems, read_with_mido

QUARTER = TICKS_PER_QUARTER


def grid(first: float, bpm: float, count: int) -> list[float]:
    return [first + index * 60 / bpm for index in range(count)]


def song(notes: list[tuple[int, float, float]], name: str = "Piano") -> NormalizedCallback:
    return NormalizedCallback(
        state="complete",
        code=200,
        msg="success",
        provider_state="complete",
        instruments=(Instrument(name, tuple(Note(p, s, e, 0.8, 102) for p, s, e in notes)),),
    )


def read_times(data: bytes) -> list[tuple[float, float]]:
    """Note times in seconds as pretty_midi computes them from the file's tempo events."""
    midi = pretty_midi.PrettyMIDI(io.BytesIO(data))
    return sorted((n.start, n.end) for i in midi.instruments for n in i.notes)


class TestDefault:
    def test_120_bpm_four_four_from_zero(self) -> None:
        """Not estimated: one tempo of 500 000 us a quarter, 4/4 at tick 0, and why."""
        tempo = default_map("too_few_notes")
        assert [(c.tick, c.microseconds_per_quarter) for c in tempo.changes] == [(0, 500_000)]
        assert [(s.tick, s.numerator, s.denominator) for s in tempo.time_signatures] == [(0, 4, 4)]
        assert (tempo.bpm, tempo.estimated, tempo.reason) == (120.0, False, "too_few_notes")

    def test_default_file_is_unchanged(self) -> None:
        """The renderer's default map is 120 BPM: 1920 ticks a second, as before tempo maps."""
        data = render_midi(song([(60, 1.0, 2.0)]))
        read = read_with_mido(data)
        assert read.tempos == [500_000] and read.time_signatures == [(4, 4)]
        assert [(n.on, n.off) for n in read.notes] == [(1920, 3840)]


class TestBeatsOnQuarters:
    @pytest.mark.parametrize("bpm", [40.0, 61.3, 97.0, 128.0, 174.5, 240.0])
    @pytest.mark.parametrize("first_share", [0.0, 0.1, 0.4, 0.9])
    def test_every_beat_is_a_quarter_line(self, bpm: float, first_share: float) -> None:
        """Quarter k of the file is the music's beat k (within the drift bound); a steady beat
        needs at most a lead-in tempo and one more."""
        beats = grid(first_share * 60 / bpm, bpm, 300)
        tempo = from_beats(beats, downbeat=0, beats_per_bar=4, bpm=bpm)
        lines = [tempo.to_seconds(k * QUARTER) for k in range(310)]
        offset = 0 if beats[0] == 0 or first_share < 0.25 else 1  # a lead-in quarter
        merged = beats[0] > 0 and not offset  # the first beat is tick 0
        drift = [abs(lines[k + offset] - b) for k, b in enumerate(beats) if k or not merged]
        assert max(drift) * 1e6 <= MAX_BEAT_DRIFT_US + 1
        assert len(tempo.changes) <= 2

    def test_a_steady_grid_is_one_or_two_tempo_events(self) -> None:
        """A lead-in quarter of its own, then one tempo for 600 beats (a whole number of us
        a quarter drifts by up to 0.5 us a beat: a new event is due every ~1000 beats)."""
        tempo = from_beats(grid(0.3, 97.0, 600), downbeat=0, beats_per_bar=4, bpm=97.0)
        assert [c.tick for c in tempo.changes] == [0, QUARTER]
        assert tempo.changes[1].microseconds_per_quarter == round(60e6 / 97.0)

    def test_a_first_beat_near_zero_stretches_the_first_quarter(self) -> None:
        """0.05 s before a 0.5 s beat: the first quarter spans 0-0.55 s, then 120 BPM."""
        tempo = from_beats(grid(0.05, 120.0, 40), downbeat=0, beats_per_bar=4, bpm=120.0)
        assert [(c.tick, c.microseconds_per_quarter) for c in tempo.changes] == [
            (0, 550_000),
            (QUARTER, 500_000),
        ]

    def test_a_tempo_change(self) -> None:
        """120 then 150 BPM: the change is written where the beats change, beats stay on."""
        first = grid(0.0, 120.0, 40)
        beats = first + [first[-1] + 0.4 * (k + 1) for k in range(60)]
        tempo = from_beats(beats, downbeat=0, beats_per_bar=4, bpm=150.0)
        assert [(c.tick, round(c.bpm, 6)) for c in tempo.changes] == [
            (0, 120.0),
            (39 * QUARTER, 150.0),
        ]
        assert all(tempo.to_ticks(b) == k * QUARTER for k, b in enumerate(beats))

    def test_jitter_drift_stays_under_the_bound(self) -> None:
        """Beats that wander: a tempo event only where a beat would be off by > 0.5 ms."""
        beats = [0.0]
        for k in range(400):
            beats.append(beats[-1] + 0.5 + (0.0004 if (k // 50) % 2 else -0.0004))
        tempo = from_beats(beats, downbeat=0, beats_per_bar=4, bpm=120.0)
        for k, beat in enumerate(beats):
            file_beat = tempo.to_seconds(k * QUARTER)
            assert abs(file_beat - beat) * 1e6 <= MAX_BEAT_DRIFT_US + 1
        assert len(tempo.changes) < 60


class TestBars:
    @pytest.mark.parametrize(
        ("downbeat", "first", "pickup", "bars"),
        [
            (0, 0.0, None, [0.0, 2.4, 4.8]),
            (2, 0.0, 2, [0.0, 1.2, 3.6]),  # two beats before the first downbeat
            (1, 0.3, 2, [0.0, 0.9, 3.3]),  # a lead-in quarter (0-0.3 s), then one beat
            (3, 0.3, None, [0.0, 2.1, 4.5]),  # lead-in + three beats: a whole first bar
            (0, 0.05, None, [0.0, 2.45, 4.85]),  # the first beat merges into tick 0
            (2, 0.05, 2, [0.0, 1.25, 3.65]),  # the merged first beat counts as one
        ],
    )
    def test_bar_two_starts_on_the_first_downbeat(
        self, downbeat: int, first: float, pickup: int | None, bars: list[float]
    ) -> None:
        """Beats before the first downbeat make a pickup bar; every later bar starts on a
        music downbeat (100 BPM: a beat is 0.6 s)."""
        beats = grid(first, 100.0, 64)
        tempo = from_beats(beats, downbeat=downbeat, beats_per_bar=4, bpm=100.0)
        signatures = [(s.numerator, s.denominator) for s in tempo.time_signatures]
        assert signatures == ([(4, 4)] if pickup is None else [(pickup, 4), (4, 4)])
        lines = [tempo.to_seconds(t) for t in tempo.bar_ticks(tempo.to_ticks(beats[-1]))]
        assert lines[:3] == pytest.approx(bars, abs=1e-3)
        later = [b for b in beats[downbeat::4] if b > bars[1] - 1e-3]
        assert lines[1 : 1 + len(later)] == pytest.approx(later, abs=1e-3)

    def test_three_four(self) -> None:
        tempo = from_beats(grid(0.0, 90.0, 30), downbeat=0, beats_per_bar=3, bpm=90.0)
        assert [(s.numerator, s.denominator) for s in tempo.time_signatures] == [(3, 4)]
        assert tempo.bar_ticks(9 * QUARTER) == [0, 3 * QUARTER, 6 * QUARTER, 9 * QUARTER]


class TestNotesStayPut:
    @settings(max_examples=60, deadline=None)
    @given(
        bpm=st.floats(min_value=40, max_value=240),
        first=st.floats(min_value=0, max_value=0.99),
        change=st.floats(min_value=0.7, max_value=1.4),
        starts=st.lists(st.floats(min_value=0, max_value=120), min_size=1, max_size=40),
    )
    def test_within_one_ms_as_pretty_midi_reads_it(
        self, bpm: float, first: float, change: float, starts: list[float]
    ) -> None:
        """Whatever the tempo map, each note is within 1 ms of its seconds in the file."""
        period = 60 / bpm
        beats = grid(first * period, bpm, 120)
        later = min(240.0, max(40.0, bpm * change))
        beats += [beats[-1] + (k + 1) * 60 / later for k in range(200)]
        tempo = from_beats(beats, downbeat=1, beats_per_bar=4, bpm=bpm)
        # A pitch per note: no same-pitch overlap is cut or merged (render.py's own rules,
        # tested elsewhere), so every note must come back, both ends within 1 ms.
        notes = [(30 + k, s, s + 0.25) for k, s in enumerate(starts)]
        data = render_midi(song(notes), tempo)
        expected = sorted((s, e) for _, s, e in notes)
        got = read_times(data)
        assert len(got) == len(expected)
        for (s, e), (rs, re) in zip(expected, got, strict=True):
            assert abs(rs - s) <= 0.001 and abs(re - e) <= 0.001 + 1e-9
        assert merged_playback_problems(data) == []

    def test_to_ticks_ties_round_up(self) -> None:
        tempo = default_map("x")
        assert tempo.to_ticks(1 / 256) == 8 and tempo.to_ticks(3 / 256) == 23


class TestRefused:
    def test_not_ascending(self) -> None:
        with pytest.raises(ValueError, match="ascend"):
            from_beats([0.0, 1.0, 1.0], downbeat=0, beats_per_bar=4, bpm=60)

    def test_too_slow_for_one_ms(self) -> None:
        """A beat of 2 s (30 BPM) would make half a tick more than 1 ms."""
        with pytest.raises(ValueError, match="slower"):
            from_beats([0.0, 2.0, 4.0], downbeat=0, beats_per_bar=4, bpm=30)

    def test_map_must_start_at_zero(self) -> None:
        good = default_map("x")
        with pytest.raises(ValueError, match="tick 0"):
            TempoMap(good.changes[:0], good.time_signatures, 120.0, False, "x")


class TestEstimateMap:
    def grid_of(self, beats: list[float], bpm: float, *, estimated: bool = True) -> BeatGrid:
        return BeatGrid(
            beats=tuple(beats),
            downbeat=0,
            beats_per_bar=4,
            sections=(TempoSection(beats[0] if beats else 0.0, bpm),),
            bpm=bpm,
            estimated=estimated,
            reason="estimated" if estimated else "too_few_notes",
        )

    def test_not_estimated_says_why(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(
            tempo_map, "estimate_beats", lambda _: self.grid_of([], 120.0, estimated=False)
        )
        tempo = estimate_map(song([(60, 0.0, 1.0)]).instruments)
        assert (tempo.estimated, tempo.reason, tempo.bpm) == (False, "too_few_notes", 120.0)

    def test_unusable_beats_fall_back(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(
            tempo_map, "estimate_beats", lambda _: self.grid_of([0.0, 3.0, 6.0], 20.0)
        )
        tempo = estimate_map(song([(60, 0.0, 1.0)]).instruments)
        assert (tempo.estimated, tempo.reason) == (False, "unusable_beats")

    def test_too_long_for_the_file_falls_back(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """At 240 BPM a note at 20 hours is past 2**28 ticks: the file says 120 BPM instead."""
        monkeypatch.setattr(
            tempo_map, "estimate_beats", lambda _: self.grid_of(grid(0.0, 240.0, 8), 240.0)
        )
        tempo = estimate_map(song([(60, 0.0, 1.0), (60, 72_000.0, 72_001.0)]).instruments)
        assert (tempo.estimated, tempo.reason) == (False, "too_long")
        render_midi(song([(60, 72_000.0, 72_001.0)]), tempo)


class TestQuantized:
    @pytest.mark.parametrize("grid_name", ["1/8", "1/16", "1/16t", "1/32"])
    def test_every_note_on_the_grid(self, grid_name: str) -> None:
        """Ons and offs on grid lines of the same map; no note lost or stuck."""
        bpm = 93.0
        tempo = from_beats(grid(0.21, bpm, 200), downbeat=1, beats_per_bar=4, bpm=bpm)
        notes = [
            (48 + k % 24, 0.3 + k * 0.173, 0.3 + k * 0.173 + 0.05 + (k % 5) * 0.11)
            for k in range(300)
        ]
        exact = render_midi(song(notes), tempo)
        snapped = render_midi(song(notes), tempo, grid=grid_name)
        step = grid_step(grid_name)
        read = read_with_mido(snapped)
        assert read.notes and all(n.on % step == 0 and n.off % step == 0 for n in read.notes)
        assert read.tempos == read_with_mido(exact).tempos
        assert merged_playback_problems(snapped) == []
        assert len(read.notes) >= len(notes) * 0.9

    def test_snaps_to_nearest(self) -> None:
        """At 120 BPM a sixteenth is 0.125 s: 0.06 s -> 0, 0.07 s -> 0.125 s, 0.2 s -> 0.25 s."""
        tempo = default_map("x")
        data = render_midi(song([(60, 0.06, 0.2), (62, 0.07, 0.2)]), tempo, grid="1/16")
        assert sorted((n.pitch, n.on, n.off) for n in read_with_mido(data).notes) == [
            (60, 0, 480),
            (62, 240, 480),
        ]

    @pytest.mark.parametrize("bad", ["1/7", "2/4", "sixteenth", "1/0"])
    def test_bad_grid(self, bad: str) -> None:
        with pytest.raises(ValueError, match="grid"):
            grid_step(bad)

    def test_a_short_note_keeps_one_step(self) -> None:
        data = render_midi(song([(60, 1.0, 1.01)]), default_map("x"), grid="1/16")
        assert [(n.on, n.off) for n in read_with_mido(data).notes] == [(1920, 2160)]


def test_bpm_property() -> None:
    tempo = from_beats(grid(0.0, 133.0, 10), downbeat=0, beats_per_bar=4, bpm=133.0)
    assert math.isclose(tempo.changes[0].bpm, 133.0, rel_tol=1e-5)
