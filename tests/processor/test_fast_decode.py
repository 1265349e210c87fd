"""The typed fast path gives exactly what the general path (json.loads, normalize) gives."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bench.processor.callbacks import synthetic_callback
from services.common.callback import callback_kind
from services.common.errors import DeadLetter
from services.processor.app import Skipped, parse_callback
from services.processor.columns import note_columns
from services.processor.fast_decode import _times, decode_well_formed
from services.processor.normalize import _NUMERIC, Instrument, NormalizedCallback, normalize


def general(body: bytes) -> NormalizedCallback | Skipped | str:
    """What the general path alone makes of ``body`` (``"dead letter"`` for a non-object)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return "dead letter"
    if not isinstance(payload, dict):
        return "dead letter"
    kind = callback_kind(payload)
    return normalize(payload) if kind == "midi" else Skipped(kind)


def parsed(body: bytes) -> NormalizedCallback | Skipped | str:
    try:
        return parse_callback(body)
    except DeadLetter:
        return "dead letter"


def body_of(instruments: Any, **top: Any) -> bytes:
    payload = {"task_id": "t-1", "code": 200, "msg": "success"}
    payload.update(top)
    payload.setdefault("data", {"state": "complete", "instruments": instruments})
    return json.dumps(payload).encode()


# Values a note's members are sent as: numbers, numeric and other strings, null, booleans.
_numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, min_value=-10.0, max_value=100_000.0),
    st.integers(min_value=-2, max_value=200),
)
_texts = st.one_of(
    _numbers.map(str),
    _numbers.map(lambda number: f" {number!r}\n"),
    st.sampled_from(["", "abc", "inf", "NaN", "1_000", "0x10", "1,5", "+2", "1e-3", "\u0661"]),
)
_values = st.one_of(_numbers, _texts, st.none(), st.booleans(), st.just([1]))
_notes = st.dictionaries(
    st.sampled_from(["pitch", "start", "end", "velocity", "other"]), _values, max_size=5
)
_well_formed = st.fixed_dictionaries(
    {
        "pitch": st.integers(0, 127),
        "start": st.floats(0.0, 1_000.0),
        "end": st.floats(1_000.001, 2_000.0),
    },
    optional={"velocity": st.one_of(st.floats(0.0, 1.0), st.none(), st.just(1))},
)
_instrument = st.fixed_dictionaries(
    {"name": st.one_of(st.text(max_size=5), st.none()), "notes": st.lists(_notes | _well_formed)}
)


