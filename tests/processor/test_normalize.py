"""Normalization: every rule of docs/processing.md, one test each."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from services.common.callback import callback_kind
from services.processor.normalize import (
    DEFAULT_VELOCITY,
    DROP_REASONS,
    MAX_SECONDS,
    Note,
    normalize,
)
from services.processor.render import render_midi


def callback(*notes: Any, name: Any = "Violin", **top: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "task_id": "t-1",
        "code": 200,
        "msg": "success",
        "data": {"state": "complete", "instruments": [{"name": name, "notes": list(notes)}]},
    }
    payload.update(top)
    return payload


def only_note(payload: dict[str, Any]) -> Note:
    result = normalize(payload)
    assert result.dropped == {}
    (instrument,) = result.instruments
    (note,) = instrument.notes
    return note


def dropped(raw_note: Any) -> dict[str, int]:
    result = normalize(callback(raw_note))
    assert result.note_count == 0
    return dict(result.dropped)


class TestReferenceExamples:
    def test_both_success_shapes_give_the_same_notes(
        self, reference_examples: dict[str, bytes]
    ) -> None:
        """Shape A and shape B normalize to the same typed notes, nothing dropped."""
        a = normalize(json.loads(reference_examples["success-task-id-top-level"]))
        b = normalize(json.loads(reference_examples["success-task-id-in-data"]))
        assert a.instruments == b.instruments
        assert a.state == b.state == "complete"
        assert a.dropped == {} and a.note_count == 6
        assert [i.name for i in a.instruments] == ["Drums", "Electric Bass (finger)"]
        first = a.instruments[0].notes[0]
        assert first == Note(73, 0.036458333333333336, 0.18229166666666666, 1.0, 127)

    @pytest.mark.parametrize("name", ["failure-data-null", "failure-task-id-in-data"])
    def test_failure_shapes(self, reference_examples: dict[str, bytes], name: str) -> None:
        """code 500 is a failed task with its code and msg, and no instruments."""
        result = normalize(json.loads(reference_examples[name]))
        assert result.state == "failed"
        assert (result.code, result.msg) == (500, "MIDI generation failed")
        assert result.instruments == () and result.dropped == {}


class TestTaskState:
    def test_non_200_ignores_instruments(self) -> None:
        """A failed task carries no notes even if the body has some."""
        result = normalize(callback({"pitch": 60, "start": 0, "end": 1}, code=429, msg="busy"))
        assert (result.state, result.code, result.msg) == ("failed", 429, "busy")
        assert result.instruments == ()

    def test_missing_code_is_unknown(self) -> None:
        """No code at all: state unknown, no notes."""
        payload = callback({"pitch": 60, "start": 0, "end": 1})
        del payload["code"]
        result = normalize(payload)
        assert result.state == "unknown" and result.code is None and result.instruments == ()

    def test_numeric_string_code(self) -> None:
        """A code sent as "200" is still success."""
        assert normalize(callback(code="200")).state == "complete"

    def test_provider_state_is_kept(self) -> None:
        """data.state is passed through as provider_state."""
        assert normalize(callback()).provider_state == "complete"


class TestEmptyResults:
    @pytest.mark.parametrize(
        "data",
        [None, {}, {"instruments": None}, {"instruments": []}],
        ids=["data-null", "instruments-missing", "instruments-null", "instruments-empty"],
    )
    def test_nothing_detected_is_valid(self, data: Any) -> None:
        """A success without instruments is a valid, empty result, not an error."""
        result = normalize({"task_id": "t", "code": 200, "data": data})
        assert result.state == "complete"
        assert result.instruments == () and result.dropped == {}

    def test_instrument_with_no_notes_is_kept(self) -> None:
        """An instrument with an empty (or missing) notes list stays, as an empty track."""
        payload = callback()
        payload["data"]["instruments"].append({"name": "Flute"})
        result = normalize(payload)
        assert [(i.name, i.notes) for i in result.instruments] == [("Violin", ()), ("Flute", ())]
        assert result.dropped == {}


class TestTimes:
    @pytest.mark.parametrize(
        ("raw", "parsed"),
        [
            (7.6875, 7.6875),
            (7, 7.0),
            ("7.911458333333333", 7.911458333333333),
            (" 1.5 ", 1.5),
            ("+2", 2.0),
            ("1e-3", 0.001),
            (".5", 0.5),
            (0, 0.0),
            ("-0", 0.0),
        ],
    )
    def test_numbers_and_numeric_strings(self, raw: Any, parsed: float) -> None:
        """start accepts numbers and numeric strings, kept exactly as parsed."""
        note = only_note(callback({"pitch": 60, "start": raw, "end": 100}))
        assert note.start == parsed

    @pytest.mark.parametrize(
        "raw",
        ["abc", "", "inf", "NaN", "1_000", "0x10", "١٢", "1e400", 10**400, None, True, [1], {}],
    )
    def test_unparsable_or_non_finite_start(self, raw: Any) -> None:
        """Unparsable, non-finite (incl. overflowing) or non-number starts are dropped."""
        assert dropped({"pitch": 60, "start": raw, "end": 5}) == {"invalid_start": 1}

    def test_non_finite_float_end(self) -> None:
        """JSON's 1e400 parses to inf: dropped as an invalid end."""
        raw = json.loads('{"pitch": 60, "start": 0, "end": 1e400}')
        assert math.isinf(raw["end"])
        assert dropped(raw) == {"invalid_end": 1}

    @pytest.mark.parametrize("raw", [-0.001, "-1", -5])
    def test_negative(self, raw: Any) -> None:
        """Negative times are dropped."""
        assert dropped({"pitch": 60, "start": 1, "end": raw}) == {"invalid_end": 1}

    def test_missing_end(self) -> None:
        """A note without end is dropped."""
        assert dropped({"pitch": 60, "start": 1}) == {"invalid_end": 1}

    @pytest.mark.parametrize(("start", "end"), [(1, 1), ("2.5", 2.5), (3, 2)])
    def test_end_not_after_start(self, start: Any, end: Any) -> None:
        """end <= start is dropped."""
        assert dropped({"pitch": 60, "start": start, "end": end}) == {"end_not_after_start": 1}

    def test_beyond_max_seconds(self) -> None:
        """Times past MAX_SECONDS (24 h) cannot be written to a MIDI file: dropped."""
        assert dropped({"pitch": 60, "start": 1, "end": MAX_SECONDS + 1}) == {
            "time_out_of_range": 1
        }
        assert only_note(callback({"pitch": 60, "start": 1, "end": MAX_SECONDS})).end == MAX_SECONDS


