"""The console's read API over a real registry and a real storage: lists, filters, pages,
one task, its notes and its files, and the errors of each."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from services.archiver.archive import archive_event, raw_key
from services.processor.normalize import normalize
from services.tracker.registry import TaskState

from .conftest import (
    Console,
    callback_event,
    console_settings,
    running_console,
    simulated_body,
    unique,
)

pytestmark = pytest.mark.postgres

TASKS = "/api/v1/tasks"


def get(console: Console, path: str, **params: Any) -> requests.Response:
    return requests.get(console.url + path, params=params, timeout=30)


def ok(console: Console, path: str, **params: Any) -> Any:
    response = get(console, path, **params)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()


def assert_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"], error


def requested(console: Console, count: int) -> list[str]:
    """``count`` tasks recorded as requests only; their request ids, oldest first."""
    ids = [unique("req") for _ in range(count)]
    for request_id in ids:
        console.run(console.registry.request(request_id, "source", None, "http://x/cb"))
    return ids


class TestList:
    def test_newest_first_with_the_summary_fields(self, console: Console) -> None:
        """Newest first; each task says ids, state, origin, times, polls and deliveries."""
        older = console.completed_task()
        newer = requested(console, 1)[0]
        tasks = ok(console, TASKS)["tasks"]
        assert [t["request_id"] for t in tasks] == [newer, older.request_id]
        assert tasks[1] == {
            "task_id": older.task_id,
            "request_id": older.request_id,
            "state": "completed",
            "origin": "tracker",
            "created_at": tasks[1]["created_at"],
            "updated_at": tasks[1]["updated_at"],
            "poll_count": 0,
            "deliveries": 1,
            "dead_letters": 0,
        }
        assert datetime.fromisoformat(tasks[1]["created_at"]).tzinfo is not None
        assert ok(console, TASKS)["next_cursor"] is None

    def test_state_filter(self, console: Console) -> None:
        """``state`` keeps the tasks in that state only."""
        done = console.completed_task()
        waiting = requested(console, 2)
        assert [t["request_id"] for t in ok(console, TASKS, state="completed")["tasks"]] == [
            done.request_id
        ]
        assert [t["request_id"] for t in ok(console, TASKS, state="requested")["tasks"]] == [
            *reversed(waiting)
        ]
        assert ok(console, TASKS, state="expired")["tasks"] == []

    def test_time_range(self, console: Console) -> None:
        """``since`` (inclusive) and ``until`` (exclusive) bound created_at."""
        ids = requested(console, 3)
        pool = console.registry.pool
        base = datetime(2026, 11, 1, 12, tzinfo=UTC)
        for hours, request_id in enumerate(ids):
            console.run(
                pool.execute(
                    "UPDATE tasks SET created_at = $1 WHERE request_id = $2",
                    base + timedelta(hours=hours),
                    request_id,
                )
            )
        found = ok(console, TASKS, since="2026-11-01T13:00:00Z", until="2026-11-01T14:00:00Z")
        assert [t["request_id"] for t in found["tasks"]] == [ids[1]]
        # Without an offset: UTC. With one: that offset.
        found = ok(console, TASKS, since="2026-11-01T13:00:00")
        assert [t["request_id"] for t in found["tasks"]] == [ids[2], ids[1]]
        found = ok(console, TASKS, until="2026-11-01T14:00:00+01:00")
        assert [t["request_id"] for t in found["tasks"]] == [ids[0]]

    def test_q_matches_task_or_request_id_and_their_prefixes(self, console: Console) -> None:
        """``q`` finds a task by its task id or request id, whole or their start only."""
        first = console.completed_task(task_id="abc%_1-task")
        second = console.completed_task(task_id="abcd-task")
        other = console.completed_task()

        def found(q: str) -> set[str]:
            return {t["task_id"] for t in ok(console, TASKS, q=q)["tasks"]}

        assert found("abc") == {first.task_id, second.task_id}
        assert found("abcd") == {second.task_id}
        # LIKE's wildcards are plain characters here.
        assert found("abc%") == {first.task_id}
        assert found("ab_d") == set()
        assert found(other.request_id) == {other.task_id}
        assert found(other.request_id[:8]) >= {other.task_id}
        assert found(other.task_id) == {other.task_id}
        assert found("zzz-nothing") == set()

    def test_pages_cover_everything_once(self, console: Console) -> None:
        """Following next_cursor visits every task once, in order, also where many tasks
        share one creation instant (the page boundary falls inside it)."""
        ids = requested(console, 23)
        console.run(
            console.registry.pool.execute(
                "UPDATE tasks SET created_at = '2026-11-02T00:00:00Z' WHERE request_id = ANY($1)",
                ids[5:15],
            )
        )
        expected = [
            row["request_id"]
            for row in console.run(
                console.registry.pool.fetch(
                    "SELECT request_id FROM tasks ORDER BY created_at DESC, id DESC"
                )
            )
        ]
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 4}
            if cursor is not None:
                params["cursor"] = cursor
            page = ok(console, TASKS, **params)
            assert len(page["tasks"]) <= 4
            seen += [t["request_id"] for t in page["tasks"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == expected and len(seen) == 23
        assert pages == 6

    def test_a_full_last_page_has_no_cursor(self, console: Console) -> None:
        """Exactly ``limit`` tasks left: that page is the last one."""
        requested(console, 4)
        first = ok(console, TASKS, limit=2)
        second = ok(console, TASKS, limit=2, cursor=first["next_cursor"])
        assert len(second["tasks"]) == 2 and second["next_cursor"] is None

    def test_pages_keep_the_filters(self, console: Console) -> None:
        """A cursor with the same filters pages within them."""
        requested(console, 3)
        for _ in range(3):
            console.completed_task()
        first = ok(console, TASKS, state="completed", limit=2)
        rest = ok(console, TASKS, state="completed", limit=2, cursor=first["next_cursor"])
        states = {t["state"] for t in first["tasks"] + rest["tasks"]}
        assert states == {"completed"} and len(first["tasks"] + rest["tasks"]) == 3

    @pytest.mark.parametrize(
        ("params", "code"),
        [
            ({"state": "done"}, "invalid_state"),
            ({"limit": "0"}, "invalid_limit"),
            ({"limit": "201"}, "invalid_limit"),
            ({"limit": "ten"}, "invalid_limit"),
            ({"since": "yesterday"}, "invalid_since"),
            ({"until": "2026-13-01"}, "invalid_until"),
            ({"cursor": "not-a-cursor"}, "invalid_cursor"),
            ({"cursor": "MTIz"}, "invalid_cursor"),
            ({"q": "ab"}, "invalid_query"),
            ({"q": "abc\u00e9"}, "invalid_query"),
            ({"has_dead_letters": "yes"}, "invalid_has_dead_letters"),
            ({"has_dead_letters": "True"}, "invalid_has_dead_letters"),
            ({"has_dead_letters": ""}, "invalid_has_dead_letters"),
        ],
    )
    def test_bad_parameters_are_400(
        self, console: Console, params: dict[str, str], code: str
    ) -> None:
        """Each bad parameter is a 400 naming it, as JSON."""
        assert_error(get(console, TASKS, **params), 400, code)


class TestCounts:
    def test_counts_by_state_and_oldest_open(self, console: Console) -> None:
        """Every state is counted (0 included); the oldest open task's age in seconds."""
        empty = ok(console, "/api/v1/counts")
        assert empty["counts"] == dict.fromkeys((s.value for s in TaskState), 0)
        assert empty["oldest_open_seconds"] is None
        console.completed_task()
        requested(console, 2)
        found = ok(console, "/api/v1/counts")
        assert found["counts"]["completed"] == 1 and found["counts"]["requested"] == 2
        assert sum(found["counts"].values()) == 3
        assert found["oldest_open_seconds"] >= 0


