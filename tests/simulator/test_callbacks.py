"""Callbacks as the provider sends them, to a small receiver in the test."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from devenv.simulator import SIGNATURE_HEADER, TIMESTAMP_HEADER, CallbackPlan, Faults, Outcome
from devenv.simulator.results import Fate, callback_payload, midi_data
from services.common.callback import find_task_id
from services.ingest.verify import sign

from .conftest import Receiver, SimFactory, record_info, script, settled, submit

KEY = b"sim-test-key"

ReceiverFactory = Callable[..., Awaitable[Receiver]]


class TestDelivery:
    async def test_signed_post_to_the_url_as_given(
        self, sim: SimFactory, receiver: ReceiverFactory
    ) -> None:
        """One POST of JSON to the URL with its query string kept, signed with the account
        key (checked with the ingest's own ``sign``)."""
        client, target = await sim(webhook_key=KEY), await receiver()
        url = target.url("/callbacks/suno/midi?request=r-1&x=%2Fa")
        task_id = await submit(client, "src-s", url)
        task = await settled(client, task_id, attempts=1)
        assert task["delivered"] and [a["status"] for a in task["attempts"]] == [200]
        ((path_qs, headers, body),) = target.received
        assert path_qs == "/callbacks/suno/midi?request=r-1&x=%2Fa"
        assert headers["Content-Type"] == "application/json"
        assert headers[SIGNATURE_HEADER] == sign(KEY, task_id, headers[TIMESTAMP_HEADER])
        assert find_task_id(json.loads(body)) == task_id

    async def test_unsigned_without_a_key(self, sim: SimFactory, receiver: ReceiverFactory) -> None:
        client, target = await sim(), await receiver()
        await settled(client, await submit(client, "src-u", target.url()), attempts=1)
        ((_, headers, _),) = target.received
        assert SIGNATURE_HEADER not in headers and TIMESTAMP_HEADER not in headers

    async def test_three_attempts_then_stop(
        self, sim: SimFactory, receiver: ReceiverFactory
    ) -> None:
        """A receiver answering 500 gets 3 attempts of the same body, then nothing more."""
        client, target = await sim(webhook_key=KEY), await receiver(status=500)
        task_id = await submit(client, "src-500", target.url())
        task = await settled(client, task_id, attempts=3)
        assert [a["status"] for a in task["attempts"]] == [500, 500, 500]
        assert not task["delivered"]
        assert len(target.received) == 3 and len({body for *_, body in target.received}) == 1
        # The delivery is over: a later task's callback is the next thing the receiver sees.
        await settled(client, await submit(client, "src-next", target.url()), attempts=3)
        assert len(target.received) == 6

    async def test_a_slow_receiver_times_out(
        self, sim: SimFactory, receiver: ReceiverFactory
    ) -> None:
        client = await sim(callback_timeout_seconds=0.2, callback_attempts=2)
        target = await receiver(delay=5.0)
        task = await settled(client, await submit(client, "src-t", target.url()), attempts=2)
        assert [(a["status"], a["error"]) for a in task["attempts"]] == [(None, "timeout")] * 2

    async def test_unreachable_receiver(self, sim: SimFactory) -> None:
        client = await sim()
        task_id = await submit(client, "src-x", "http://127.0.0.1:9/callback")
        task = await settled(client, task_id, attempts=3)
        assert all(a["status"] is None and a["error"] for a in task["attempts"])


class TestScripts:
    async def test_dropped_never_arrives_but_record_info_has_it(
        self, sim: SimFactory, receiver: ReceiverFactory
    ) -> None:
        client, target = await sim(), await receiver()
        await script(client, "src-d", callback="drop")
        task_id = await submit(client, "src-d", target.url())
        task = await settled(client, task_id, attempts=3)
        assert [a["error"] for a in task["attempts"]] == ["dropped"] * 3
        # A task submitted after it is delivered: the dropped one sent nothing meanwhile.
        after = await submit(client, "src-after", target.url())
        await settled(client, after, attempts=1)
        assert [find_task_id(json.loads(body)) for *_, body in target.received] == [after]
        data = (await record_info(client, task_id))["data"]
        assert data["successFlag"] == 1 and data["midiData"]["state"] == "complete"

    async def test_the_control_api_shows_the_exact_callback_body(
        self, sim: SimFactory, receiver: ReceiverFactory
    ) -> None:
        """``/_sim/tasks/{id}/callback`` is byte for byte what was sent; a dropped task has
        one too (what polling must recover); a running task has none yet (409)."""
        client, target = await sim(webhook_key=KEY), await receiver()
        sent = await submit(client, "src-body", target.url())
        await settled(client, sent, attempts=1)
        async with client.get(f"/_sim/tasks/{sent}/callback") as answer:
            assert answer.status == 200 and await answer.read() == target.received[0][2]
        await script(client, "src-kept", callback="drop")
        dropped = await submit(client, "src-kept", target.url())
        await settled(client, dropped, attempts=3)
        async with client.get(f"/_sim/tasks/{dropped}/callback") as answer:
            assert find_task_id(json.loads(await answer.read())) == dropped
        await script(client, "src-long", completion_seconds=30)
        running = await submit(client, "src-long", target.url())
        async with client.get(f"/_sim/tasks/{running}/callback") as answer:
            assert answer.status == 409
        async with client.get("/_sim/tasks/nope/callback") as answer:
            assert answer.status == 404

    async def test_twice_sends_the_same_body_twice(
        self, sim: SimFactory, receiver: ReceiverFactory
    ) -> None:
        client, target = await sim(webhook_key=KEY), await receiver()
        await script(client, "src-2", callback="twice")
        task = await settled(client, await submit(client, "src-2", target.url()), attempts=2)
        assert [(a["delivery"], a["status"]) for a in task["attempts"]] == [(1, 200), (2, 200)]
        assert len(target.received) == 2 and target.received[0][2] == target.received[1][2]

    async def test_failure_callbacks_in_both_shapes(
        self, sim: SimFactory, receiver: ReceiverFactory
    ) -> None:
        """``code`` 500: ``data`` null with the id on top, or ``data`` holding the id."""
        client, target = await sim(), await receiver()
        bodies = []
        for shape in ("task_id", "data"):
            await script(client, f"src-f-{shape}", outcome="failure", shape=shape)
            task_id = await submit(client, f"src-f-{shape}", target.url())
            await settled(client, task_id, attempts=1)
            bodies.append((task_id, json.loads(target.received[-1][2])))
        (top_id, top), (data_id, inside) = bodies
        assert top == {
            "task_id": top_id,
            "code": 500,
            "msg": "MIDI generation failed",
            "data": None,
        }
        assert inside == {"code": 500, "msg": "MIDI generation failed", "data": {"taskId": data_id}}

    async def test_callback_and_record_info_carry_the_same_notes(
        self, sim: SimFactory, receiver: ReceiverFactory
    ) -> None:
        """Byte-for-byte the same instruments (numbers stay numbers, strings strings)."""
        client, target = await sim(), await receiver()
        for shape in ("task_id", "data"):
            await script(client, f"src-{shape}", shape=shape)
            task_id = await submit(client, f"src-{shape}", target.url())
            await settled(client, task_id, attempts=1)
            callback: dict[str, Any] = json.loads(target.received[-1][2])
            assert (callback["code"], callback["msg"]) == (200, "success")
            midi = (await record_info(client, task_id))["data"]["midiData"]
            data = {k: v for k, v in callback["data"].items() if k != "taskId"}
            assert data == midi and midi["instruments"]
            assert ("task_id" in callback) == (shape == "task_id")

    async def test_a_late_callback(self, sim: SimFactory, receiver: ReceiverFactory) -> None:
        """``delay:<s>``: record-info has the result while the callback is still due."""
        client, target = await sim(), await receiver()
        await script(client, "src-late", callback="delay:3600")
        task_id = await submit(client, "src-late", target.url())
        task = await settled(client, task_id, attempts=0)
        assert task["callback"] == "delay:3600" and task["attempts"] == []
        assert (await record_info(client, task_id))["data"]["successFlag"] == 1
        assert target.received == []

    async def test_global_ratios(self, sim: SimFactory, receiver: ReceiverFactory) -> None:
        """With every task dropped unless scripted, only the scripted task calls back."""
        client, target = await sim(faults=Faults(drop=1.0)), await receiver()
        await script(client, "src-kept", callback="deliver")
        dropped = await submit(client, "src-any", target.url())
        kept = await submit(client, "src-kept", target.url())
        await settled(client, dropped, attempts=3)
        await settled(client, kept, attempts=1)
        assert [find_task_id(json.loads(body)) for *_, body in target.received] == [kept]


def keys(value: Any) -> Any:
    """The shape of a JSON value: its keys at every depth, the first list item standing
    for all; leaves as "scalar" or null (times may be numbers or strings alike)."""
    if isinstance(value, dict):
        return {key: keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [keys(value[0])] if value else []
    return None if value is None else "scalar"


class TestShapesMatchTheProvidersExamples:
    @pytest.mark.parametrize(
        ("example", "outcome", "shape"),
        [
            ("success-task-id-top-level", "success", "task_id"),
            ("success-task-id-in-data", "success", "data"),
            ("failure-data-null", "failure", "task_id"),
            ("failure-task-id-in-data", "failure", "data"),
        ],
    )
    def test_same_keys_as_the_example(
        self, reference_examples: dict[str, bytes], example: str, outcome: Outcome, shape: Any
    ) -> None:
        """Each simulated body has the keys of the provider's example, at every depth."""
        data = midi_data(0, "t", outcome)
        if data is not None:  # the examples' instruments all have notes
            data["instruments"] = [i for i in data["instruments"] if i["notes"]]
        body = callback_payload("t", Fate(outcome, CallbackPlan(), shape, 1, 0.0), data)
        assert keys(body) == keys(json.loads(reference_examples[example]))
