"""Replays in a task's timeline, on the session's Kafka and a real registry: an operator's
replay through the console and one by ``suno-archiver replay``, each read back by the
tracker's own handler with what the real processor made of it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis

from services.archiver.cli import main
from services.common.kafka import Publisher
from services.common.replays import ReplayMark
from services.common.settings import Settings
from services.tracker.registry import Registry, Rendering
from tests.helpers import eventually, service_environment

from .conftest import PASSWORD, USER, Console, replays_tracked
from .test_actions import basic, replay_request

pytestmark = [pytest.mark.postgres]

SPEC = Path(__file__).resolve().parents[2] / "services" / "console" / "openapi.yaml"


def run_cli(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exited:
        return exited.code if isinstance(exited.code, int) else 1
    return 0


def timeline(url: str, task_id: str) -> list[dict[str, Any]]:
    """The task's timeline, the answer valid per the description."""
    response = requests.get(f"{url}/api/v1/tasks/{task_id}", timeout=30)
    schemathesis.openapi.from_path(str(SPEC))["/api/v1/tasks/{id}"]["GET"].validate_response(
        response
    )
    events: list[dict[str, Any]] = response.json()["timeline"]
    return events


async def replays_of(url: str, task_id: str, count: int) -> list[dict[str, Any]] | None:
    """The task's replay events once there are ``count``, every body rendered."""
    events = await asyncio.to_thread(timeline, url, task_id)
    found = [event for event in events if event["kind"] == "replay"]
    assert len(found) <= count, found
    rendered = all(body["rendering"] for event in found for body in event["detail"]["bodies"])
    return found if len(found) == count and rendered else None


@pytest.mark.kafka
async def test_every_replay_is_in_the_timeline(
    operator_console: Console,
    settings: Settings,
    publisher: Publisher,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The console's replay names its operator, the CLI's says it came from the CLI; both
    show what the processor rendered; neither is a new delivery."""
    created = operator_console.completed_task()
    task_id = created.task_id
    async with replays_tracked(settings, database_url, publisher) as registry:
        status, _ = await replay_request(operator_console, task_id, basic(USER, PASSWORD))
        assert status == 202
        await replayed(registry, task_id, 1)  # the console's first: the order is known
        for name, value in service_environment(settings).items():
            monkeypatch.setenv(name, value)
        argv = ["replay", "--task-id", task_id, "--quiet"]
        assert await asyncio.to_thread(run_cli, argv) == 0
        replays = await eventually(
            lambda: replays_of(operator_console.url, task_id, 2), what="two rendered replays"
        )
    kinds = [
        event["kind"] for event in await asyncio.to_thread(timeline, operator_console.url, task_id)
    ]
    by_console, by_cli = replays
    assert (by_console["detail"]["by"], by_console["detail"]["via"]) == (USER, "console")
    assert (by_cli["detail"]["by"], by_cli["detail"]["via"]) == (None, "cli")
    assert by_console["detail"]["replay_id"] != by_cli["detail"]["replay_id"]
    for event in replays:
        (body,) = event["detail"]["bodies"]
        assert body["body_sha256"] == created.body_sha256
        rendering = body["rendering"]
        assert (rendering["state"], rendering["note_count"]) == ("complete", 2)
        assert rendering["rendered_at"] >= body["replayed_at"]
        assert "rendered 1 of 1 (complete, 2 notes)" in event["summary"]
    assert f"replay (by {USER}, console): 1 body" in by_console["summary"]
    assert by_cli["summary"].startswith("replay (cli): 1 body")
    # Two renderings, one per replay: none paired twice.
    renderings = {e["detail"]["bodies"][0]["rendering"]["rendered_at"] for e in replays}
    assert len(renderings) == 2
    assert kinds.count("delivery") == 1


async def replayed(registry: Registry, task_id: str, count: int) -> int:
    """Wait until the tracker has recorded ``count`` replayed records of the task."""

    async def found() -> int | None:
        task = await registry.get(task_id)
        assert task is not None
        records, _ = await registry.replays(task.pk)
        return len(records) if len(records) >= count else None

    return await eventually(found, what=f"{count} replayed records")


def test_overlapping_replays_pair_each_rendering_once(console: Console) -> None:
    """Two replays of one body sent before either is rendered: the earlier rendering goes
    to the earlier replay, the later one to the later; a record or notes event read twice
    adds nothing."""
    created = console.completed_task()
    registry, sha = console.registry, created.body_sha256
    task = console.run(registry.get(created.task_id))
    assert task is not None
    start = datetime.now(UTC)
    first, second = ReplayMark("console", "ada"), ReplayMark("cli")
    for mark, offset in ((first, 0), (second, 1), (first, 0)):
        console.run(registry.record_replay(task.pk, sha, mark, start + timedelta(seconds=offset)))
    for offset, notes in ((2, 5), (3, 7), (2, 5)):
        at = start + timedelta(seconds=offset)
        console.run(
            registry.replay_rendered(
                task.task_id or "", Rendering(sha, at, "complete", notes, True)
            )
        )
    replays = [
        event for event in timeline(console.url, created.task_id) if event["kind"] == "replay"
    ]
    assert [event["detail"]["replay_id"] for event in replays] == [
        first.replay_id,
        second.replay_id,
    ]
    counts = [event["detail"]["bodies"][0]["rendering"]["note_count"] for event in replays]
    assert counts == [5, 7]
    assert [event["detail"]["by"] for event in replays] == ["ada", None]
