"""Task ids into storage keys, and finding the task id in either payload shape."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.callback import callback_code, find_task_id
from services.common.keys import is_valid_task_id, task_key


class TestTaskKey:
    @pytest.mark.parametrize(
        ("task_id", "key"),
        [
            ("5c79be8e", "5c79be8e"),
            ("a-b_C9", "a-b_C9"),
            ("..", "%2E%2E"),
            ("../../etc/passwd", "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd"),
            ("5c79****be8e", "5c79%2A%2A%2A%2Abe8e"),
            ("a~b c", "a%7Eb%20c"),
            ("é", "%C3%A9"),
        ],
    )
    def test_examples(self, task_id: str, key: str) -> None:
        """Only ASCII letters, digits, - and _ stay as they are."""
        assert task_key(task_id) == key

    @given(st.text(min_size=1))
    def test_never_names_another_folder(self, task_id: str) -> None:
        """No task id yields a key with a separator or a dot-only name."""
        key = task_key(task_id)
        assert "/" not in key and "\\" not in key and "\x00" not in key
        assert PurePosixPath(key).name == key and key not in (".", "..")
        assert set(key) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_%")

    @given(st.text(min_size=1), st.text(min_size=1))
    def test_injective(self, first: str, second: str) -> None:
        """Two different task ids never share a key."""
        if first != second:
            assert task_key(first) != task_key(second)

    def test_validity(self) -> None:
        """1-80 printable ASCII characters, nothing else."""
        assert is_valid_task_id("5c79****be8e")
        assert is_valid_task_id("x" * 80)
        assert not is_valid_task_id("x" * 81)
        assert not is_valid_task_id("")
        assert not is_valid_task_id("has space")
        assert not is_valid_task_id("tab\tid")
        assert not is_valid_task_id("é")


class TestFindTaskId:
    @pytest.mark.parametrize(
        ("payload", "task_id"),
        [
            ({"task_id": "a", "data": {"taskId": "b"}}, "a"),
            ({"taskId": "a"}, "a"),
            ({"data": {"taskId": "b"}}, "b"),
            ({"data": {"task_id": "c"}}, "c"),
            ({"task_id": "", "data": {"taskId": "b"}}, "b"),
            ({"task_id": 5, "data": {"task_id": "c"}}, "c"),
            ({"data": None}, None),
            ({"data": ["taskId"]}, None),
            ({}, None),
        ],
    )
    def test_every_documented_place(self, payload: dict[str, object], task_id: str | None) -> None:
        """task_id, taskId, data.taskId, data.task_id: first non-empty string wins."""
        assert find_task_id(payload) == task_id

    def test_reference_examples(self, reference_examples: dict[str, bytes]) -> None:
        """All four provider examples carry a findable task id."""
        import json

        for name, body in reference_examples.items():
            assert find_task_id(json.loads(body)) == "5c79****be8e", name

    @pytest.mark.parametrize(
        ("code", "expected"),
        [
            (200, 200),
            (500, 500),
            ("200", 200),
            (True, None),
            ("x", None),
            (2**40, None),
            (None, None),
        ],
    )
    def test_code(self, code: object, expected: int | None) -> None:
        """code as an int when it is one; anything else is None."""
        assert callback_code({"code": code}) == expected
