"""The tracker's pure rules: callback URLs, the polling schedule, what answers and events mean."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from services.tracker.schedule import (
    FIRST_POLLS,
    callback_url,
    first_poll_at,
    next_poll_delay,
    notes_outcome,
    poll_action,
    terminal_of_callback,
)


class TestCallbackUrl:
    def test_the_request_id_is_added_and_the_rest_kept(self) -> None:
        """Path and other parameters stay; a stale request_id is replaced, not doubled."""
        url = callback_url(
            "https://hooks.example/callbacks/suno/midi?tenant=a&request_id=old", "r-1"
        )
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc, parts.path) == (
            "https",
            "hooks.example",
            "/callbacks/suno/midi",
        )
        assert parse_qs(parts.query) == {"tenant": ["a"], "request_id": ["r-1"]}

    def test_a_plain_url(self) -> None:
        assert callback_url("http://127.0.0.1:8080/cb", "a.b:c_d-1") == (
            "http://127.0.0.1:8080/cb?request_id=a.b%3Ac_d-1"
        )


class TestSchedule:
    def test_first_poll_waits_for_the_callback(self) -> None:
        submitted = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
        assert first_poll_at(submitted, 300) == submitted + timedelta(minutes=5)

    def test_first_polls_at_the_interval_then_doubling_to_the_cap(self) -> None:
        """The provider's 10-30 s at first, then backing off, never past the maximum."""
        delays = [next_poll_delay(n, 15, 600) for n in range(10)]
        assert delays[:FIRST_POLLS] == [15.0] * FIRST_POLLS
        assert delays[FIRST_POLLS : FIRST_POLLS + 3] == [30.0, 60.0, 120.0]
        assert delays[-1] == 600.0
        assert delays == sorted(delays)

    def test_a_huge_poll_count_stays_at_the_cap(self) -> None:
        assert next_poll_delay(10_000, 15, 1800) == 1800.0


class TestMeaning:
    @pytest.mark.parametrize(
        ("outcome", "publish", "terminal"),
        [
            ("pending", False, None),
            ("completed", True, None),
            ("empty", True, "empty"),
            ("failed", True, "failed"),
        ],
    )
    def test_poll_actions(self, outcome: str, publish: bool, terminal: str | None) -> None:
        """Every finished answer goes down the pipeline; only a completed one waits."""
        action = poll_action(outcome)
        assert (action.publish, action.terminal) == (publish, terminal)

    def test_an_unknown_outcome_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="unknown record-info outcome"):
            poll_action("maybe")

    @pytest.mark.parametrize(
        ("payload", "expected"),
        [
            (
                {"task_id": "t", "code": 500, "msg": "MIDI generation failed", "data": None},
                "failed",
            ),
            ({"code": 200, "data": {"taskId": "t", "state": "complete", "instruments": []}}, None),
            ({"code": 500, "data": {"callbackType": "error", "data": []}}, None),
            ({"code": 200, "data": {"taskId": "t", "successFlag": 3, "midiData": None}}, "failed"),
        ],
        ids=["midi-failure", "midi-success-waits", "other-operation", "record-info-failure"],
    )
    def test_callbacks(self, payload: dict[str, object], expected: str | None) -> None:
        """Only a MIDI failure is terminal at once; another operation's failure is not ours."""
        assert terminal_of_callback(payload) == expected

    @pytest.mark.parametrize(
        ("state", "notes", "expected"),
        [
            ("complete", 3, "completed"),
            ("complete", 0, "empty"),
            ("failed", 0, "failed"),
            ("unknown", 0, None),
        ],
    )
    def test_notes_events(self, state: str, notes: int, expected: str | None) -> None:
        assert notes_outcome(state, notes) == expected
