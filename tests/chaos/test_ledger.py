"""The ledger can fail: a clean world passes it, and each way a result can be lost or
changed is caught (the checks run on files and records made here, without servers)."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord

from devenv.chaos.ledger import CALLBACK_GROUPS, Ledger, ProviderTask
from services.common.events import CallbackEvent, sha256_hex
from services.common.keys import task_key
from services.processor.app import Processed, process_callback
from services.processor.notes_event import MidiLocation, encode_notes_event, notes_record
from services.tracker.registry import Task, TaskState

from ..archiver.support import callback_body

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def task(request_id: str, task_id: str, state: str) -> Task:
    values: dict[str, Any] = {f.name: None for f in dataclasses.fields(Task)}
    values |= {"pk": hash(task_id) % 1000, "request_id": request_id, "task_id": task_id}
    values |= {"origin": "tracker", "state": TaskState(state), "poll_count": 0}
    return Task(**values)


def record(value: bytes, key: str = "", headers: tuple[tuple[str, bytes], ...] = ()) -> Any:
    return ConsumerRecord("t", 0, 0, 0, 0, key.encode(), value, None, 0, len(value), headers)


def notes_event(task_id: str, body: bytes, received_at: datetime = NOW) -> Any:
    processed = process_callback(body)
    assert isinstance(processed, Processed)
    event = CallbackEvent(
        task_id=task_id, received_at=received_at, body=body, body_sha256=sha256_hex(body)
    )
    midi = processed.midi
    location = None if midi is None else MidiLocation("file:///m.mid", sha256_hex(midi), len(midi))
    return record(
        encode_notes_event(
            notes_record(
                event, processed.normalized, location, NOW, rendered=midi, tempo=processed.tempo
            )
        ),
        task_id,
    )


def dead_letter(key: str, group: str) -> Any:
    return record(
        b"x", key, (("dlq.consumer.group", group.encode()), ("dlq.reason", b"undecodable"))
    )


@dataclasses.dataclass
class World:
    """Two requests: one completed (delivered twice), one failed; every trace in place."""

    data_dir: Path
    provider: list[ProviderTask]
    tasks: list[Task]
    notes: list[Any]
    dead: list[Any]
    http: dict[str, int]

    def keep(self) -> Ledger:
        ledger = Ledger(seed=1)
        truths = ledger.check_tasks(["r-a", "r-b"], self.provider, self.tasks)
        ledger.check_files(truths, self.data_dir)
        ledger.check_archive(truths, {}, self.data_dir)
        ledger.check_notes(truths, self.notes)
        ledger.check_dead_letters(["chaos-bad-0"], self.dead)
        ledger.check_bad_http(self.http)
        return ledger

    def archive(self, task_id: str, body: bytes) -> Path:
        path = (
            self.data_dir / "raw" / task_key(task_id) / f"{hashlib.sha256(body).hexdigest()}.json"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        return path

    def midi(self, task_id: str) -> Path:
        return self.data_dir / "midi" / f"{task_key(task_id)}.mid"


@pytest.fixture(name="world")
def fixture_world(tmp_path: Path) -> World:
    done, failed = callback_body("task-a", pitch=64), callback_body("task-b", code=500)
    world = World(
        data_dir=tmp_path,
        provider=[
            ProviderTask("task-a", "r-a", "success", accepted=2, body=done),
            ProviderTask("task-b", "r-b", "failure", accepted=1, body=failed),
        ],
        tasks=[task("r-a", "task-a", "completed"), task("r-b", "task-b", "failed")],
        notes=[notes_event("task-a", done), notes_event("task-a", done)],
        dead=[dead_letter("chaos-bad-0", group) for group in CALLBACK_GROUPS],
        http={"not JSON": 400},
    )
    world.midi("task-a").parent.mkdir(parents=True)
    processed = process_callback(done)
    assert isinstance(processed, Processed) and processed.midi is not None
    world.midi("task-a").write_bytes(processed.midi)
    world.archive("task-a", done)
    world.archive("task-b", failed)
    return world


class TestLedger:
    def test_a_clean_world_is_ok(self, world: World) -> None:
        ledger = world.keep()
        assert ledger.ok, ledger.table()
        assert (ledger.requests, ledger.callbacks_accepted, ledger.duplicates_accepted) == (2, 3, 1)
        assert ledger.states == {"completed": 1, "failed": 1} == ledger.truth
        assert "lost" in ledger.table() and "seed" in ledger.table()

    def test_a_wrong_state_is_lost(self, world: World) -> None:
        world.tasks[1] = task("r-b", "task-b", "submitted")
        assert [line.split(":")[0] for line in world.keep().lost] == ["r-b"]

    def test_a_second_provider_task_is_lost(self, world: World) -> None:
        world.provider.append(dataclasses.replace(world.provider[1], task_id="task-b2"))
        assert "2 provider tasks" in world.keep().lost[0]

    def test_a_changed_midi_file_is_mismatched(self, world: World) -> None:
        world.midi("task-a").write_bytes(world.midi("task-a").read_bytes() + b"\x00")
        assert world.keep().mismatched == ["r-a: task-a.mid differs from a clean rendering"]

    def test_a_missing_midi_file_is_lost(self, world: World) -> None:
        world.midi("task-a").unlink()
        assert world.keep().lost == ["r-a: no MIDI file task-a.mid"]

    def test_a_body_missing_from_the_archive_is_lost(self, world: World) -> None:
        world.archive("task-b", world.provider[1].body).unlink()
        assert world.keep().lost[0].startswith("r-b: body")

    def test_a_changed_archived_body_is_mismatched(self, world: World) -> None:
        world.archive("task-a", world.provider[0].body).write_bytes(b"{}")
        assert world.keep().mismatched[0].startswith("r-a: archived body")

    def test_two_notes_events_of_one_rendering_that_disagree(self, world: World) -> None:
        processed = process_callback(world.provider[0].body)
        assert isinstance(processed, Processed)
        event = CallbackEvent(
            task_id="task-a",
            received_at=NOW,
            body=world.provider[0].body,
            body_sha256=sha256_hex(world.provider[0].body),
        )
        fields = notes_record(
            event, processed.normalized, None, NOW, rendered=processed.midi, tempo=processed.tempo
        )
        world.notes.append(record(encode_notes_event(fields), "task-a"))
        assert "disagree" in world.keep().mismatched[0]

    def test_a_missing_notes_event_is_lost(self, world: World) -> None:
        world.notes.clear()
        assert world.keep().lost == ["r-a: no notes event for task task-a"]

    def test_a_dead_letter_not_injected_is_a_problem(self, world: World) -> None:
        world.dead.append(dead_letter("task-a", "suno-midi-processor"))
        assert world.keep().problems[0].startswith("dead letter 'task-a'")

    def test_an_injected_record_not_dead_lettered_is_a_problem(self, world: World) -> None:
        world.dead.pop()
        assert "dead-lettered 0 times" in world.keep().problems[0]

    def test_a_bad_input_answered_5xx_is_a_problem(self, world: World) -> None:
        world.http["not JSON"] = 500
        assert world.keep().problems == ["bad input (not JSON) answered 500, not a 4xx"]

    def test_a_task_the_registry_holds_as_external_is_a_problem(self, world: World) -> None:
        world.tasks.append(dataclasses.replace(task("", "task-x", "completed"), request_id=None))
        assert world.keep().problems == ["task task-x is in the registry as external"]
