"""A small run of ``bench/ingest/memory.py``'s stalled-broker scenario, asserting counts only.

Uses a dedicated local broker (``devenv.kafka``) that the test freezes with SIGSTOP, never
the session one other tests share.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from devenv.kafka import LocalKafka
from services.common.settings import KafkaSettings, MiB, Secret, Settings, TopicNames
from services.ingest.app import CALLBACK_PATH, create_app

from ..helpers import eventually
from .conftest import KEY, NOW, callback_body, sample, signed_headers

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(name="frozen_broker")
def fixture_frozen_broker() -> Iterator[LocalKafka]:
    """A broker of this test's own, thawed (SIGCONT) and stopped whatever happens."""
    broker = LocalKafka()
    broker.start()
    try:
        yield broker
    finally:
        if broker.process is not None:
            broker.process.send_signal(signal.SIGCONT)
        broker.stop()


async def test_stalled_broker_valid_bodies_get_503_within_the_budget(
    frozen_broker: LocalKafka, aiohttp_client: Any
) -> None:
    """16 signed 512 KiB callbacks at once while the broker is frozen: every answer is a
    503 (some ``overloaded`` past a 4 MiB budget), the process keeps answering, the
    producer's copies stay counted after the answers, and all come back once it thaws."""
    suffix = uuid.uuid4().hex[:8]
    settings = Settings.from_env({}).with_overrides(
        kafka=KafkaSettings(
            bootstrap_servers=frozen_broker.bootstrap_servers,
            topics=TopicNames(f"stall.{suffix}.cb", f"stall.{suffix}.n", f"stall.{suffix}.d"),
            partitions=1,
        ),
        ingest={
            "port": 0,
            "webhook_secrets": (Secret(KEY.decode()),),
            "max_buffered_bytes": 4 * MiB,
            "publish_timeout_seconds": 2.0,
        },
    )
    client = await aiohttp_client(
        create_app(settings, registry=CollectorRegistry(), clock=lambda: float(NOW))
    )
    tasks = [f"stall-{i:02d}-{suffix}" for i in range(16)]
    assert frozen_broker.process is not None
    frozen_broker.process.send_signal(signal.SIGSTOP)

    async def post(task_id: str) -> str:
        body = callback_body(task_id, msg="m" * (512 * 1024))
        response = await client.post(CALLBACK_PATH, data=body, headers=signed_headers(task_id))
        return f"{response.status} {(await response.json())['error']['code']}"

    answers = Counter(await asyncio.gather(*(post(t) for t in tasks)))
    assert set(answers) <= {"503 overloaded", "503 unavailable"}, answers
    assert answers["503 overloaded"] > 0 and answers["503 unavailable"] > 0, answers
    assert (await client.get("/healthz")).status == 200
    # Answered, but the timed-out records are still queued in the producer: still counted.
    assert sample(client.app, "ingest_buffered_bytes") > 0

    frozen_broker.process.send_signal(signal.SIGCONT)
    await eventually(
        lambda: sample(client.app, "ingest_buffered_bytes") == 0,
        timeout=90,
        what="the producer to finish with the queued records",
    )
