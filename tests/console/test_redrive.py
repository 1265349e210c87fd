"""The console's redrive: refused like every action, and against the session's real broker
a dead letter goes back onto its source topic byte for byte, once, with the archiver's
redrive headers, and the timeline says so."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
import schemathesis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from services.archiver.dlq import REDRIVEN_AT, REDRIVEN_FROM, topic_partitions
from services.common.kafka import Publisher
from services.common.settings import Settings
from tests.helpers import read_topic

from .conftest import (
    TOKEN,
    Console,
    console_settings,
    dead_letter,
    dlq_settings,
    indexed,
    operators,
    running_console,
    unique,
)
from .test_actions import SPEC

pytestmark = [pytest.mark.postgres]


def redrive(
    console: Console,
    task: str,
    *,
    body: bytes = b"{}",
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> requests.Response:
    """A redrive as the console's page sends it (its own Origin, a token) unless told."""
    sent = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {TOKEN}",
        "Origin": console.url,
        **(headers or {}),
    }
    url = f"{console.url}/api/v1/tasks/{task}/redrive"
    return requests.request(method, url, data=body, headers=sent, timeout=30)


def error(response: requests.Response) -> str:
    """The error code of a redrive's answer, which must be one the description documents."""
    schema = schemathesis.openapi.from_path(str(SPEC))
    schema["/api/v1/tasks/{id}/redrive"]["POST"].validate_response(response)
    code: str = response.json()["error"]["code"]
    return code


class TestRefusals:
    @pytest.mark.parametrize(
        ("headers", "body", "status", "code"),
        [
            ({"Authorization": ""}, b"{}", 401, "unauthorized"),
            ({"Authorization": "Bearer wrong"}, b"{}", 401, "unauthorized"),
            ({"Origin": "http://evil.example"}, b"{}", 403, "cross_site"),
            ({"Sec-Fetch-Site": "cross-site"}, b"{}", 403, "cross_site"),
            ({"Content-Type": "text/plain"}, b"{}", 415, "unsupported_media_type"),
            ({}, b"[]", 400, "invalid_body"),
            ({}, b'{"dead_letters": "all"}', 400, "invalid_body"),
            ({}, b'{"dead_letters": [true]}', 400, "invalid_body"),
        ],
    )
    def test_refused(
        self, guarded: Console, headers: dict[str, str], body: bytes, status: int, code: str
    ) -> None:
        task = guarded.completed_task()
        # a task's dead letter, so that only the refusal can stop the action
        guarded.run(guarded.registry.pool.execute(_ROW, task.task_id))
        response = redrive(guarded, task.task_id, headers=headers, body=body)
        assert (response.status_code, error(response)) == (status, code)

    def test_unknown_task_is_404(self, guarded: Console) -> None:
        response = redrive(guarded, "no-such-task")
        assert (response.status_code, error(response)) == (404, "not_found")

    def test_a_task_without_dead_letters_is_404(self, guarded: Console) -> None:
        task = guarded.completed_task()
        response = redrive(guarded, task.task_id)
        assert (response.status_code, error(response)) == (404, "no_dead_letters")

    def test_a_dead_letter_of_another_task_is_404(self, guarded: Console) -> None:
        task, other = guarded.completed_task(), guarded.completed_task()
        theirs = guarded.run(guarded.registry.pool.fetchval(_ROW + " RETURNING id", other.task_id))
        guarded.run(guarded.registry.pool.execute(_ROW, task.task_id))
        response = redrive(guarded, task.task_id, body=b'{"dead_letters": [%d]}' % theirs)
        assert (response.status_code, error(response)) == (404, "unknown_dead_letter")

    def test_get_is_405(self, guarded: Console) -> None:
        assert redrive(guarded, "any", method="GET").status_code == 405

    def test_kafka_away_is_503(self, guarded: Console) -> None:
        task = guarded.completed_task()
        guarded.run(guarded.registry.pool.execute(_ROW, task.task_id))
        response = redrive(guarded, task.task_id)
        assert (response.status_code, error(response)) == (503, "kafka_unavailable")
        assert response.headers["Retry-After"]


def test_read_only_is_403(database_url: str, tmp_path: Path) -> None:
    settings = console_settings(database_url, tmp_path / "data", **operators(read_only=True))
    with running_console(settings) as console:
        response = redrive(console, "any")
        assert (response.status_code, error(response)) == (403, "read_only")


#: A dead letter row as the indexer writes it, at a place no topic has (tests without Kafka).
_ROW = """
INSERT INTO dead_letters (dlq_topic, dlq_partition, dlq_offset, dlq_timestamp, task_id,
                          headers, value_bytes, value_sha256)
VALUES ('no.such.dlq', 0, (SELECT count(*) FROM dead_letters), now(), $1, '{}', 0,
        repeat('0', 64))
"""


async def post(console: Console, task: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Origin": console.url}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{console.url}/api/v1/tasks/{task}/redrive", json=body, headers=headers) as r,
    ):
        return r.status, await r.json()


