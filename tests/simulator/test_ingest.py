"""The simulator's callbacks against our real ingest and the session's real Kafka broker."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.common.events import CallbackEvent
from services.common.settings import Secret, Settings
from services.ingest.app import CALLBACK_PATH, create_app

from ..helpers import read_topic
from .conftest import SimFactory, record_info, script, settled, submit

pytestmark = pytest.mark.kafka

KEY = "sim-ingest-key"


@pytest.fixture(name="ingest_url")
async def fixture_ingest_url(aiohttp_server: Any, settings: Settings) -> str:
    """A real ingest that verifies with ``KEY`` (no unsigned opt-in), on a local port."""
    signed = settings.with_overrides(
        ingest={"webhook_secrets": (Secret(KEY),), "allow_unsigned": False}
    )
    server = await aiohttp_server(create_app(signed, registry=CollectorRegistry()))
    return str(server.make_url(CALLBACK_PATH))


async def events(settings: Settings, count: int, wait: float = 20.0) -> list[CallbackEvent]:
    """The callback events on the test's topic: ``count`` of them, or what came in ``wait`` s."""
    records = await read_topic(
        settings.kafka.bootstrap_servers, settings.kafka.topics.callbacks, count, timeout=wait
    )
    return [CallbackEvent.decode(r.value) for r in records if r.value is not None]


class TestAgainstTheIngest:
    async def test_both_shapes_and_a_failure_are_accepted_verified(
        self, sim: SimFactory, ingest_url: str, settings: Settings
    ) -> None:
        """Each callback gets 200 on its first attempt and is published VERIFIED, byte-exact."""
        client = await sim(webhook_key=KEY.encode())
        fates = {"src-top": ("success", "task_id"), "src-data": ("success", "data")}
        fates["src-fail"] = ("failure", "data")
        ids = {}
        for source, (outcome, shape) in fates.items():
            await script(client, source, outcome=outcome, shape=shape)
            ids[source] = await submit(client, source, ingest_url)
        for task_id in ids.values():
            task = await settled(client, task_id, attempts=1)
            assert [a["status"] for a in task["attempts"]] == [200], task
        found = {event.task_id: event for event in await events(settings, len(ids))}
        assert set(found) == set(ids.values())
        for source, task_id in ids.items():
            event = found[task_id]
            assert event.signature == "VERIFIED"
            assert event.code == (500 if source == "src-fail" else 200)
            body = json.loads(event.body)
            if source != "src-fail":
                midi = (await record_info(client, task_id))["data"]["midiData"]
                assert body["data"]["instruments"] == midi["instruments"]

    async def test_twice_is_one_event(
        self, sim: SimFactory, ingest_url: str, settings: Settings
    ) -> None:
        """A task delivered twice: both deliveries answered 200, one event published."""
        client = await sim(webhook_key=KEY.encode())
        await script(client, "src-twice", callback="twice")
        task_id = await submit(client, "src-twice", ingest_url)
        task = await settled(client, task_id, attempts=2)
        assert [a["status"] for a in task["attempts"]] == [200, 200]
        assert [e.task_id for e in await events(settings, 2, wait=4)] == [task_id]

    async def test_a_wrong_key_is_refused_three_times(
        self, sim: SimFactory, ingest_url: str
    ) -> None:
        """Signed with another key: the ingest answers 401 and the simulator gives up."""
        client = await sim(webhook_key=b"not-the-key")
        task = await settled(client, await submit(client, "src-k", ingest_url), attempts=3)
        assert [a["status"] for a in task["attempts"]] == [401, 401, 401]
