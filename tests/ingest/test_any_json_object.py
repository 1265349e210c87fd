"""Any JSON object with a valid task id becomes an event, or a clear refusal: never a 500."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.events import CallbackEvent
from services.ingest.body import parse_callback
from services.ingest.errors import Refusal
from services.ingest.event import build_event

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    # Digit look-alikes and long digit runs that str.isdigit() accepts but int() refuses.
    | st.sampled_from(["²", "٣", "½", "1" * 5000, " 200 ", "-0", "+200", "2147483648"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(
    fields=st.dictionaries(
        st.sampled_from(["code", "msg", "data", "state", "taskId", "extra"]), values, max_size=5
    ),
    state=values,
)
@settings(max_examples=400, deadline=None)
def test_every_object_becomes_an_event_or_a_refusal(fields: dict[str, Any], state: Any) -> None:
    """parse_callback + build_event + Avro encoding never raise anything but Refusal."""
    payload = {**fields, "task_id": "fuzz-task"}
    if isinstance(payload.get("data"), dict):
        payload["data"]["state"] = state
    body = json.dumps(payload).encode()
    try:
        parsed = parse_callback(body, max_depth=64)
    except Refusal:
        return
    event = build_event(parsed, body, datetime.now(UTC), {}, signature="UNVERIFIED")
    assert CallbackEvent.decode(event.encode()).body == body
    assert event.code is None or isinstance(event.code, int)


def test_unicode_digit_code_is_not_a_code() -> None:
    """A superscript "²" passes str.isdigit() but is no code: the event carries null."""
    body = json.dumps({"task_id": "t", "code": "²"}).encode()
    parsed = parse_callback(body, max_depth=64)
    event = build_event(parsed, body, datetime.now(UTC), {}, signature="UNVERIFIED")
    assert event.code is None
