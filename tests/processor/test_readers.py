"""Proof by independent readers: mido and symusic read our files note for note.

Over the provider's examples (expected notes computed straight from their JSON) and over
hypothesis-generated callbacks, adversarial ones included: string times, huge and
negative values, same-pitch overlaps, zero-length notes, unicode names, 20+ instruments,
empty instruments.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.events import CallbackEvent
from services.processor.gm import GM_PROGRAM_NAMES, PERCUSSION_NAMES, sound_for
from services.processor.normalize import normalize
from services.processor.notes_event import notes_record
from services.processor.render import render_midi_with_stats

from .readers import (
    comparable_from_mido,
    merged_playback_problems,
    read_with_mido,
    read_with_symusic,
)

EVENT = CallbackEvent("gen", datetime(2026, 1, 1, tzinfo=UTC), b"{}", "0" * 64)


def exact_tick(seconds: float) -> Fraction:
    return Fraction(seconds) * 1920


def nearest_tick(value: Any) -> int:
    """Half-up rounding of the exact value: the tests' own, independent conversion."""
    return int((exact_tick(float(value)) + Fraction(1, 2)) // 1)


class TestReferenceExamples:
    def test_note_for_note(self, reference_examples: dict[str, bytes]) -> None:
        """Both readers find exactly the notes of the JSON, ticks exact on the 1/192 grid."""
        for name in ("success-task-id-top-level", "success-task-id-in-data"):
            payload = json.loads(reference_examples[name])
            expected = []
            for instrument in payload["data"]["instruments"]:
                drum = instrument["name"] == "Drums"
                program = 0 if drum else GM_PROGRAM_NAMES.index(instrument["name"])
                for note in instrument["notes"]:
                    on, off = nearest_tick(note["start"]), nearest_tick(note["end"])
                    assert Fraction(on) == exact_tick(float(note["start"])) or abs(
                        on - exact_tick(float(note["start"]))
                    ) < Fraction(1, 10**6)  # on the 1/192 s grid: exact up to float noise
                    expected.append(
                        (instrument["name"], drum, note["pitch"], on, off, 127, program)
                    )
            data, _ = render_midi_with_stats(normalize(payload))
            mido_read = read_with_mido(data)
            assert mido_read.problems == [] and merged_playback_problems(data) == []
            assert comparable_from_mido(mido_read) == sorted(expected)
            ticks_per_quarter, symusic_notes = read_with_symusic(data)
            assert ticks_per_quarter == mido_read.ticks_per_quarter == 960
            assert symusic_notes == sorted(expected)
            channels = {(n.track, n.channel) for n in mido_read.notes}
            assert channels == {(0, 9), (1, 0)}
            assert (7.6875, 14760) in {(7.6875, n.on) for n in mido_read.notes}


# --- generated callbacks ----------------------------------------------------------------

NAMES = st.one_of(
    st.sampled_from(GM_PROGRAM_NAMES),
    st.sampled_from(GM_PROGRAM_NAMES).map(lambda n: n.lower().replace(" ", "")),
    st.sampled_from(PERCUSSION_NAMES),
    st.sampled_from(["", "Unknown Synth", "Guitare électrique", "ギター", "🎸 lead", "a\x00b"]),
    st.text(max_size=12),
)
GRID = st.integers(min_value=0, max_value=192 * 30).map(lambda k: k / 192)
GOOD_TIME = st.one_of(
    GRID,
    GRID.map(repr),
    st.floats(min_value=0, max_value=40, allow_nan=False),
    st.floats(min_value=0, max_value=40, allow_nan=False).map(str),
    st.integers(min_value=0, max_value=40),
    st.sampled_from([86_399.99, 0.0001, 1 / 256]),
)
BAD_TIME = st.sampled_from(
    [-1, "-0.5", "abc", "", "nan", "inf", "1e400", 1e300, 10**400, None, True, [], "1_0"]
)
PITCH = st.one_of(
    st.sampled_from([36, 60, 61]),  # few pitches: plenty of same-pitch overlaps
    st.integers(min_value=0, max_value=127),
    st.sampled_from([60.0, "60", "61.0"]),
)
BAD_PITCH = st.sampled_from([-1, 128, 60.5, "C4", None, False, 1e300])
VELOCITY = st.one_of(
    st.floats(min_value=0, max_value=1),
    st.sampled_from([1, 0, "0.5", None]),
)
BAD_VELOCITY = st.sampled_from([1.5, -0.2, 127, "loud"])


@st.composite
def raw_notes(draw: st.DrawFn) -> Any:
    roll = draw(st.integers(min_value=0, max_value=19))
    note: dict[str, Any] = {
        "pitch": draw(BAD_PITCH if roll == 0 else PITCH),
        "start": draw(BAD_TIME if roll == 1 else GOOD_TIME),
        "end": draw(BAD_TIME if roll == 2 else GOOD_TIME),
    }
    if roll == 3:
        note["end"] = note["start"]  # zero length
    if roll == 4:
        note["velocity"] = draw(BAD_VELOCITY)
    elif roll != 5:
        note["velocity"] = draw(VELOCITY)
    if roll == 6:
        return draw(st.sampled_from([None, 7, "note", [1, 2]]))
    return note


@st.composite
def callbacks(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.one_of(st.integers(0, 4), st.integers(15, 24)))
    instruments = [
        {"name": draw(NAMES), "notes": draw(st.lists(raw_notes(), max_size=12))}
        for _ in range(count)
    ]
    return {"task_id": "gen", "code": 200, "msg": "success", "data": {"instruments": instruments}}


def check_file(payload: dict[str, Any]) -> None:
    normalized = normalize(payload)
    sent = sum(len(i["notes"]) for i in payload["data"]["instruments"])
    assert normalized.note_count + normalized.dropped_count == sent

    data, stats = render_midi_with_stats(normalized)
    mido_read = read_with_mido(data)
    event = notes_record(EVENT, normalized, None, EVENT.received_at, rendered=data, tempo=None)
    melodic = [i for i in event["instruments"] if not i["is_drum"]]
    assert all(i["channel"] != 9 for i in melodic)
    if len(melodic) <= 15:
        assert len({i["channel"] for i in melodic}) == len(melodic)
    assert mido_read.problems == []
    assert merged_playback_problems(data) == []
    assert mido_read.names == [i.name for i in normalized.instruments]

    # The two readers agree with each other, note for note.
    _, symusic_notes = read_with_symusic(data)
    assert comparable_from_mido(mido_read) == symusic_notes

    # Every note read is a kept note: same track, pitch, velocity, start within half a
    # tick; its end is the note's own (within half a tick, at least one tick) unless it was
    # cut where the next same-pitch note on its channel starts (a tick early on handover).
    assert len(mido_read.notes) == normalized.note_count - stats.notes_merged
    starts = Counter((n.channel, n.pitch, n.on) for n in mido_read.notes)
    assert max(starts.values(), default=1) == 1
    for read in mido_read.notes:
        instrument = normalized.instruments[read.track]
        sound = sound_for(instrument.name)
        assert (read.channel == 9) == sound.is_drum
        assert read.program == sound.program
        # The event says what the file holds.
        described = event["instruments"][read.track]
        assert (described["program"], described["channel"]) == (read.program, read.channel)
        assert described["is_drum"] == (read.channel == 9)
        candidates = [
            note
            for note in instrument.notes
            if note.pitch == read.pitch
            and abs(read.on - exact_tick(note.start)) <= Fraction(1, 2)
            and note.midi_velocity == read.velocity
        ]
        assert candidates, f"no kept note for {read}"
        own_end = max(nearest_tick(c.end) for c in candidates)
        assert read.off > read.on
        if read.off < max(own_end, read.on + 1):
            assert (read.channel, read.pitch, read.off) in starts or (
                read.channel, read.pitch, read.off + 1) in starts  # fmt: skip
        else:
            assert read.off == max(own_end, read.on + 1)


class TestGenerated:
    @settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(callbacks())
    def test_readers_agree_with_what_was_sent(self, payload: dict[str, Any]) -> None:
        """Generated callbacks, adversarial ones included, read back note for note."""
        check_file(payload)

    @settings(max_examples=25, deadline=None)
    @given(st.integers(min_value=20, max_value=30), st.data())
    def test_many_instruments(self, count: int, data: st.DataObject) -> None:
        """20+ instruments (programs sharing channels) still read back note for note."""
        instruments = [
            {"name": GM_PROGRAM_NAMES[(i * 7) % 128] if i % 5 else "Drums",
             "notes": data.draw(st.lists(raw_notes(), min_size=1, max_size=8))}
            for i in range(count)
        ]  # fmt: skip
        check_file({"task_id": "t", "code": 200, "data": {"instruments": instruments}})