class TestPitch:
    @pytest.mark.parametrize(("raw", "pitch"), [(0, 0), (127, 127), (44.0, 44), ("44", 44),
                                                ("44.0", 44), ("4.4e1", 44)])  # fmt: skip
    def test_integral_values(self, raw: Any, pitch: int) -> None:
        """Integers, integral floats and numeric strings are accepted."""
        assert only_note(callback({"pitch": raw, "start": 0, "end": 1})).pitch == pitch

    @pytest.mark.parametrize("raw", [-1, 128, 44.5, "44.5", "C4", None, True, 10**30, "nan"])
    def test_invalid(self, raw: Any) -> None:
        """Non-integral, out of 0..127, booleans and non-numbers are dropped."""
        assert dropped({"pitch": raw, "start": 0, "end": 1}) == {"invalid_pitch": 1}

    def test_missing(self) -> None:
        """A note without pitch is dropped."""
        assert dropped({"start": 0, "end": 1}) == {"invalid_pitch": 1}


class TestVelocity:
    @pytest.mark.parametrize(
        ("raw", "midi"),
        [(1, 127), (1.0, 127), (0.5, 64), (0.1, 13), ("0.25", 32), (0, 1), (0.001, 1)],
    )
    def test_scaled_to_midi(self, raw: Any, midi: int) -> None:
        """round(v * 127), at least 1; the provider's value is kept as parsed."""
        note = only_note(callback({"pitch": 60, "start": 0, "end": 1, "velocity": raw}))
        assert note.midi_velocity == midi
        assert note.velocity == float(raw)

    @pytest.mark.parametrize("note", [{}, {"velocity": None}])
    def test_missing_uses_default(self, note: dict[str, Any]) -> None:
        """An absent or null velocity is DEFAULT_VELOCITY (1.0, MIDI 127)."""
        result = only_note(callback({"pitch": 60, "start": 0, "end": 1, **note}))
        assert (result.velocity, result.midi_velocity) == (DEFAULT_VELOCITY, 127)

    @pytest.mark.parametrize("raw", [1.01, -0.1, 100, "loud", "inf", True, [1]])
    def test_invalid_is_dropped(self, raw: Any) -> None:
        """Out-of-range or unparsable velocities drop the note (no silent clamping)."""
        assert dropped({"pitch": 60, "start": 0, "end": 1, "velocity": raw}) == {
            "invalid_velocity": 1
        }


