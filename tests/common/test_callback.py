"""Which operation sent a callback: each kind by its own markers, never by elimination."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.common.callback import CALLBACK_KINDS, callback_kind, kind_of

from ..kinds import OTHER_KINDS


class TestCallbackKind:
    def test_the_providers_midi_examples_are_midi(
        self, reference_examples: dict[str, bytes]
    ) -> None:
        """Both success shapes and both failure shapes the provider documents."""
        kinds = {name: callback_kind(json.loads(body)) for name, body in reference_examples.items()}
        assert set(kinds.values()) == {"midi"}, kinds

    @pytest.mark.parametrize("name", sorted(OTHER_KINDS))
    def test_other_operations_are_their_own_kind(self, name: str) -> None:
        """Music generation at every stage, separation, and a body no marker identifies."""
        kind, make = OTHER_KINDS[name]
        assert callback_kind(make("other-1")) == kind

    @pytest.mark.parametrize(
        ("payload", "kind"),
        [
            ({"code": 200, "data": {"taskId": "t", "state": "complete"}}, "midi"),
            ({"code": 200, "data": {"taskId": "t", "instruments": []}}, "midi"),
            ({"data": {"taskId": "t", "state": None}}, "midi"),  # present, whatever its value
            ({"code": 500, "data": None}, "midi"),  # a failure with no other kind's markers
            ({"code": "500", "data": {"taskId": "t"}}, "midi"),
            ({"code": 500, "data": {"callbackType": "error", "data": None}}, "music_generation"),
            ({"code": 500, "data": {"vocal_removal_info": None}}, "separation"),
            ({"code": 200, "data": {"taskId": "t"}}, "unknown"),  # nothing says it holds notes
            ({"code": 200, "data": None}, "unknown"),
            ({"task_id": "t"}, "unknown"),
            ({"code": 200, "data": "complete"}, "unknown"),
            # Markers of two kinds: no guess, no file.
            ({"code": 200, "data": {"state": "complete", "data": []}}, "unknown"),
            ({"code": 200, "data": {"instruments": [], "vocal_removal_info": {}}}, "unknown"),
            ({"code": 500, "data": {"callbackType": "x", "vocal_removal_info": {}}}, "unknown"),
        ],
    )
    def test_markers_decide(self, payload: dict[str, Any], kind: str) -> None:
        """The table of docs/processing.md, case by case."""
        assert callback_kind(payload) == kind

    def test_every_kind_is_reachable(self) -> None:
        """The metric's label set is exactly the kinds the rule can give."""
        members = ((), ("state",), ("callbackType",), ("vocal_removal_info",))
        reached = {kind_of(m, code) for m in members for code in (None, 200, 500)}
        assert reached == set(CALLBACK_KINDS)
