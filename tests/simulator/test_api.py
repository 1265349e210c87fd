"""The simulated provider's API: shapes, errors, rate limit, faults, determinism."""

from __future__ import annotations

import math
from typing import Any

import pytest
from aiohttp import ClientTimeout

from devenv.simulator import (
    GENERATE_PATH,
    RECORD_INFO_PATH,
    Faults,
    SimConfig,
    SimConfigError,
)
from devenv.simulator.results import midi_data
from devenv.simulator.state import busiest_window
from services.processor.gm import GM_PROGRAM_NAMES

from .conftest import AUTH, SimFactory, record_info, script, settled, submit

CALLBACK = "https://receiver.invalid/callback"


async def provider_error(response: Any, code: int, *, status: int | None = None) -> str:
    """The provider's error shape with ``code``; its message."""
    body = await response.json()
    assert response.status == (code if status is None else status), body
    assert set(body) == {"code", "msg"} and body["code"] == code, body
    assert isinstance(body["msg"], str) and body["msg"]
    message: str = body["msg"]
    return message


class TestGenerate:
    async def test_answers_a_new_task_id(self, sim: SimFactory) -> None:
        """The provider's success shape with a 32 hex digit task id, new on each call."""
        client = await sim()
        first = await submit(client, "src-1", CALLBACK)
        second = await submit(client, "src-1", CALLBACK)
        assert first != second and all(len(t) == 32 and int(t, 16) >= 0 for t in (first, second))

    @pytest.mark.parametrize(
        "headers",
        [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic test-api-key"}],
    )
    async def test_refuses_a_missing_or_wrong_key(
        self, sim: SimFactory, headers: dict[str, str]
    ) -> None:
        client = await sim()
        response = await client.post(
            GENERATE_PATH, json={"taskId": "s", "callBackUrl": CALLBACK}, headers=headers
        )
        await provider_error(response, 401)

    @pytest.mark.parametrize(
        ("body", "named"),
        [
            ({"callBackUrl": CALLBACK}, "taskId"),
            ({"taskId": "s"}, "callBackUrl"),
            ({"taskId": "", "callBackUrl": CALLBACK}, "taskId"),
            ({"taskId": 7, "callBackUrl": CALLBACK}, "taskId"),
            ({"taskId": "s", "callBackUrl": "ftp://x/y"}, "callBackUrl"),
            ({"taskId": "s", "callBackUrl": CALLBACK, "audioId": 3}, "audioId"),
            ([1, 2], "object"),
        ],
    )
    async def test_bad_bodies_get_400(self, sim: SimFactory, body: Any, named: str) -> None:
        """Each bad body gets code 400 and a message naming what is wrong; no task is made."""
        client = await sim()
        response = await client.post(GENERATE_PATH, json=body, headers=AUTH)
        assert named in await provider_error(response, 400)
        assert (await (await client.get("/_sim/tasks")).json()) == {"tasks": []}

    async def test_not_json(self, sim: SimFactory) -> None:
        client = await sim()
        response = await client.post(GENERATE_PATH, data=b"{nope", headers=AUTH)
        assert "JSON" in await provider_error(response, 400)

    async def test_too_large(self, sim: SimFactory) -> None:
        client = await sim()
        body = {"taskId": "s", "callBackUrl": CALLBACK, "audioId": "a" * 100_000}
        await provider_error(await client.post(GENERATE_PATH, json=body, headers=AUTH), 413)

    async def test_errors_as_http_200_when_configured(self, sim: SimFactory) -> None:
        """``error_status="ok"``: the code is in the body only, the HTTP status is 200."""
        client = await sim(error_status="ok")
        response = await client.post(GENERATE_PATH, json={"taskId": "s"}, headers=AUTH)
        await provider_error(response, 400, status=200)

    async def test_unknown_path_and_method(self, sim: SimFactory) -> None:
        client = await sim()
        await provider_error(await client.get("/api/v1/midi/nothing", headers=AUTH), 404)
        await provider_error(await client.get(GENERATE_PATH, headers=AUTH), 405)


class TestRecordInfo:
    async def test_missing_and_unknown_task(self, sim: SimFactory) -> None:
        client = await sim()
        await provider_error(await client.get(RECORD_INFO_PATH, headers=AUTH), 400)
        response = await client.get(RECORD_INFO_PATH, params={"taskId": "nope"}, headers=AUTH)
        await provider_error(response, 404)

    async def test_pending_then_complete(self, sim: SimFactory) -> None:
        """``successFlag`` 0 and no data while running; 1 with ``midiData`` once done."""
        client = await sim(clock=lambda: 1_760_335_255.0)
        await script(client, "src-p", completion_seconds=3600)
        await script(client, "src-c", callback="drop")
        task_id = await submit(client, "src-p", CALLBACK)
        pending = (await record_info(client, task_id))["data"]
        assert pending["successFlag"] == 0 and pending["midiData"] is None
        assert pending["completeTime"] is None and pending["callbackUrl"] == CALLBACK
        task_id = await submit(client, "src-c", CALLBACK, audio_id="audio-1")
        await settled(client, task_id, attempts=3)
        answer = await record_info(client, task_id)
        assert (answer["code"], answer["msg"]) == (200, "success")
        data = answer["data"]
        assert set(data) == {
            "taskId", "recordTaskId", "audioId", "callbackUrl", "completeTime", "createTime",
            "midiData", "successFlag", "errorCode", "errorMessage",
        }  # fmt: skip
        assert data["successFlag"] == 1 and data["midiData"]["state"] == "complete"
        assert data["completeTime"] == data["createTime"] == 1_760_335_255_000
        assert data["audioId"] == "audio-1" and data["taskId"] == task_id

    @pytest.mark.parametrize("shape", ["task_id", "data"])
    async def test_failure(self, sim: SimFactory, shape: str) -> None:
        """A failed task: successFlag 2 or 3, an error code and message, no MIDI data."""
        client = await sim()
        await script(client, "src-f", outcome="failure", callback="drop", shape=shape)
        task_id = await submit(client, "src-f", CALLBACK)
        await settled(client, task_id, attempts=3)
        data = (await record_info(client, task_id))["data"]
        assert data["successFlag"] in (2, 3) and data["midiData"] is None
        assert data["errorCode"] == 500 and data["errorMessage"]

    async def test_empty(self, sim: SimFactory) -> None:
        """``empty``: success with no instrument (the list empty or the key missing)."""
        client = await sim(faults=Faults(empty=1.0, drop=1.0))
        ids = [await submit(client, f"src-e{n}", CALLBACK) for n in range(8)]
        shapes = set()
        for task_id in ids:
            await settled(client, task_id, attempts=3)
            data = (await record_info(client, task_id))["data"]
            assert data["successFlag"] == 1 and data["midiData"].get("instruments", []) == []
            shapes.add("instruments" in data["midiData"])
        assert shapes == {True, False}


class TestNotes:
    async def test_notes_follow_the_provider(self, sim: SimFactory) -> None:
        """1/192 s grid, numbers and numeric strings, velocity 0-1, GM names or Drums."""
        client = await sim(faults=Faults(drop=1.0))
        names, kinds = set(), set()
        for n in range(12):
            task_id = await submit(client, f"src-n{n}", CALLBACK)
            await settled(client, task_id, attempts=3)
            for instrument in (await record_info(client, task_id))["data"]["midiData"][
                "instruments"
            ]:
                names.add(instrument["name"])
                for note in instrument["notes"]:
                    assert 0 <= note["pitch"] <= 127 and 0 <= note["velocity"] <= 1
                    for key in ("start", "end"):
                        kinds.add(type(note[key]))
                        ticks = float(note[key]) * 192
                        assert math.isclose(ticks, round(ticks), abs_tol=1e-6), note
                    assert float(note["start"]) < float(note["end"])
        assert kinds == {float, str} and "Drums" in names
        assert names <= {*GM_PROGRAM_NAMES, "Drums"}

    async def test_same_seed_same_tasks(self, sim: SimFactory) -> None:
        """Ids and notes come from the seed: the same submissions give the same answers."""

        async def run(seed: int) -> list[Any]:
            client = await sim(seed=seed, faults=Faults(drop=1.0))
            task_id = await submit(client, "src-d", CALLBACK)
            await settled(client, task_id, attempts=3)
            data = (await record_info(client, task_id))["data"]
            return [task_id, data["midiData"]]

        assert await run(5) == await run(5)
        assert await run(5) != await run(6)


class TestRateLimit:
    async def test_429_past_the_limit_then_the_window_slides(self, sim: SimFactory) -> None:
        """5 requests per 60 s: the 6th and 7th get 429; once the window passed, one more fits."""
        now = [1000.0]
        client = await sim(
            rate_limit_requests=5, rate_limit_window_seconds=60.0, clock=lambda: now[0]
        )
        statuses = []
        for _ in range(7):
            response = await client.get(RECORD_INFO_PATH, params={"taskId": "x"}, headers=AUTH)
            statuses.append(response.status)
        assert statuses == [404] * 5 + [429] * 2
        await provider_error(response, 429)
        now[0] += 60.0
        response = await client.get(RECORD_INFO_PATH, params={"taskId": "x"}, headers=AUTH)
        assert response.status == 404

    async def test_every_request_is_logged(self, sim: SimFactory) -> None:
        """The log has each API request, refused ones too, and none of the control API's."""
        client = await sim(rate_limit_requests=2)
        task_id = await submit(client, "src-l", CALLBACK)
        await client.get(RECORD_INFO_PATH, params={"taskId": task_id}, headers=AUTH)
        await client.get(RECORD_INFO_PATH, params={"taskId": task_id}, headers=AUTH)
        log = (await (await client.get("/_sim/requests")).json())["requests"]
        assert [(r["endpoint"], r["status"], r["code"]) for r in log] == [
            (GENERATE_PATH, 200, 200),
            (RECORD_INFO_PATH, 200, 200),
            (RECORD_INFO_PATH, 429, 429),
        ]
        assert log[1]["taskId"] == task_id and log[0]["time"] <= log[2]["time"]

    def test_busiest_window(self) -> None:
        """Requests in any window: a window ends just before the request one window later."""
        assert busiest_window([], 10.0) == 0
        assert busiest_window([0.0, 5.0, 9.9, 10.0, 19.0, 19.5], 10.0) == 4
        assert busiest_window([3.0, 1.0, 2.0], 1.0) == 1
        assert busiest_window([3.0, 1.0, 2.0], 1.5) == 2

    async def test_the_log_says_the_busiest_window(self, sim: SimFactory) -> None:
        client = await sim(rate_limit_requests=3, rate_limit_window_seconds=3600.0)
        for _ in range(5):
            await client.get(RECORD_INFO_PATH, headers=AUTH)
        answer = await (await client.get("/_sim/requests")).json()
        assert answer["busiestWindow"] == {"seconds": 3600.0, "requests": 5}


class TestFaults:
    @pytest.mark.parametrize("code", [429, 430, 455, 500])
    async def test_injected_answers(self, sim: SimFactory, code: int) -> None:
        """A fault ratio of 1 answers every request with its code, before the key check."""
        client = await sim(faults=Faults(api={code: 1.0}))
        response = await client.post(GENERATE_PATH, json={}, headers={})
        await provider_error(response, code)

    async def test_ratio_draws_follow_the_seed(self, sim: SimFactory) -> None:
        async def statuses(seed: int) -> list[int]:
            client = await sim(seed=seed, faults=Faults(api={429: 0.3, 455: 0.2}))
            answers = []
            for _ in range(15):
                response = await client.get(RECORD_INFO_PATH, params={"taskId": "x"})
                answers.append(response.status)
            return answers

        first = await statuses(3)
        assert first == await statuses(3) and {401, 429, 455} == set(first)

    async def test_slow_answers(self, sim: SimFactory) -> None:
        """A slow answer does not come within a client's shorter timeout."""
        client = await sim(faults=Faults(slow=1.0, slow_seconds=60.0))
        with pytest.raises(TimeoutError):
            await client.get(RECORD_INFO_PATH, headers=AUTH, timeout=ClientTimeout(total=0.3))

    async def test_faults_set_through_the_control_api(self, sim: SimFactory) -> None:
        client = await sim()
        response = await client.put("/_sim/faults", json={"api": {"455": 1.0}})
        assert response.status == 200 and (await response.json())["api"] == {"455": 1.0}
        await provider_error(await client.get(RECORD_INFO_PATH, headers=AUTH), 455)

    @pytest.mark.parametrize(
        ("path", "body"),
        [
            ("/_sim/faults", {"drop": 2}),
            ("/_sim/faults", {"api": {"404": 0.5}}),
            ("/_sim/faults", {"nonsense": 1}),
            ("/_sim/faults", {"drop": "a lot"}),
            ("/_sim/faults", [1]),
            ("/_sim/scripts/src", {"outcome": "maybe"}),
            ("/_sim/scripts/src", {"callback": "delay:soon"}),
            ("/_sim/scripts/src", {"shape": "round"}),
            ("/_sim/scripts/src", {"when": "now"}),
            ("/_sim/scripts/src", {"completion_seconds": -1}),
            ("/_sim/scripts/src", {"completion_seconds": "soon"}),
        ],
    )
    async def test_bad_control_input_gets_400(self, sim: SimFactory, path: str, body: Any) -> None:
        client = await sim()
        response = await client.put(path, json=body)
        await provider_error(response, 400)

    def test_bad_config_is_refused(self) -> None:
        with pytest.raises(SimConfigError, match="ratio"):
            Faults(drop=1.5)
        with pytest.raises(SimConfigError, match="error_status"):
            SimConfig(error_status="sometimes")  # type: ignore[arg-type]


class TestResults:
    def test_a_success_always_has_notes(self) -> None:
        """Instruments may be without notes, but never all of a success's: a result with
        no note at all is the ``empty`` outcome, which a script asks for by name."""
        for n in range(500):
            data = midi_data(7, f"task-{n}", "success")
            assert data is not None
            assert any(instrument["notes"] for instrument in data["instruments"]), n