async def topic_size(settings: Settings, topic: str) -> int:
    """How many records ``topic`` holds: what a test reads up to, no waiting for more."""
    partitions = await topic_partitions(settings.kafka, topic)
    assert partitions is not None
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await consumer.start()
    try:
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def timeline_letter(console: Console, task: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{console.url}/api/v1/tasks/{task}") as response,
    ):
        document = await response.json()
    [event] = [e for e in document["timeline"] if e["kind"] == "dead_letter"]
    return dict(event)


@pytest.mark.kafka
async def test_a_redrive_sends_the_record_back_once(
    operator_console: Console, settings: Settings, publisher: Publisher
) -> None:
    """The dead letter's original record goes back onto the callbacks topic byte for byte
    with the redrive headers; redriving again sends nothing, even when asked by id."""
    callbacks = settings.kafka.topics.callbacks
    task = operator_console.completed_task(task_id=unique("redriven"))
    [letter] = await dead_letter(settings, publisher, [task.task_id.encode()])
    await indexed(operator_console, 1)
    row = (await timeline_letter(operator_console, task.task_id))["detail"]
    assert row["redriven_at"] is None
    before = await topic_size(settings, callbacks)

    status, document = await post(operator_console, task.task_id, {})
    place = f"{letter.topic}/{letter.partition}/{letter.offset}"
    assert status == 202, document
    assert document == {
        "redriven": [{"id": row["id"], "dlq": place, "source_topic": callbacks}],
        "skipped": [],
    }
    assert await topic_size(settings, callbacks) == before + 1
    copy = (await read_topic(settings.kafka.bootstrap_servers, callbacks, before + 1))[-1]
    assert (copy.key, copy.value) == (letter.key, letter.value)
    headers = dict(copy.headers)
    assert headers[REDRIVEN_FROM] == place.encode()
    assert REDRIVEN_AT in headers
    assert not [name for name in headers if name.startswith("dlq.") and "redriven" not in name]

    event = await timeline_letter(operator_console, task.task_id)
    assert event["summary"].startswith("dead letter (redriven): ")
    assert event["detail"]["redriven_by"] == "token-1"
    assert event["detail"]["redriven_at"] is not None

    assert await post(operator_console, task.task_id, {}) == (202, {"redriven": [], "skipped": []})
    # Forget the row's mark: the source topic still says it was sent.
    await operator_console.arun(
        operator_console.registry.pool.execute("UPDATE dead_letters SET redriven_at = NULL")
    )
    status, again = await post(operator_console, task.task_id, {"dead_letters": [row["id"]]})
    assert status == 202
    assert again["redriven"] == []
    assert [(s["id"], s["code"]) for s in again["skipped"]] == [(row["id"], "already_redriven")]
    assert await topic_size(settings, callbacks) == before + 1


@pytest.mark.kafka
async def test_a_dead_letter_gone_by_retention_is_skipped_as_gone(
    operator_console: Console, settings: Settings, publisher: Publisher
) -> None:
    """Retention removed the record from the dead-letter topic (here: Kafka's own
    DeleteRecords, which retention uses): the answer says so for that record."""
    task = operator_console.completed_task(task_id=unique("gone"))
    [letter] = await dead_letter(settings, publisher, [task.task_id.encode()])
    await indexed(operator_console, 1)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        where = TopicPartition(letter.topic, letter.partition)
        await admin.delete_records({where: RecordsToDelete(letter.offset + 1)})
    finally:
        await admin.close()
    status, document = await post(operator_console, task.task_id, {})
    assert status == 202, document
    assert document["redriven"] == []
    assert [s["code"] for s in document["skipped"]] == ["gone"]
    assert "retention" in document["skipped"][0]["message"]


@pytest.mark.kafka
async def test_two_replicas_redriving_at_once_send_each_dead_letter_once(
    settings: Settings, publisher: Publisher, database_url: str
) -> None:
    """Two consoles on one registry, each asked to redrive the same task at the same
    instant, several times over: each dead letter reaches the source topic once, and
    what one replica sent the other reports as already redriven."""
    callbacks = settings.kafka.topics.callbacks
    chosen = dlq_settings(settings, database_url).with_overrides(console=operators())
    with running_console(chosen) as one, running_console(chosen) as two:
        task = one.completed_task(task_id=unique("raced"))
        letters = await dead_letter(settings, publisher, [task.task_id.encode()] * 3)
        await indexed(one, 3)
        before = await topic_size(settings, callbacks)
        for _ in range(3):
            answers = await asyncio.gather(post(one, task.task_id, {}), post(two, task.task_id, {}))
            assert [status for status, _ in answers] == [202, 202], answers
            await one.arun(one.registry.pool.execute("UPDATE dead_letters SET redriven_at = NULL"))
        copies = (await read_topic(settings.kafka.bootstrap_servers, callbacks, before + 3))[
            before:
        ]
        assert await topic_size(settings, callbacks) == before + 3
    places = sorted(f"{r.topic}/{r.partition}/{r.offset}".encode() for r in letters)
    assert sorted(dict(copy.headers)[REDRIVEN_FROM] for copy in copies) == places