class TestTask:
    def test_by_task_id_or_request_id(self, console: Console) -> None:
        """``{id}`` is the provider's task id or our request id: the same document."""
        made = console.completed_task()
        by_task = ok(console, f"{TASKS}/{made.task_id}")
        assert by_task == ok(console, f"{TASKS}/{made.request_id}")
        task = by_task["task"]
        assert task["task_id"] == made.task_id and task["state"] == "completed"
        assert task["deliveries"] == 1 and task["completed_at"] is not None
        assert task["source_task_id"].startswith("source-") and task["submit_outcome"] is None

    def test_an_id_with_a_slash_is_percent_encoded(self, console: Console) -> None:
        """Task ids may hold ``/`` (any printable ASCII): encoded as %2F they still name it."""
        made = console.completed_task(task_id="folder/task:1")
        path = f"{TASKS}/{quote(made.task_id, safe='')}"
        assert ok(console, path)["task"]["task_id"] == made.task_id
        assert get(console, f"{path}/raw").content == made.body
        midi = get(console, f"{path}/midi")
        assert midi.headers["Content-Disposition"] == 'attachment; filename="folder%2Ftask%3A1.mid"'

    def test_unknown_task_is_404(self, console: Console) -> None:
        """An id the registry does not know: 404 as JSON, on every task route."""
        for suffix in ("", "/notes", "/midi", "/raw"):
            assert_error(get(console, f"{TASKS}/nope-nothing{suffix}"), 404, "not_found")

    def test_timeline_in_time_order(self, console: Console) -> None:
        """Transitions, deliveries and polls in one list ordered by time."""
        made = console.completed_task()
        pk = console.run(console.registry.get(made.task_id))
        assert pk is not None
        console.run(
            console.registry.pool.execute(
                "INSERT INTO task_polls (task, at, owner, outcome, detail)"
                " VALUES ($1, now() - interval '1 hour', 'replica-1', 'pending', 'not yet')",
                pk.pk,
            )
        )
        timeline = ok(console, f"{TASKS}/{made.task_id}")["timeline"]
        kinds = [(event["kind"], event["detail"].get("to")) for event in timeline]
        assert kinds == [
            ("poll", None),
            ("transition", "requested"),
            ("transition", "submitted"),
            ("delivery", None),
            ("transition", "completed"),
        ]
        times = [datetime.fromisoformat(event["at"]) for event in timeline]
        assert times == sorted(times)
        delivery = timeline[3]
        assert delivery["detail"]["body_sha256"] == made.body_sha256
        assert delivery["detail"]["verified"] is True
        assert delivery["detail"]["source"] == "callback"
        assert timeline[0]["detail"]["outcome"] == "pending"
        assert all(event["summary"] for event in timeline)


