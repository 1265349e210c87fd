"""SIGTERM on the real process: not ready first, in-flight requests finish, exit 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest

from devenv.processes import free_port
from services.common.events import CallbackEvent

from ..brokers import Broker
from ..helpers import eventually, read_topic
from .conftest import callback_body

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


async def status(session: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with session.get(url) as response:
            return response.status
    except aiohttp.ClientError:
        return None


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
async def test_sigterm_drains_then_exits_zero(
    kafka_broker: Broker, tmp_path: Path, event_loop: str
) -> None:
    """Readiness drops at once, a request in flight completes with 200, the process exits 0,
    on either event loop (``INGEST_EVENT_LOOP``), which the start-up line names."""
    port = free_port()
    topic = f"test.{uuid.uuid4().hex[:10]}.callbacks"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
        "KAFKA_TOPIC_CALLBACKS": topic,
        "KAFKA_TOPIC_PARTITIONS": "1",
        "INGEST_HOST": "127.0.0.1",
        "INGEST_PORT": str(port),
        "INGEST_SHUTDOWN_GRACE_SECONDS": "10",
        "INGEST_ALLOW_UNSIGNED": "true",
        "LOG_FORMAT": "json",
        "INGEST_EVENT_LOOP": event_loop,
    }
    env.pop("REDIS_URL", None)
    env.pop("SUNO_WEBHOOK_SECRETS", None)
    log = (tmp_path / "ingest.log").open("wb")
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for in a thread
        [sys.executable, "-m", "services.ingest"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await eventually(
                lambda: _is(status(session, f"{base}/readyz"), 200),
                timeout=30,
                what="the ingest to become ready",
            )
            body = callback_body("in-flight-at-sigterm")
            # A raw connection, so the test decides exactly when the rest of the body goes.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /callbacks/suno/midi HTTP/1.1\r\nHost: ingest\r\n"
                b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[:10]
            )
            await writer.drain()
            await asyncio.sleep(0.5)  # the handler is reading the body now
            process.send_signal(signal.SIGTERM)
            async with aiohttp.ClientSession() as probe:
                await eventually(
                    lambda: _is(status(probe, f"{base}/readyz"), 503),
                    timeout=2,
                    interval=0.05,
                    what="/readyz to turn 503 after SIGTERM",
                )
                assert await status(probe, f"{base}/healthz") == 200
            await asyncio.sleep(2.5)  # past the announce period: the listener is closed now
            assert process.poll() is None, "exited while a request was still in flight"
            writer.write(body[10:])
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            assert head.startswith(b"HTTP/1.1 200"), head
            assert json.loads(answer) == {"status": "received"}
        assert await asyncio.to_thread(process.wait, 15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    records = await read_topic(kafka_broker.bootstrap_servers, topic, 1)
    assert [CallbackEvent.decode(r.value).task_id for r in records if r.value] == [
        "in-flight-at-sigterm"
    ]
    text = (tmp_path / "ingest.log").read_text()
    assert "ingest_draining" in text and "ingest_stopped" in text
    listening = [json.loads(line) for line in text.splitlines() if "ingest_listening" in line]
    assert [line["event_loop"] for line in listening] == [event_loop], text


async def _is(probe: object, expected: int) -> bool:
    return await probe == expected  # type: ignore[misc]