class TestDropAccounting:
    def test_first_failing_rule_counts(self) -> None:
        """A note failing several rules is counted once, under the first in DROP_REASONS."""
        assert dropped({"pitch": 999, "start": "x", "end": -1, "velocity": 7}) == {
            "invalid_pitch": 1
        }

    def test_structures(self) -> None:
        """Non-object notes and instruments, and non-list notes, are counted too."""
        payload = callback(1, "note", {"pitch": 60, "start": 0, "end": 1})
        payload["data"]["instruments"] += [None, "Piano", {"name": "Flute", "notes": {"a": 1}}]
        result = normalize(payload)
        assert result.dropped == {"invalid_instrument": 3, "invalid_note": 2}
        assert result.note_count == 1

    @pytest.mark.parametrize(
        ("data", "reason"),
        [("oops", "invalid_data"), ({"instruments": {"name": "x"}}, "invalid_instruments")],
    )
    def test_malformed_data(self, data: Any, reason: str) -> None:
        """A code-200 body whose data or instruments has the wrong type is counted."""
        result = normalize({"task_id": "t", "code": 200, "data": data})
        assert result.dropped == {reason: 1} and result.instruments == ()

    def test_kept_plus_dropped_is_sent(self) -> None:
        """Every note sent is either kept or counted, and reasons come in a fixed order."""
        notes = [
            {"pitch": 60, "start": 0, "end": 1},
            {"pitch": 60, "start": 2, "end": 1},
            {"pitch": "x", "start": 0, "end": 1},
            {"pitch": 61, "start": 0, "end": 1, "velocity": 2},
            {"pitch": 62, "start": "0.5", "end": "0.75"},
        ]
        result = normalize(callback(*notes))
        assert result.note_count + result.dropped_count == len(notes)
        assert list(result.dropped) == [r for r in DROP_REASONS if r in result.dropped]

    def test_names(self) -> None:
        """Names are kept as sent (unicode included); a missing name becomes ''."""
        assert normalize(callback(name="Guitare électrique ギター")).instruments[0].name == (
            "Guitare électrique ギター"
        )
        assert normalize(callback(name=None)).instruments[0].name == ""


class TestOrder:
    def test_provider_order_is_kept(self) -> None:
        """Notes stay in the provider's order (the MIDI file sorts; the event does not)."""
        notes = [{"pitch": 60, "start": s, "end": s + 1} for s in (5, 1, 3)]
        assert [n.start for n in only_note_list(callback(*notes))] == [5.0, 1.0, 3.0]

    def test_pure(self) -> None:
        """Same input, equal output, input untouched."""
        payload = callback({"pitch": "60", "start": "0.5", "end": 1})
        before = json.dumps(payload, sort_keys=True)
        assert normalize(payload) == normalize(payload)
        assert json.dumps(payload, sort_keys=True) == before


def only_note_list(payload: dict[str, Any]) -> tuple[Note, ...]:
    (instrument,) = normalize(payload).instruments
    return instrument.notes


def record_info(data: dict[str, Any]) -> dict[str, Any]:
    """A record-info answer (FACTS.md's shape) around ``data``'s own members."""
    return {
        "code": 200,
        "msg": "success",
        "data": {
            "taskId": "t-1",
            "recordTaskId": -1,
            "audioId": "a-1",
            "callbackUrl": "https://example.callback",
            "completeTime": 1760335255000,
            "createTime": 1760335251000,
            "midiData": None,
            "successFlag": 0,
            "errorCode": None,
            "errorMessage": None,
            **data,
        },
    }


class TestRecordInfoAnswers:
    """A record-info answer the tracker polled reads as the callback it stands for."""

    def test_a_success_gives_the_callbacks_notes_and_the_same_file(
        self, reference_examples: dict[str, bytes]
    ) -> None:
        """Its midiData holds what the callback's data held: same notes, same MIDI bytes."""
        sent = json.loads(reference_examples["success-task-id-top-level"])
        polled = record_info({"successFlag": 1, "midiData": sent["data"]})
        from_callback, from_poll = normalize(sent), normalize(polled)
        assert from_poll.state == "complete" and from_poll.code == 200
        assert from_poll.provider_state == "complete"
        assert from_poll.instruments == from_callback.instruments
        assert from_poll.note_count == 6
        assert render_midi(from_poll) == render_midi(from_callback)

    @pytest.mark.parametrize(
        ("flag", "error_code", "code"), [(2, None, 500), (3, 500, 500), (3, 413, 413)]
    )
    def test_a_failure_flag_is_a_failed_task(
        self, flag: int, error_code: int | None, code: int
    ) -> None:
        """2 (creation failed) and 3 (generation failed): failed, with the error's code and
        message, even though the answer's own code is 200."""
        result = normalize(
            record_info({"successFlag": flag, "errorCode": error_code, "errorMessage": "boom"})
        )
        assert (result.state, result.code, result.msg) == ("failed", code, "boom")
        assert result.instruments == ()

    def test_pending_is_no_result(self) -> None:
        """successFlag 0: the task has not ended; nothing is made of it."""
        result = normalize(record_info({"successFlag": 0}))
        assert result.state == "unknown" and result.code is None

    def test_an_empty_success(self) -> None:
        """A success with no midiData (the provider documents it after split_stem)."""
        result = normalize(record_info({"successFlag": 1, "midiData": None}))
        assert result.state == "complete" and result.note_count == 0

    def test_it_is_a_midi_result(self) -> None:
        """Classified as this operation's, so the processor does not skip it."""
        assert callback_kind(record_info({"successFlag": 1})) == "midi"
        assert callback_kind(record_info({"successFlag": 3})) == "midi"
