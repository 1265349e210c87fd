"""What the ingest holds in memory: forged requests cost no buffer, a budget bounds the rest,
and an event never outgrows its record, against the real session broker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import TestClient

from services.common.events import CallbackEvent
from services.common.keys import MAX_TASK_ID_LENGTH
from services.common.settings import (
    COPIES_WHILE_PUBLISHED,
    EVENT_ENVELOPE_BYTES,
    MiB,
    Settings,
)
from services.ingest.body import ParsedCallback
from services.ingest.event import MAX_COPIED_CHARS, build_event

from ..helpers import eventually, read_topic
from .conftest import CALLBACK_PATH, JSON, KEY, NOW, ClientFactory, callback_body, sample, task

pytestmark = pytest.mark.kafka


async def answer_to_headers(client: TestClient, headers: str) -> tuple[int, dict[str, object]]:  # type: ignore[type-arg]
    """Send a callback's headers only (the body never follows) and read the answer.

    An ingest that waited for the body would answer 408 after its body timeout instead.
    """
    assert client.server.host is not None and client.server.port is not None
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(
            f"POST {CALLBACK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"{headers}\r\n\r\n".encode()
        )
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, json.loads(await reader.readexactly(length))
    finally:
        writer.close()


class TestBeforeTheBody:
    @pytest.mark.parametrize(
        ("headers", "code"),
        [
            ("", "missing_signature"),
            (f"X-Webhook-Timestamp: {NOW}", "missing_signature"),
            ("X-Webhook-Timestamp: soon\r\nX-Webhook-Signature: AAAA", "invalid_timestamp"),
            (f"X-Webhook-Timestamp: {NOW - 301}\r\nX-Webhook-Signature: AAAA", "stale_timestamp"),
            (f"X-Webhook-Timestamp: {NOW}\r\nX-Webhook-Signature: not*base64", "bad_signature"),
        ],
    )
    async def test_forged_headers_are_refused_unread(
        self, ingest_client: ClientFactory, headers: str, code: str
    ) -> None:
        """Missing, malformed or stale signature headers: 401 while only headers were sent."""
        client = await ingest_client(keys=(KEY,))
        framing = f"Content-Length: {8 * MiB}\r\n{headers}".rstrip()
        status, answer = await answer_to_headers(client, framing)
        assert status == 401
        assert answer["error"]["code"] == code  # type: ignore[index]
        assert sample(client.app, "ingest_body_size_bytes_count") == 0
        assert sample(client.app, "ingest_buffered_bytes") == 0

    async def test_past_the_budget_is_503_unread(self, ingest_client: ClientFactory) -> None:
        """A declared body that would overrun the budget: 503 + Retry-After, nothing read."""
        client = await ingest_client(max_buffered_bytes=MiB)
        status, answer = await answer_to_headers(client, f"Content-Length: {MiB + 1}")
        assert status == 503
        assert answer["error"]["code"] == "overloaded"  # type: ignore[index]
        assert sample(client.app, "ingest_requests_total", outcome="overloaded") == 1
        assert sample(client.app, "ingest_body_size_bytes_count") == 0


class TestBudget:
    async def test_bodies_being_read_count_against_it(self, ingest_client: ClientFactory) -> None:
        """One body half sent holds every copy it will make (four times its Content-Length:
        body, record, the producer's two); the next that does not fit gets 503 with
        Retry-After; once the first is stored the budget is whole again."""
        client = await ingest_client(max_buffered_bytes=4 * MiB, retry_after_seconds=7)
        body = callback_body(task(), msg="x" * (900 * 1024))
        assert client.server.host is not None and client.server.port is not None
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        writer.write(
            f"POST {CALLBACK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:1000]
        )
        await writer.drain()
        await eventually(
            lambda: (
                sample(client.app, "ingest_buffered_bytes") == COPIES_WHILE_PUBLISHED * len(body)
            ),
            what="the first body to be counted",
        )
        second = await client.post(
            CALLBACK_PATH, data=callback_body(task(), msg="y" * (200 * 1024)), headers=JSON
        )
        assert second.status == 503
        assert second.headers["Retry-After"] == "7"
        assert (await second.json())["error"]["code"] == "overloaded"
        writer.write(body[1000:])
        await writer.drain()
        assert (await reader.readline()).split()[1] == b"200"
        writer.close()
        # The producer's copies are given back once Kafka acknowledged: all of it, no leak.
        await eventually(
            lambda: sample(client.app, "ingest_buffered_bytes") == 0, what="an empty budget"
        )
        small = await client.post(CALLBACK_PATH, data=callback_body(task()), headers=JSON)
        assert small.status == 200

    async def test_chunked_bodies_count_as_they_grow(self, ingest_client: ClientFactory) -> None:
        """A body without Content-Length is counted chunk by chunk: 503 once over budget."""
        client = await ingest_client(max_buffered_bytes=MiB)

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"task_id": "chunked", "msg": "'
            for _ in range(20):
                yield b"z" * (64 * 1024)
            yield b'"}'

        refused = await client.post(CALLBACK_PATH, data=chunks(), headers=JSON)
        assert refused.status == 503
        assert (await refused.json())["error"]["code"] == "overloaded"
        await eventually(
            lambda: sample(client.app, "ingest_buffered_bytes") == 0, what="an empty budget"
        )


class TestRecordSize:
    @pytest.mark.parametrize("field", ["msg", "state"])
    async def test_a_body_at_the_limit_made_of_one_field_is_stored(
        self, ingest_client: ClientFactory, settings: Settings, field: str
    ) -> None:
        """An 8 MiB body that is nearly all msg (or data.state) is accepted and its event,
        with the copy capped and marked, is on the topic with the body whole."""
        client = await ingest_client()
        limit = settings.ingest.max_body_bytes
        tid = task()
        payload: dict[str, object] = {"task_id": tid, "code": 200, "msg": "ok", "data": {}}
        where = payload if field == "msg" else payload["data"]
        assert isinstance(where, dict)
        where[field] = ""
        room = limit - len(json.dumps(payload).encode())
        filler = "\u00e9" * (room // 2)  # two bytes each in UTF-8
        where[field] = filler
        body = json.dumps(payload, ensure_ascii=False).encode()
        assert limit - 64 <= len(body) <= limit
        response = await client.post(CALLBACK_PATH, data=body, headers=JSON)
        assert response.status == 200, await response.text()
        records = await read_topic(
            settings.kafka.bootstrap_servers, settings.kafka.topics.callbacks, 1
        )
        (event,) = [CallbackEvent.decode(r.value) for r in records if r.value is not None]
        assert event.body == body
        copied = event.msg if field == "msg" else event.state
        assert copied is not None
        assert copied.startswith(filler[:MAX_COPIED_CHARS])
        assert copied.endswith(f"[{len(filler) - MAX_COPIED_CHARS} more characters, see body]")

    def test_worst_case_event_stays_within_the_envelope(self) -> None:
        """Longest task id, every copied field at its cap in 4-byte characters (plus a
        surplus), headers as long as aiohttp lets them be: the event is body + envelope."""
        body = b"{}" * 1000
        long_text = "\U0001f600" * (MAX_COPIED_CHARS * 4)  # 4 bytes each in UTF-8
        event = build_event(
            ParsedCallback("t" * MAX_TASK_ID_LENGTH, 200, long_text, long_text, "midi"),
            body,
            datetime.now(UTC),
            {
                name: long_text
                for name in ("Content-Type", "User-Agent", "X-Webhook-Timestamp", "X-Request-Id")
            },
            signature="VERIFIED",
        )
        assert len(event.encode()) - len(body) <= EVENT_ENVELOPE_BYTES
