"""The broker stopped mid-test: 503 with Retry-After in bounded time, and no loss after.

Uses a dedicated local broker (``devenv.kafka``), never the session one other tests share.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from devenv.kafka import LocalKafka
from services.common.events import CallbackEvent
from services.common.settings import KafkaSettings, Settings, TopicNames
from services.ingest.app import CALLBACK_PATH, create_app

from ..helpers import eventually, read_topic
from .conftest import JSON, callback_body, sample

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(name="own_broker", scope="module")
def fixture_own_broker() -> Iterator[LocalKafka]:
    """A broker this module may kill and restart."""
    broker = LocalKafka()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def outage_settings(broker: LocalKafka, **ingest: Any) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    return Settings.from_env({}).with_overrides(
        kafka=KafkaSettings(
            bootstrap_servers=broker.bootstrap_servers,
            topics=TopicNames(f"outage.{suffix}.cb", f"outage.{suffix}.n", f"outage.{suffix}.d"),
            partitions=1,
        ),
        ingest={
            "port": 0,
            "allow_unsigned": True,
            "publish_timeout_seconds": 2.0,
            "retry_after_seconds": 7,
            **ingest,
        },
    )


async def test_broker_down_then_back_loses_nothing(
    own_broker: LocalKafka, aiohttp_client: Any
) -> None:
    """Down: 503 + Retry-After within the publish timeout. Back: the retry is stored."""
    settings = outage_settings(own_broker)
    client = await aiohttp_client(create_app(settings, registry=CollectorRegistry()))
    before = callback_body("before-outage")
    assert (await client.post(CALLBACK_PATH, data=before, headers=JSON)).status == 200

    own_broker.kill()
    during = callback_body("during-outage")
    started = time.monotonic()
    refused = await client.post(CALLBACK_PATH, data=during, headers=JSON)
    elapsed = time.monotonic() - started
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "7"
    assert (await refused.json())["error"]["code"] == "unavailable"
    assert elapsed < settings.ingest.publish_timeout_seconds + 2
    assert sample(client.app, "ingest_requests_total", outcome="unavailable") == 1
    assert (await client.get("/readyz")).status == 503

    # Two identical copies at once: the second waits for the first, takes over when the
    # first fails, and fails too. Neither may say "duplicate" for something not stored.
    started = time.monotonic()
    copies = await asyncio.gather(
        *(client.post(CALLBACK_PATH, data=during, headers=JSON) for _ in range(2))
    )
    elapsed = time.monotonic() - started
    assert [c.status for c in copies] == [503, 503]
    # Waiting for the twin and publishing share one budget: both answer in bounded time.
    assert elapsed < settings.ingest.publish_timeout_seconds + 2
    assert sample(client.app, "ingest_requests_total", outcome="duplicate") == 0

    await asyncio.to_thread(own_broker.restart)
    await eventually(lambda: _ready(client), timeout=60, what="/readyz after the restart")

    async def retried() -> bool:
        response = await client.post(CALLBACK_PATH, data=during, headers=JSON)
        return response.status == 200

    # The sender retries the refused delivery: the claim was released, so it goes through.
    await eventually(retried, timeout=30, interval=1, what="the retry to be accepted")
    records = await read_topic(
        own_broker.bootstrap_servers, settings.kafka.topics.callbacks, 6, timeout=8
    )
    events = [CallbackEvent.decode(r.value) for r in records if r.value]
    task_ids = [e.task_id for e in events]
    # No loss. Each of the 3 timed-out sends may still have landed once the broker was back
    # (aiokafka keeps them queued), besides the accepted retry: at least once, and every
    # copy carries the same delivery key, which is what consumers dedupe on.
    assert task_ids.count("before-outage") == 1
    assert 1 <= task_ids.count("during-outage") <= 4
    assert len({e.delivery_key for e in events if e.task_id == "during-outage"}) == 1
    again = await client.post(CALLBACK_PATH, data=during, headers=JSON)
    assert await again.json() == {"status": "duplicate"}


async def test_in_flight_bound_answers_overloaded(
    own_broker: LocalKafka, aiohttp_client: Any
) -> None:
    """Past max_in_flight waiting publishes, new callbacks get 503 overloaded at once."""
    settings = outage_settings(own_broker, max_in_flight=2, publish_timeout_seconds=3.0)
    client = await aiohttp_client(create_app(settings, registry=CollectorRegistry()))
    warm = await client.post(CALLBACK_PATH, data=callback_body("warm"), headers=JSON)
    assert warm.status == 200
    own_broker.kill()
    try:
        stuck = [
            asyncio.create_task(
                client.post(CALLBACK_PATH, data=callback_body(f"s{i}"), headers=JSON)
            )
            for i in range(2)
        ]
        await eventually(
            lambda: sample(client.app, "ingest_publishes_in_flight") == 2,
            timeout=5,
            what="two publishes in flight",
        )
        started = time.monotonic()
        over = await client.post(CALLBACK_PATH, data=callback_body("over"), headers=JSON)
        assert time.monotonic() - started < 1
        assert over.status == 503 and "Retry-After" in over.headers
        assert (await over.json())["error"]["code"] == "overloaded"
        assert sample(client.app, "ingest_requests_total", outcome="overloaded") == 1
        assert [r.status for r in await asyncio.gather(*stuck)] == [503, 503]
        assert sample(client.app, "ingest_publishes_in_flight") == 0
    finally:
        await asyncio.to_thread(own_broker.restart)


async def _ready(client: Any) -> bool:
    return bool((await client.get("/readyz")).status == 200)


async def test_a_stalled_broker_costs_one_budget_even_for_a_waiting_twin(
    own_broker: LocalKafka, aiohttp_client: Any
) -> None:
    """Broker frozen (SIGSTOP): two identical copies both get 503 within one publish timeout.

    The second copy waits for the first, then takes over its released claim; waiting and
    publishing share one budget, so it does not start a second full timeout.
    """
    import os
    import signal

    settings = outage_settings(own_broker, publish_timeout_seconds=2.0)
    client = await aiohttp_client(create_app(settings, registry=CollectorRegistry()))
    warm = await client.post(CALLBACK_PATH, data=callback_body("warm-stall"), headers=JSON)
    assert warm.status == 200
    assert own_broker.process is not None
    os.killpg(own_broker.process.pid, signal.SIGSTOP)
    try:
        body = callback_body("during-stall")
        budget = settings.ingest.publish_timeout_seconds

        async def timed_post(delay: float) -> tuple[int, float]:
            await asyncio.sleep(delay)
            started = time.monotonic()
            response = await client.post(CALLBACK_PATH, data=body, headers=JSON)
            return response.status, time.monotonic() - started

        # The twin arrives half a budget later: it waits, sees the first copy release its
        # claim, takes over, and must still answer within its own single budget.
        first, twin = await asyncio.gather(timed_post(0), timed_post(budget / 2))
    finally:
        os.killpg(own_broker.process.pid, signal.SIGCONT)
    assert first[0] == 503 and twin[0] == 503
    assert first[1] >= budget, "the stall was not felt"
    assert twin[1] < budget + 0.5, f"the twin took {twin[1]:.2f} s for a {budget} s budget"