class TestSamePathResult:
    """Whatever the body, parse_callback equals the general path, drops and counts included."""

    @given(st.lists(st.one_of(_instrument, st.just(3), st.just({"notes": 4})), max_size=4))
    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @example([{"name": "Flute", "notes": [{"pitch": "44", "start": 0, "end": 1}]}])
    @example([{"name": "Flute", "notes": [{"pitch": 44, "start": "1,5", "end": 2}]}])
    @example([{"name": "Flute", "notes": [{"pitch": 44, "start": 1, "end": 2, "velocity": 2}]}])
    def test_messy_instruments(self, instruments: Any) -> None:
        """Random instruments and notes, well-formed or not."""
        body = body_of(instruments)
        assert parsed(body) == general(body)

    @given(st.lists(st.fixed_dictionaries({"name": st.text(max_size=5)}, optional={
        "notes": st.lists(_well_formed, max_size=20)}), max_size=4))  # fmt: skip
    @settings(max_examples=200)
    def test_well_formed_takes_the_fast_path(self, instruments: Any) -> None:
        """A completed task's well-formed notes are decoded typed, to the same result."""
        body = body_of(instruments)
        assert decode_well_formed(body) == general(body)

    @pytest.mark.parametrize(
        "body",
        [
            b"[1]",
            b"not json",
            b'{"code": 200, "data": {"instruments": []}, "x": NaN}',
            b'{"code": 200, "data": {"instruments": [{"name": "\\ud800", "notes": []}]}}',
            b'{"code": 200, "data": {"instruments": [], "n": 1' + b"1" * 5000 + b"}}",
            b'{"code": 200, "data": {"instruments": [{"name": "A", "notes": [{"pitch": 1,'
            b' "start": 0, "end": 1, "x": 1' + b"1" * 5000 + b"}]}]}}",
            b'{"code": 200, "data": {"instruments": [{"name": "A", "x": 1' + b"1" * 5000 + b"}]}}",
            b'{"code": 200, "data": {"instruments": [{"name": "A", "notes": [{"pitch": 1,'
            b' "start": 0, "end": 1, "x": 2}]}]}}',
            b'{"code": 500, "msg": "failed", "data": {"instruments": []}}',
            b'{"code": 200, "data": {"instruments": [], "callbackType": "x"}}',
            b'{"code": 200, "data": {"successFlag": 1, "midiData": {"instruments": []}}}',
            b'{"code": 200, "data": null}',
            b'{"code": 200, "data": {"instruments": [1]}}',
            b'{"code": 200, "data": {"instruments": [{"name": "A", "notes": [{"pitch": 1,'
            b' "start": 0, "end": 1}]}], "instruments": null}}',
            b'{"code": 200, "data": {"instruments": [{"name": "A", "notes": [{"pitch": 1,'
            b' "start": 0, "end": 1, "end": 0}]}]}}',
            b'{"code": 200, "data": {"instruments": [{"name": "A", "notes": [{"pitch": true,'
            b' "start": 0, "end": 1}]}]}}',
            b'{"code": 200, "data": {"instruments": [{"name": "A", "notes": [{"pitch": 1,'
            b' "start": 0, "end": 1e400}]}]}}',
        ],
    )
    def test_edge_bodies(self, body: bytes) -> None:
        """Bodies that msgspec and json.loads read differently, or that need a rule."""
        assert parsed(body) == general(body)

    @pytest.mark.parametrize(
        "note",
        [
            {"pitch": 128, "start": 0, "end": 1},
            {"pitch": -1, "start": 0, "end": 1},
            {"pitch": 60, "start": -0.5, "end": 1},
            {"pitch": 60, "start": 1, "end": 1},
            {"pitch": 60, "start": "2", "end": "1.5"},
            {"pitch": 60, "start": 0, "end": 86_400.5},
            {"pitch": 60, "start": 0, "end": 1, "velocity": -0.1},
            {"pitch": 60, "start": 0, "end": 1, "velocity": " 0.5 "},
            {"pitch": 60, "start": 0, "end": 1, "velocity": "1.5"},
            {"pitch": 60, "start": " 1e-3", "end": "+2 "},
        ],
    )
    def test_one_note_rules(self, note: dict[str, Any]) -> None:
        """Each rule a note can meet, beside a well-formed note."""
        body = body_of([{"name": "Flute", "notes": [{"pitch": 1, "start": 0, "end": 1}, note]}])
        assert parsed(body) == general(body)

    @given(
        st.lists(st.fixed_dictionaries({"name": st.text(max_size=5)}), max_size=3),
        st.sampled_from([{}, {"task_id": "t"}, {"taskId": 5}, {"extra": [1, {"a": None}]}]),
        st.sampled_from([{}, {"taskId": "t"}, {"task_id": None}, {"extra": "x"}]),
    )
    @settings(max_examples=100)
    def test_other_members(
        self, instruments: Any, top: dict[str, Any], data: dict[str, Any]
    ) -> None:
        """Members the provider sends or might (read in one pass or member by member)."""
        body = body_of([], **top, data={"state": "complete", "instruments": instruments, **data})
        assert decode_well_formed(body) == general(body)
        assert decode_well_formed(body) is not None

    @given(st.lists(st.fixed_dictionaries({"name": st.text(max_size=5)}, optional={
        "notes": st.lists(_well_formed, max_size=20)}), max_size=4))  # fmt: skip
    @settings(max_examples=100)
    def test_columns_are_the_notes(self, instruments: Any) -> None:
        """The columns the fast path hands on are the ones its notes give."""
        fast = decode_well_formed(body_of(instruments))
        assert fast is not None
        for instrument in fast.instruments:
            carried = note_columns(instrument)
            built = note_columns(Instrument(instrument.name, instrument.notes))
            for name in ("pitch", "start", "end", "velocity", "midi_velocity"):
                assert getattr(carried, name).tolist() == getattr(built, name).tolist()

    @pytest.mark.parametrize("notes", [10, 1_000])
    def test_benchmark_callbacks(self, notes: int) -> None:
        """The bench's callbacks (half the times strings) take the fast path."""
        body = synthetic_callback(notes)
        fast = decode_well_formed(body)
        assert fast is not None and fast == general(body)
        assert fast.note_count == notes


_number_texts = st.one_of(
    st.from_regex(_NUMERIC, fullmatch=True),
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=False).map(repr),
    st.sampled_from(
        ["-0", " -0 ", "-0.0", "-0e0", "0", "+0", "1e400", "-1e-400", "\x0b1", "\u0661", "1,5"]
    ),
    st.text(alphabet="0123456789+-.eE ,\t\n[]", max_size=6),
)


class TestStringTimes:
    """A column's times are read at once, strings exactly as one float() each."""

    @given(st.lists(st.one_of(_number_texts, st.floats(0.0, 10.0)), max_size=12))
    @settings(max_examples=500)
    def test_as_the_number_rule_reads_them(self, values: list[float | str]) -> None:
        """None when a string breaks the rule; else float() of each, signed zeros kept."""
        tokens = [msgspec.Raw(json.dumps(value).encode()) for value in values]
        texts = [value for value in values if isinstance(value, str)]
        if not all(_NUMERIC.fullmatch(text) for text in texts):
            assert _times(tokens) is None
            return
        read = _times(tokens)
        assert read is not None
        expected = [float(value) for value in values]
        assert [repr(number) for number in read] == [repr(number) for number in expected]

    @pytest.mark.parametrize(
        "start", ["-0", "-0.0", '"-0"', '"-0.0"', '" -0 "', '"0e0"', "-0e0", '"-0e-5"', '"1E2"']
    )
    def test_signed_zeros_in_a_body(self, start: str) -> None:
        """A zero keeps the sign normalize gives it (equality alone cannot tell)."""
        body = (
            '{"code": 200, "data": {"instruments": [{"name": "A", "notes": '
            f'[{{"pitch": 1, "start": {start}, "end": 200}}]}}]}}}}'
        ).encode()
        fast = decode_well_formed(body)
        assert fast is not None
        expected = normalize(json.loads(body)).instruments[0].notes[0].start
        assert repr(fast.instruments[0].notes[0].start) == repr(expected)
