"""Parsing callback bodies: every malformed input gets its own 400, never an exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.body import json_depth_exceeds, parse_callback
from services.ingest.errors import Refusal


def nested(depth: int, opener: str = "[", closer: str = "]") -> bytes:
    return (opener * depth + closer * depth).encode()


class TestJsonDepth:
    @pytest.mark.parametrize("depth", [1, 2, 63, 64])
    def test_up_to_the_limit_passes(self, depth: int) -> None:
        """Nesting up to the limit is fine."""
        assert not json_depth_exceeds(nested(depth), 64)

    @pytest.mark.parametrize("depth", [65, 66, 1000, 1_000_000])
    def test_past_the_limit_is_caught(self, depth: int) -> None:
        """One level past the limit, or a million, is detected without recursion."""
        assert json_depth_exceeds(nested(depth), 64)

    def test_mixed_objects_and_arrays_count_each_level(self) -> None:
        """``[{...}]`` counts both levels."""
        value: object = 1
        for level in range(65):
            value = {"a": value} if level % 2 else [value]
        body = json.dumps(value).encode()
        assert json_depth_exceeds(body, 64)
        assert not json_depth_exceeds(body, 65)

    def test_brackets_inside_strings_do_not_count(self) -> None:
        """Brackets in strings (escaped quotes included) are text, not nesting."""
        body = json.dumps({"a": "[[[[" * 100 + '\\"{{{{' * 100, "b": [1]}).encode()
        assert not json_depth_exceeds(body, 2)

    def test_strings_with_brackets_next_to_each_other(self) -> None:
        """Adjacent strings, escaped backslashes before quotes, unescaped non-ASCII text."""
        value = {"[": "]]", "a": ["{", "\\", '\\"[', "é[ü"], "b": {"c": "}}}"}}
        for ascii_only in (True, False):
            body = json.dumps(value, ensure_ascii=ascii_only).encode()
            assert not json_depth_exceeds(body, 2)
            assert json_depth_exceeds(body, 1)

    @given(
        st.recursive(
            st.none() | st.integers() | st.text(),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
            max_leaves=30,
        )
    )
    @settings(max_examples=300, deadline=None)
    def test_agrees_with_a_reference_depth(self, value: object) -> None:
        """The bracket-peeling depth equals the depth of the parsed value."""

        def depth(v: object) -> int:
            if isinstance(v, list):
                return 1 + max((depth(x) for x in v), default=0)
            if isinstance(v, dict):
                return 1 + max((depth(x) for x in v.values()), default=0)
            return 0

        true_depth = depth(value)
        for ascii_only in (True, False):
            body = json.dumps(value, ensure_ascii=ascii_only).encode()
            assert not json_depth_exceeds(body, max(true_depth, 1))
            if true_depth > 1:
                assert json_depth_exceeds(body, true_depth - 1)


class TestParseCallback:
    def test_both_shapes_give_the_task_id(self) -> None:
        """The task id is found at top level or inside data."""
        assert parse_callback(b'{"task_id": "a1"}', max_depth=64)[1] == "a1"
        assert parse_callback(b'{"data": {"taskId": "b2"}}', max_depth=64)[1] == "b2"

    @pytest.mark.parametrize(
        ("body", "code"),
        [
            (b"\xff\xfe{}", "invalid_utf8"),
            (b'{"task_id": "a\xc3"}', "invalid_utf8"),
            (b"", "invalid_json"),
            (b"{", "invalid_json"),
            (b'{"task_id": "a", "x": NaN}', "invalid_json"),
            (b'{"task_id": "a", "x": Infinity}', "invalid_json"),
            (b'{"task_id": "a", "x": ' + b"9" * 5000 + b"}", "invalid_json"),
            (b"\xef\xbb\xbf{}", "invalid_json"),
            (nested(65), "too_deep"),
            (b"[" * 200_000, "too_deep"),
            (b"[]", "not_an_object"),
            (b'"task_id"', "not_an_object"),
            (b"null", "not_an_object"),
            (b"{}", "missing_task_id"),
            (b'{"task_id": 5}', "missing_task_id"),
            (b'{"task_id": ""}', "missing_task_id"),
            (b'{"data": null}', "missing_task_id"),
            (b'{"task_id": "has space"}', "invalid_task_id"),
            (b'{"task_id": "' + b"x" * 81 + b'"}', "invalid_task_id"),
            (b'{"task_id": "caf\\u00e9"}', "invalid_task_id"),
            (b'{"task_id": "\\ud800"}', "invalid_task_id"),
        ],
    )
    def test_bad_bodies_get_a_400_saying_why(self, body: bytes, code: str) -> None:
        """Each kind of bad body is refused with 400 and its own code."""
        with pytest.raises(Refusal) as caught:
            parse_callback(body, max_depth=64)
        assert (caught.value.status, caught.value.code) == (400, code)
        assert caught.value.outcome == "bad_request"

    @given(
        st.dictionaries(
            st.sampled_from(["task_id", "code", "msg", "state", "x"]),
            st.none()
            | st.booleans()
            | st.integers(min_value=-(2**70), max_value=2**70)
            | st.floats()
            | st.text(max_size=8),
            max_size=5,
        ),
        st.sampled_from(["", " ", "\n"]),
    )
    @settings(max_examples=300, deadline=None)
    def test_the_fast_parser_sees_what_the_standard_library_sees(
        self, value: dict[str, object], space: str
    ) -> None:
        """orjson (fast path) and json.loads agree on every field the ingest reads."""
        body = (space + json.dumps(value, allow_nan=True) + space).encode()
        try:
            fast = parse_callback(body, max_depth=8)
        except Refusal as refusal:
            fast_answer: object = refusal.code
        else:
            fast_answer = (fast[1], *(fast[0].get(k) for k in ("code", "msg", "state")))
        try:
            reference = json.loads(body.decode(), parse_constant=lambda c: 1 / 0)
        except ZeroDivisionError:
            assert fast_answer == "invalid_json"
            return
        if not isinstance(reference.get("task_id"), str) or not reference["task_id"]:
            assert fast_answer == "missing_task_id"
            return
        if fast_answer == "invalid_task_id":
            return
        expected = (reference["task_id"], *(reference.get(k) for k in ("code", "msg", "state")))
        for got, want in zip(fast_answer, expected, strict=True):  # type: ignore[call-overload]
            # Integers past 64 bits come back as floats from orjson; no read field holds one.
            if isinstance(want, int) and abs(want) >= 2**64:
                assert got == float(want)
            else:
                assert got == want and type(got) is type(want)

    @given(st.binary(max_size=300))
    @settings(max_examples=500, deadline=None)
    def test_arbitrary_bytes_never_escape_as_other_errors(self, body: bytes) -> None:
        """Any bytes either parse or raise a Refusal; nothing else."""
        try:
            parse_callback(body, max_depth=8)
        except Refusal as refusal:
            assert refusal.status == 400
