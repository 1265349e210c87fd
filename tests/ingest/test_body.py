"""Parsing callback bodies: every malformed input gets its own 400, never an exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.callback import (
    KIND_MARKERS,
    callback_code,
    callback_kind,
    callback_msg,
    callback_state,
    find_task_id,
)
from services.common.keys import is_valid_task_id
from services.ingest.body import json_depth_exceeds, parse_callback
from services.ingest.errors import Refusal


def nested(depth: int, opener: str = "[", closer: str = "]") -> bytes:
    return (opener * depth + closer * depth).encode()


READ_KEYS = sorted({"task_id", "taskId", "code", "msg", "data", "state", "notes", *KIND_MARKERS})
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and infinities too: json.dumps writes them, the parsers must refuse
    | st.text(max_size=6)
    | st.sampled_from(["200", " 200 ", "²", "t-1", "", "has space"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(READ_KEYS) | st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=10,
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """JSON objects (or not) shaped like callbacks, some of them damaged by a byte or two."""
    task_ids = st.sampled_from(["t-1", "abc_DEF-9", ""]) | SCALARS
    inner = st.dictionaries(st.sampled_from(READ_KEYS), VALUES, max_size=4)
    callbacks = st.fixed_dictionaries(
        {},
        optional={
            "task_id": task_ids,
            "taskId": task_ids,
            "code": SCALARS,
            "msg": SCALARS,
            "data": st.fixed_dictionaries(
                {},
                optional={"taskId": task_ids, "task_id": task_ids, "state": SCALARS},
            ).flatmap(lambda known: inner.map(lambda extra: {**extra, **known}))
            | VALUES,
            "notes": VALUES,
        },
    )
    value = draw(callbacks | st.dictionaries(st.sampled_from(READ_KEYS), VALUES) | VALUES)
    text = json.dumps(
        value,
        ensure_ascii=draw(st.booleans()),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")])),
    )
    body = text.encode("utf-8", "surrogatepass")
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(body)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = bytes([draw(st.sampled_from(list(b'"\\{}[],:0e-.tnu \x00\xc3\xff')))])
        if kind == "insert":
            body = body[:at] + byte + body[at:]
        elif kind == "delete":
            body = body[:at] + body[at + 1 :]
        else:
            body = body[:at] + byte + body[at + 1 :]
    return body


def answer(body: bytes) -> object:
    """What the ingest makes of ``body``: its refusal code, or the fields it reads."""
    try:
        parsed = parse_callback(body, max_depth=64)
    except Refusal as refusal:
        return refusal.code
    return parsed.task_id, parsed.code, parsed.msg, parsed.state, parsed.kind


def reference_answer(body: bytes) -> object:
    """The same, from json.loads alone (NaN and infinity literals refused, as the ingest does)."""

    def refuse(name: str) -> None:
        raise ValueError(name)

    try:
        payload = json.loads(body.decode("utf-8"), parse_constant=refuse)
    except UnicodeDecodeError:
        return "invalid_utf8"
    except ValueError:
        return "invalid_json"
    if not isinstance(payload, dict):
        return "not_an_object"
    task_id = find_task_id(payload)
    if task_id is None:
        return "missing_task_id"
    if not is_valid_task_id(task_id):
        return "invalid_task_id"
    return (
        task_id,
        callback_code(payload),
        callback_msg(payload),
        callback_state(payload),
        callback_kind(payload),
    )


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
        assert parse_callback(b'{"task_id": "a1"}', max_depth=64).task_id == "a1"
        assert parse_callback(b'{"data": {"taskId": "b2"}}', max_depth=64).task_id == "b2"

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

    @given(bodies())
    @settings(max_examples=1500, deadline=None)
    def test_every_parser_answers_as_the_standard_library(self, body: bytes) -> None:
        """msgspec's fields-only pass and orjson accept exactly what json.loads accepts,
        with the same task id, code, msg, state and kind (the ingest reads nothing else)."""
        assert answer(body) == reference_answer(body)

    @pytest.mark.parametrize(
        "body",
        [
            b'{"task_id": "a", "x": "\xff"}',  # invalid UTF-8 in a string msgspec skips
            b'{"task_id": "a", "x": ' + b"7" * 4301 + b"}",  # past Python's integer limit
            b'{"task_id": "a", "x": 0.' + b"7" * 5000 + b"}",  # a long fraction is fine
            b'{"task_id": "a", "x": 1e99999}',  # inf for json.loads, accepted
            b'{"task_id": "a", "x": "\\udc00"}',  # a lone surrogate, accepted by json.loads
            b'{"task_id": "a", "data": [1], "code": 200}',  # data of another shape
            b'{"data": {"task_id": "a", "state": 1}, "data": {"taskId": "b"}}',  # last wins
            b'{"task\\u005fid": "escaped-key", "code": "200"}',
            b'{"task_id": "a", "code": 200, "code": "x"}',
            b'{"taskId": "b", "task_id": 5, "data": {"state": "done"}}',
            b'{"task_id": "a", "code": 500, "data": {"vocal_removal_info": null}}',
            b'{"task_id": "a", "data": {"instruments": [], "callbackType": "text"}}',
            b'{"task_id": "a", "data": {"data": 1, "data": 2, "instruments": null}}',
        ],
    )
    def test_bodies_where_the_parsers_differ_get_the_standard_answer(self, body: bytes) -> None:
        """Inputs each faster parser checks differently still get json.loads's answer."""
        assert answer(body) == reference_answer(body)

    @given(st.binary(max_size=300))
    @settings(max_examples=500, deadline=None)
    def test_arbitrary_bytes_never_escape_as_other_errors(self, body: bytes) -> None:
        """Any bytes either parse or raise a Refusal; nothing else."""
        try:
            parse_callback(body, max_depth=8)
        except Refusal as refusal:
            assert refusal.status == 400
