"""The tracker in the whole system: tasks submitted, delivered, lost and recovered by polling,
failed, requested twice; on real Kafka, real PostgreSQL and the provider simulator."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devenv.simulator import Faults
from services.common.events import MidiRequest
from services.common.kafka import Publisher
from services.common.keys import task_key
from services.common.settings import Settings
from services.processor.normalize import normalize
from services.processor.render import render_midi
from services.processor.tempo_map import estimate_map

from ..helpers import eventually
from .stack import AUTH, StackFactory, midi_of_record_info

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]


def midi_file(data_dir: Path, task_id: str) -> bytes:
    return (data_dir / "midi" / f"{task_key(task_id)}.mid").read_bytes()


class TestLifecycle:
    async def test_callbacks_all_dropped_the_task_is_recovered_by_polling(
        self, stack: StackFactory
    ) -> None:
        """No callback ever arrives; a poll fetches the result, the pipeline makes the very
        MIDI file the callback would have made, and the task ends completed."""
        system = await stack()
        await system.script("src-lost", outcome="success", callback="drop")
        status, answer = await system.request("src-lost", "req-lost")
        assert status == 202 and answer["created"] is True
        done = await system.settled("req-lost", "completed")
        task_id = done["task"]["task_id"]
        assert [d["source"] for d in done["deliveries"]] == ["poll"]
        assert done["polls"] and done["polls"][-1]["outcome"] == "completed"
        (provider_task,) = await system.provider_tasks("src-lost")
        assert provider_task["taskId"] == task_id
        assert all(attempt["status"] is None for attempt in provider_task["attempts"])
        normalized = normalize(midi_of_record_info(await system.record_info(task_id)))
        expected = render_midi(normalized, estimate_map(normalized.instruments))
        assert midi_file(system.settings.storage.data_dir, task_id) == expected

    async def test_a_delivered_task_and_a_failed_one(self, stack: StackFactory) -> None:
        """A callback completes its task (linked to its request by the callback URL); a
        failure callback fails it; neither is polled."""
        system = await stack(poll_after_seconds=600)
        await system.script("src-ok", outcome="success", callback="deliver")
        await system.script("src-bad", outcome="failure", callback="deliver")
        await system.request("src-ok", "req-ok")
        await system.request("src-bad", "req-bad")
        ok = await system.settled("req-ok", "completed")
        bad = await system.settled("req-bad", "failed")
        for found in (ok, bad):
            assert [d["source"] for d in found["deliveries"]] == ["callback"]
            assert found["deliveries"][0]["verified"] is True
            assert found["polls"] == []
        assert midi_file(system.settings.storage.data_dir, ok["task"]["task_id"])

    async def test_the_same_request_twice_makes_one_provider_task(
        self, stack: StackFactory
    ) -> None:
        """Over HTTP twice, to two replicas: one intent, one generate."""
        system = await stack(replicas=2, poll_after_seconds=600)
        first = await system.request("src-once", "req-once", tracker=0)
        second = await system.request("src-once", "req-once", tracker=1)
        assert (first[0], second[0]) == (202, 200)
        assert second[1]["created"] is False
        await system.settled("req-once", "completed")
        assert len(await system.provider_tasks("src-once")) == 1

    async def test_requests_on_the_topic_and_a_failure_found_by_polling(
        self, stack: StackFactory, publisher: Publisher
    ) -> None:
        """A MidiRequest on the requests topic is submitted like an HTTP one (the same id
        again on the topic makes nothing new); a failed task whose callback is lost is
        failed by its poll (successFlag 3), and its record-info answer is archived."""
        system = await stack()
        await system.script("src-topic", outcome="success", callback="deliver")
        await system.script("src-fail-lost", outcome="failure", callback="drop")
        topic = system.settings.kafka.topics.requests
        now = datetime.now(UTC)
        for source, request_id in (
            ("src-topic", "req-topic"),
            ("src-topic", "req-topic"),
            ("src-fail-lost", "req-fail-lost"),
        ):
            request = MidiRequest(request_id, source, now, requested_by="test")
            await publisher.publish(topic, key=request_id.encode(), value=request.encode())
        await system.settled("req-topic", "completed")
        failed = await system.settled("req-fail-lost", "failed")
        assert [d["source"] for d in failed["deliveries"]] == ["poll"]
        assert failed["polls"][-1]["outcome"] == "failed"
        assert len(await system.provider_tasks("src-topic")) == 1
        raw = system.settings.storage.data_dir / "raw" / task_key(failed["task"]["task_id"])
        archived = await eventually(lambda: list(raw.glob("*.json")), what="the archived answer")
        assert any(b'"successFlag"' in path.read_bytes() for path in archived)


class TestApi:
    async def test_refusals_are_clear(self, stack: StackFactory) -> None:
        """No or a wrong token: 401; bad bodies and filters: 400 naming the problem; an
        unknown task: 404; all as JSON errors."""
        system = await stack(poll_after_seconds=600)
        url = system.trackers[0].make_url("/v1/midi/requests")
        cases = [
            ({}, {"source_task_id": "s"}, 401, "unauthorized"),
            ({"Authorization": "Bearer nope"}, {"source_task_id": "s"}, 401, "unauthorized"),
            (AUTH, {"request_id": "a b", "source_task_id": "s"}, 400, "invalid_request"),
            (AUTH, {"source_task_id": ""}, 400, "invalid_request"),
            (AUTH, {"source_task_id": "s", "colour": "red"}, 400, "invalid_request"),
            (AUTH, [1, 2], 400, "invalid_request"),
        ]
        for headers, body, status, code in cases:
            async with system.http.post(url, json=body, headers=headers) as response:
                assert response.status == status, (body, await response.text())
                assert (await response.json())["error"]["code"] == code
        for data, status, code in (
            (b"{not json", 400, "invalid_json"),
            (b'{"source_task_id": "' + b"x" * 20_000 + b'"}', 413, "body_too_large"),
        ):
            async with system.http.post(url, data=data, headers=AUTH) as response:
                assert response.status == status
                assert (await response.json())["error"]["code"] == code
        tasks = system.trackers[0].make_url("/v1/midi/tasks")
        async with system.http.get(tasks, params={"state": "lost"}, headers=AUTH) as response:
            assert response.status == 400
        async with system.http.get(f"{tasks}/nope", headers=AUTH) as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "not_found"

    async def test_without_tokens_the_api_is_off(self, stack: StackFactory) -> None:
        """Fail closed: no TRACKER_API_TOKENS, every API call 403; health stays open."""
        system = await stack(api_tokens=())
        status, answer = await system.request("src-x")
        assert status == 403 and answer["error"]["code"] == "api_disabled"
        async with system.http.get(system.trackers[0].make_url("/healthz")) as response:
            assert response.status == 200


class TestFaults:
    async def test_a_429_storm_is_absorbed_within_the_shared_rate(
        self, stack: StackFactory
    ) -> None:
        """Half the provider's answers are 429; two replicas share a limit of 4 requests a
        second: every request ends with one task, and no second held more than 4 calls.
        (Which source gets which simulated result depends on the replicas' order: a success
        may hold no notes, which ends it empty, as the provider's can.)"""
        system = await stack(
            replicas=2,
            sim={"faults": Faults(api={429: 0.5}), "rate_limit_window_seconds": 1.0, "seed": 3},
            rate_limit_requests=4,
            rate_limit_window_seconds=1.0,
            poll_after_seconds=600,
        )
        sources = [f"src-storm-{n}" for n in range(10)]
        for n, source in enumerate(sources):
            await system.request(source, f"req-storm-{n}", tracker=n % 2)
        for n in range(len(sources)):
            await system.settled(f"req-storm-{n}", frozenset({"completed", "empty"}), timeout=90)
        for source in sources:
            assert len(await system.provider_tasks(source)) == 1
        log = await system.sim_json("GET", "/_sim/requests")
        refused = [r for r in log["requests"] if r["status"] == 429]
        assert refused, "the storm did not happen: no 429 was answered"
        assert log["busiestWindow"]["seconds"] == 1.0
        assert log["busiestWindow"]["requests"] <= 4, log["busiestWindow"]

    async def test_killed_between_the_providers_answer_and_its_write(
        self, stack: StackFactory
    ) -> None:
        """``suno-tracker submit`` is SIGKILLed while its generate is in flight: the provider
        makes the task, we never learn its id. Nobody resubmits the request; its callback
        names the request (the callback URL's request_id) and heals it to completion."""
        system = await stack(poll_after_seconds=600)
        await system.sim_json("PUT", "/_sim/faults", {"slow": 1.0, "slow_seconds": 3.0})
        env = {
            **os.environ,
            **settings_environment(system.settings),
            "LOG_LEVEL": "WARNING",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.tracker",
            "submit",
            "src-crash",
            "--request-id",
            "req-crash",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

        async def in_flight() -> bool:
            """Claimed, and the provider has made the task (its answer is 3 s late)."""
            found = await system.task("req-crash")
            claimed = found is not None and found["task"]["submit_started_at"] is not None
            return claimed and bool(await system.provider_tasks("src-crash"))

        await eventually(in_flight, timeout=30, interval=0.05, what="the generate in flight")
        process.send_signal(signal.SIGKILL)
        assert await process.wait() == -signal.SIGKILL
        await system.sim_json("PUT", "/_sim/faults", {})
        orphan = await system.task("req-crash")
        assert orphan is not None and orphan["task"]["task_id"] is None

        healed = await system.settled("req-crash", "completed")
        (provider_task,) = await system.provider_tasks("src-crash")
        assert healed["task"]["task_id"] == provider_task["taskId"]
        assert any("healed" in (t["reason"] or "") for t in healed["transitions"])
        assert len(await system.provider_tasks("src-crash")) == 1


def settings_environment(settings: Settings) -> dict[str, str]:
    """The variables a separate tracker process needs to act as ``settings`` says."""
    tracker = settings.tracker
    assert tracker.database_url is not None and tracker.api_key is not None
    return {
        "DATABASE_URL": tracker.database_url.get(),
        "SUNO_API_BASE_URL": tracker.api_base_url,
        "SUNO_API_KEY": tracker.api_key.get(),
        "TRACKER_CALLBACK_URL": tracker.callback_url or "",
        "SUNO_API_TIMEOUT_SECONDS": "30",
    }
