"""MIDI rendering: file structure, timing, programs and channels, overlaps, determinism."""

from __future__ import annotations

import io
import json
from fractions import Fraction

import mido
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import DeadLetter
from services.processor.app import process_callback
from services.processor.gm import GM_PROGRAM_NAMES
from services.processor.normalize import Instrument, NormalizedCallback, Note
from services.processor.render import (
    DRUM_CHANNEL,
    MAX_INSTRUMENTS,
    MELODIC_CHANNELS,
    layout_tracks,
    render_midi,
    render_midi_with_stats,
    seconds_to_ticks,
)

from .readers import merged_playback_problems, read_with_mido


def song(*instruments: tuple[str, list[tuple[int, float, float]]]) -> NormalizedCallback:
    return NormalizedCallback(
        state="complete",
        code=200,
        msg="success",
        provider_state="complete",
        instruments=tuple(
            Instrument(name, tuple(Note(p, s, e, 1.0, 127) for p, s, e in notes))
            for name, notes in instruments
        ),
    )


def track_messages(data: bytes, track: int) -> list[tuple[int, mido.Message]]:
    now, out = 0, []
    for message in mido.MidiFile(file=io.BytesIO(data)).tracks[track]:
        now += message.time
        out.append((now, message))
    return out


class TestStructure:
    def test_format_conductor_and_tracks(self) -> None:
        """Format 1, 960 ticks/quarter, conductor with 120 BPM and 4/4, a track per instrument."""
        read = read_with_mido(render_midi(song(("Violin", []), ("Drums", []), ("Cello", []))))
        assert read.file_type == 1 and read.ticks_per_quarter == 960
        assert read.tempos == [500_000] and read.time_signatures == [(4, 4)]
        assert read.names == ["Violin", "Drums", "Cello"]

    def test_no_instruments(self) -> None:
        """No instruments: a valid file with the conductor track only."""
        data = render_midi(song())
        midi = mido.MidiFile(file=io.BytesIO(data))
        assert len(midi.tracks) == 1 and data.startswith(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01")

    def test_unicode_names_are_utf8(self) -> None:
        """Track names are written as UTF-8."""
        read = read_with_mido(render_midi(song(("Guitare électrique ギター 🎸", []))))
        assert read.names == ["Guitare électrique ギター 🎸"]

    def test_program_change_at_start(self) -> None:
        """Each track starts with its name and a program change for its channel."""
        data = render_midi(song(("Electric Bass (finger)", [(40, 0.0, 1.0)])))
        (_, name), (tick, program), *_ = track_messages(data, 1)
        assert name.type == "track_name" and tick == 0
        assert (program.type, program.program, program.channel) == ("program_change", 33, 0)


class TestTiming:
    def test_reference_value(self) -> None:
        """7.6875 s is 14760 ticks exactly; 7.911458333333333 s is 15190."""
        assert seconds_to_ticks(7.6875) == 14760
        assert seconds_to_ticks(float("7.911458333333333")) == 15190

    def test_provider_grid_is_exact(self) -> None:
        """Every multiple of 1/192 s up to 20 minutes is exactly ten ticks per step."""
        for k in range(192 * 1200):
            assert seconds_to_ticks(k / 192) == 10 * k
            assert seconds_to_ticks(float(repr(k / 192))) == 10 * k

    def test_ties_round_half_up(self) -> None:
        """Exactly half a tick rounds up: 1/256 s is 7.5 ticks -> 8; 3/256 s -> 23."""
        assert seconds_to_ticks(1 / 256) == 8
        assert seconds_to_ticks(3 / 256) == 23

    @given(st.floats(min_value=0, max_value=86_400, allow_nan=False))
    def test_within_half_a_tick(self, seconds: float) -> None:
        """Any time lands within half a tick of its exact value; ties go up."""
        exact = Fraction(seconds) * 1920
        tick = seconds_to_ticks(seconds)
        assert abs(tick - exact) <= Fraction(1, 2)
        if abs(tick - exact) == Fraction(1, 2):
            assert tick > exact

    def test_short_note_lasts_one_tick(self) -> None:
        """A note shorter than half a tick still gets one tick."""
        read = read_with_mido(render_midi(song(("Violin", [(60, 1.0, 1.0001)]))))
        assert [(n.on, n.off) for n in read.notes] == [(1920, 1921)]


class TestChannels:
    def test_drums_on_channel_10(self) -> None:
        """Percussion goes to channel index 9, melodic instruments elsewhere."""
        layouts = layout_tracks(song(("Drums", []), ("Violin", []), ("drum kit", [])).instruments)
        assert [(lay.channel, lay.is_drum) for lay in layouts] == [(9, True), (0, False), (9, True)]

    def test_fifteen_melodic_get_their_own_channel(self) -> None:
        """Up to 15 melodic instruments: one channel each, never 9, even with equal programs."""
        names = ["Violin"] * 3 + list(GM_PROGRAM_NAMES[:12])
        layouts = layout_tracks(song(*((n, []) for n in names)).instruments)
        assert [lay.channel for lay in layouts] == list(MELODIC_CHANNELS)
        assert not any(lay.shares_channel_with_other_program for lay in layouts)

    def test_same_program_shares_past_fifteen(self) -> None:
        """Past 15 melodic instruments, equal programs share a channel."""
        names = ["Violin", "Cello", "violin", *GM_PROGRAM_NAMES[50:64]]
        layouts = layout_tracks(song(*((n, []) for n in names)).instruments)
        assert layouts[0].channel == layouts[2].channel
        assert len({lay.channel for lay in layouts}) == 15
        assert DRUM_CHANNEL not in {lay.channel for lay in layouts}

    def test_round_robin_past_fifteen_programs(self) -> None:
        """Past 15 distinct programs, programs take channels round-robin and are flagged."""
        names = list(GM_PROGRAM_NAMES[:20])
        layouts = layout_tracks(song(*((n, []) for n in names)).instruments)
        assert [lay.channel for lay in layouts] == [*MELODIC_CHANNELS, *MELODIC_CHANNELS[:5]]
        assert [lay.shares_channel_with_other_program for lay in layouts] == [True] * 5 + [
            False
        ] * 10 + [True] * 5

    def test_shared_channel_plays_each_track_with_its_program(self) -> None:
        """When two programs share a channel, merged playback hears each note with its own."""
        names = list(GM_PROGRAM_NAMES[:16])  # programs 0 and 15 share channel 0
        data = render_midi(
            song(*((n, [(40 + t, i * 0.5, i * 0.5 + 2.0) for i in range(4)])
                   for t, n in enumerate(names)))
        )  # fmt: skip
        midi = mido.MidiFile(file=io.BytesIO(data))
        merged = []  # what a sequencer plays: by tick, earlier tracks first at equal ticks
        for index, track in enumerate(midi.tracks[1:]):
            now = 0
            for position, message in enumerate(track):
                now += message.time
                merged.append((now, index, position, message))
        merged.sort(key=lambda item: item[:3])
        current: dict[int, int] = {}
        heard = []
        for _, index, _, message in merged:
            if message.type == "program_change":
                current[message.channel] = message.program
            elif message.type == "note_on":
                heard.append((index, current[message.channel]))
        assert len(heard) == 16 * 4
        assert all(program == index for index, program in heard)


class TestOverlaps:
    def test_same_pitch_overlap_in_a_track(self) -> None:
        """The earlier note ends where the next begins; nothing stuck or swallowed."""
        data = render_midi(song(("Violin", [(60, 0.0, 2.0), (60, 1.0, 1.5), (62, 0.0, 2.0)])))
        read = read_with_mido(data)
        assert read.problems == [] and merged_playback_problems(data) == []
        assert sorted((n.pitch, n.on, n.off) for n in read.notes) == [
            (60, 0, 1920),
            (60, 1920, 2880),
            (62, 0, 3840),
        ]

    def test_same_start_writes_the_longest_once(self) -> None:
        """Two same-pitch notes starting on one tick are one MIDI note: the longer."""
        data, stats = render_midi_with_stats(song(("Violin", [(60, 0.0, 1.0), (60, 0.0, 2.0)])))
        assert [(n.on, n.off) for n in read_with_mido(data).notes] == [(0, 3840)]
        assert stats.notes_merged == 1

    def test_offs_before_ons_at_equal_ticks(self) -> None:
        """A note-off and a note-on on the same tick: the off comes first."""
        data = render_midi(song(("Violin", [(60, 0.0, 1.0), (60, 1.0, 2.0), (64, 1.0, 2.0)])))
        at_one_second = [m.type for t, m in track_messages(data, 1) if t == 1920]
        assert at_one_second == ["note_off", "note_on", "note_on"]

    def test_across_tracks_sharing_a_channel(self) -> None:
        """Two drum tracks (one channel) overlapping on a pitch: merged playback stays clean."""
        data, stats = render_midi_with_stats(
            song(("Drums", [(36, 1.0, 3.0)]), ("Percussion", [(36, 0.0, 1.0), (36, 2.0, 4.0)]))
        )
        assert merged_playback_problems(data) == []
        read = read_with_mido(data)
        assert read.problems == []
        # The second track's first note hands over to the first track's note at 1 s: it
        # ends a tick early so that merged players see its off before the other's on.
        assert sorted((n.track, n.on, n.off) for n in read.notes) == [
            (0, 1920, 3840),
            (1, 0, 1919),
            (1, 3840, 7680),
        ]
        assert stats.notes_cut == 2

    def test_cut_to_nothing_is_not_written(self) -> None:
        """A one-tick note cut by a handover is left out and counted."""
        data, stats = render_midi_with_stats(
            song(("Drums", [(36, 1.0, 2.0)]), ("Percussion", [(36, 1.0 - 1 / 1920, 1.0)]))
        )
        assert merged_playback_problems(data) == []
        assert [(n.track, n.on) for n in read_with_mido(data).notes] == [(0, 1920)]
        assert stats.notes_merged == 1


class TestDeterminism:
    def test_same_input_same_bytes(self) -> None:
        """Rendering twice, or from an equal copy, gives identical bytes."""
        a = song(("Violin", [(60, 0.5, 1.0), (61, 0.25, 3.0)]), ("Drums", [(36, 0.0, 0.1)]))
        b = song(("Violin", [(60, 0.5, 1.0), (61, 0.25, 3.0)]), ("Drums", [(36, 0.0, 0.1)]))
        assert render_midi(a) == render_midi(a) == render_midi(b)

    def test_note_order_does_not_matter(self) -> None:
        """The file is time-ordered: the provider's note order does not change the bytes."""
        notes = [(60, 0.5, 1.0), (61, 0.25, 3.0), (60, 0.0, 0.5)]
        assert render_midi(song(("Violin", notes))) == render_midi(song(("Violin", notes[::-1])))

    @pytest.mark.parametrize("velocity", [0.0, 0.5, 1.0])
    def test_velocity_written(self, velocity: float) -> None:
        """The note-on carries the note's MIDI velocity."""
        midi_velocity = max(1, round(velocity * 127))
        callback = NormalizedCallback(
            "complete", 200, None, None,
            (Instrument("Violin", (Note(60, 0.0, 1.0, velocity, midi_velocity),)),),
        )  # fmt: skip
        assert [n.velocity for n in read_with_mido(render_midi(callback)).notes] == [midi_velocity]


class TestLimits:
    def test_too_many_instruments(self) -> None:
        """More instruments than a MIDI header can count is a clear error, not a bad file."""
        callback = song(*(("Violin", []) for _ in range(MAX_INSTRUMENTS + 1)))
        with pytest.raises(ValueError, match="at most 65534 instrument tracks"):
            render_midi(callback)

    def test_time_beyond_the_tick_range(self) -> None:
        """A time normalization would have dropped is refused, not wrapped around."""
        with pytest.raises(ValueError, match="beyond what the file can place"):
            render_midi(song(("Violin", [(60, 1.0, 200_000.0)])))

    def test_service_dead_letters_what_cannot_be_rendered(self) -> None:
        """process_callback turns it into a dead letter with reason unrenderable."""
        body = json.dumps(
            {"task_id": "t", "code": 200, "data": {"instruments": [{}] * (MAX_INSTRUMENTS + 1)}}
        ).encode()
        with pytest.raises(DeadLetter) as caught:
            process_callback(body)
        assert caught.value.reason == "unrenderable"