class TestNotes:
    def test_the_normalized_notes_of_the_body(self, console: Console) -> None:
        """Every instrument and note as the processor's normalize reads the body."""
        task_id = unique("task")
        made = console.completed_task(task_id=task_id, body=simulated_body(task_id))
        document = ok(console, f"{TASKS}/{made.request_id}/notes")
        normalized = normalize(json.loads(made.body))
        assert document["task_id"] == task_id and document["body_sha256"] == made.body_sha256
        assert document["state"] == "complete"
        assert [i["name"] for i in document["instruments"]] == [
            i.name for i in normalized.instruments
        ]
        for got, want in zip(document["instruments"], normalized.instruments, strict=True):
            assert got["note_count"] == len(want.notes) == len(got["notes"])
            assert got["notes"] == [[n.pitch, n.start, n.end, n.velocity] for n in want.notes]
            assert got["is_drum"] == (want.name == "Drums")
            if got["is_drum"]:
                assert got["channel"] == 9
        ends = [n.end for i in normalized.instruments for n in i.notes]
        assert document["duration_seconds"] == max(ends)
        assert normalized.note_count > 0

    def test_drop_reasons(self, console: Console) -> None:
        """Notes the normalizer drops are counted by reason; velocity is the 0..1 sent."""
        task_id = unique("task")
        notes = [
            {"pitch": 60, "start": 0, "end": 1, "velocity": 0.5},
            {"pitch": 60, "start": "0.5", "end": "2.25"},
            {"pitch": 200, "start": 0, "end": 1},
            {"pitch": 61, "start": 2, "end": 1},
            {"pitch": 62, "start": 2, "end": 3, "velocity": 7},
        ]
        payload = {
            "code": 200,
            "msg": "success",
            "data": {"taskId": task_id, "instruments": [{"name": "Violin", "notes": notes}]},
        }
        made = console.completed_task(task_id=task_id, body=json.dumps(payload).encode())
        document = ok(console, f"{TASKS}/{task_id}/notes")
        violin = document["instruments"][0]
        assert violin["notes"] == [[60, 0.0, 1.0, 0.5], [60, 0.5, 2.25, 1.0]]
        assert violin["program"] == 40 and violin["is_drum"] is False
        assert document["dropped_notes"] == {
            "invalid_pitch": 1,
            "end_not_after_start": 1,
            "invalid_velocity": 1,
        }
        assert document["duration_seconds"] == 2.25
        assert made.midi is not None

    def test_the_newest_body_wins(self, console: Console) -> None:
        """Two bodies for one task: the later received one is shown and downloaded."""
        task_id = unique("task")
        made = console.completed_task(task_id=task_id)
        newer = simulated_body(task_id, seed=3)
        later = datetime.now(UTC) + timedelta(minutes=1)
        _archive(console, task_id, newer, later)
        document = ok(console, f"{TASKS}/{task_id}/notes")
        assert document["body_sha256"] == hashlib.sha256(newer).hexdigest() != made.body_sha256
        assert get(console, f"{TASKS}/{task_id}/raw").content == newer

    def test_a_delivery_not_archived_yet_is_passed_over(self, console: Console) -> None:
        """The newest delivery's body is not archived yet: the one before it is shown."""
        task_id = unique("task")
        made = console.completed_task(task_id=task_id)
        console.run(
            console.registry.record_delivery(
                task_id,
                body_sha256="f" * 64,
                received_at=datetime.now(UTC) + timedelta(minutes=1),
                verified=True,
                source="poll",
            )
        )
        assert ok(console, f"{TASKS}/{task_id}/notes")["body_sha256"] == made.body_sha256

    def test_no_body_is_404(self, console: Console) -> None:
        """A task with no archived body: 404 for its notes and raw body, and its file."""
        request_id = requested(console, 1)[0]
        assert_error(get(console, f"{TASKS}/{request_id}/notes"), 404, "no_body")
        assert_error(get(console, f"{TASKS}/{request_id}/raw"), 404, "no_body")
        assert_error(get(console, f"{TASKS}/{request_id}/midi"), 404, "no_midi")

    @pytest.mark.parametrize("cache_bytes", [1 << 20, 0])
    def test_a_body_is_made_into_notes_once(
        self, database_url: str, tmp_path: Path, cache_bytes: int
    ) -> None:
        """The document of an archived body is made once and kept (its bytes cannot change
        under their hash): the stored body is swapped behind the console's back, and a
        console with a cache still serves the first document; one without reads again."""
        settings = console_settings(database_url, tmp_path / "data", notes_cache_bytes=cache_bytes)
        with running_console(settings) as console:
            task_id = unique("task")
            made = console.completed_task(task_id=task_id)
            first = ok(console, f"{TASKS}/{task_id}/notes")
            other = simulated_body(task_id, seed=5)
            console.run(console.storage.put(raw_key(task_id, made.body_sha256), other))
            again = ok(console, f"{TASKS}/{task_id}/notes")
        if cache_bytes:
            assert again == first
        else:
            assert again["instruments"] != first["instruments"]

    def test_a_body_that_is_not_json_is_422(self, console: Console) -> None:
        """An archived body that is not a JSON object has no notes: 422, never a 500."""
        task_id = unique("task")
        console.completed_task(task_id=task_id)
        _archive(console, task_id, b"[1, 2]", datetime.now(UTC) + timedelta(minutes=1))
        assert_error(get(console, f"{TASKS}/{task_id}/notes"), 422, "unreadable_body")


