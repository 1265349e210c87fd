"""The tracker in the whole system: tasks submitted, delivered, lost and recovered by polling,
failed, requested twice; on real Kafka, real PostgreSQL and the provider simulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.keys import task_key
from services.processor.normalize import normalize
from services.processor.render import render_midi

from .stack import StackFactory, midi_of_record_info

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
        expected = render_midi(normalize(midi_of_record_info(await system.record_info(task_id))))
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