class TestDownloads:
    def test_midi_byte_for_byte(self, console: Console) -> None:
        """The processor's file, as an audio/midi attachment."""
        task_id = unique("task")
        made = console.completed_task(task_id=task_id, body=simulated_body(task_id))
        response = get(console, f"{TASKS}/{made.request_id}/midi")
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "audio/midi"
        assert response.headers["Content-Disposition"] == f'attachment; filename="{task_id}.mid"'
        assert made.midi is not None and response.content == made.midi
        assert response.content.startswith(b"MThd")

    def test_raw_body_byte_for_byte(self, console: Console) -> None:
        """The archived body exactly as received (not re-encoded)."""
        made = console.completed_task()
        response = get(console, f"{TASKS}/{made.task_id}/raw")
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.headers["Content-Disposition"].startswith("attachment; ")
        assert response.content == made.body

    def test_a_task_without_a_file_is_404(self, console: Console) -> None:
        """A failed callback renders no file."""
        task_id = unique("task")
        failed = json.dumps({"code": 501, "msg": "failed", "data": {"taskId": task_id}})
        made = console.completed_task(task_id=task_id, body=failed.encode())
        assert made.midi is None
        assert ok(console, f"{TASKS}/{task_id}")["task"]["state"] == "failed"
        assert_error(get(console, f"{TASKS}/{task_id}/midi"), 404, "no_midi")
        assert ok(console, f"{TASKS}/{task_id}/notes")["state"] == "failed"


def _archive(console: Console, task_id: str, body: bytes, received_at: datetime) -> None:
    """Archive ``body`` as the archiver would and record its delivery."""
    event = callback_event(task_id, body, received_at, unique("req"))
    console.run(archive_event(console.storage, event))
    console.run(
        console.registry.record_delivery(
            task_id,
            body_sha256=event.body_sha256,
            received_at=received_at,
            verified=True,
            source="callback",
        )
    )
