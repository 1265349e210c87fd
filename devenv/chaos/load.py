"""The load of a chaos run: MIDI requests submitted the way a client does (retried with
the same request id until the tracker accepts them), and bad inputs sent on purpose."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.ingest.app import CALLBACK_PATH
from services.ingest.verify import sign

from .system import TOKEN, TOPICS, WEBHOOK_KEY, System

__all__ = ["BAD_RECORD_KEY_PREFIX", "BadInputs", "Load", "request_id", "send_bad_inputs", "submit"]

#: Keys of the records the run writes to the callbacks topic on purpose: not Avro at all.
BAD_RECORD_KEY_PREFIX: Final = "chaos-bad-"
_BAD_RECORDS: Final = (b"not an avro record", b'{"code": 200}', b"\x00\x01\x02")
#: Bodies the ingest must refuse with a 4xx: (what, body, the task id signed, or None to
#: send no signature).
_BAD_BODIES: Final = (
    ("not JSON", b"{not json", "chaos-bad-body"),
    ("no task id", b'{"code": 200, "msg": "success", "data": {}}', "chaos-bad-body"),
    ("unsigned", b'{"code": 200, "data": {"task_id": "chaos-unsigned"}}', None),
)
_REQUEST_TIMEOUT: Final = aiohttp.ClientTimeout(total=5)


def request_id(seed: int, number: int) -> str:
    return f"chaos-{seed}-{number:05d}"


@dataclass
class Load:
    """What the client side saw: each accepted request and how many tries it took."""

    accepted: dict[str, float] = field(default_factory=dict)
    tries: int = 0
    #: Answers no retry should be given: a 4xx for a well-formed request.
    refused: dict[str, str] = field(default_factory=dict)


@dataclass
class BadInputs:
    """The bad inputs sent on purpose and what became of them."""

    #: what -> HTTP status the ingest finally answered
    http: dict[str, int] = field(default_factory=dict)
    #: keys of the records written to the callbacks topic
    records: list[str] = field(default_factory=list)


async def submit(
    system: System, http: aiohttp.ClientSession, seed: int, count: int, seconds: float
) -> Load:
    """``count`` requests spread evenly over ``seconds``, each retried until accepted."""
    load = Load()
    started = time.monotonic()
    url = system.url("tracker", "/v1/midi/requests")

    async def one(number: int) -> None:
        await asyncio.sleep(max(0.0, started + number * seconds / count - time.monotonic()))
        rid = request_id(seed, number)
        body = {"request_id": rid, "source_task_id": f"sep-{seed}-{number:05d}"}
        headers = {"Authorization": f"Bearer {TOKEN}"}
        while True:
            load.tries += 1
            try:
                async with http.post(
                    url, json=body, headers=headers, timeout=_REQUEST_TIMEOUT
                ) as answer:
                    text = await answer.text()
                    if answer.status in (200, 202):
                        load.accepted[rid] = time.monotonic() - started
                        return
                    if 400 <= answer.status < 500 and answer.status != 429:
                        load.refused[rid] = f"{answer.status} {text[:200]}"
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass  # the tracker is down or frozen: a client tries again
            await asyncio.sleep(0.5)

    await asyncio.gather(*(one(number) for number in range(count)))
    return load


async def send_bad_inputs(system: System, http: aiohttp.ClientSession) -> BadInputs:
    """Bodies the ingest must refuse, and records no consumer can read (they must be
    dead-lettered, and nothing else may be)."""
    bad = BadInputs()
    await _bad_records(system, bad)
    for what, body, signed in _BAD_BODIES:
        bad.http[what] = await _answer(system, http, body, signed)
    return bad


async def _answer(
    system: System, http: aiohttp.ClientSession, body: bytes, signed: str | None
) -> int:
    """The ingest's answer, retried while no replica answers or it is unavailable (503)."""
    while True:
        headers = {"Content-Type": "application/json"}
        if signed is not None:
            stamp = str(int(time.time()))
            headers["X-Webhook-Timestamp"] = stamp
            headers["X-Webhook-Signature"] = sign(WEBHOOK_KEY.encode(), signed, stamp)
        try:
            async with http.post(
                system.url("ingest", CALLBACK_PATH),
                data=body,
                headers=headers,
                timeout=_REQUEST_TIMEOUT,
            ) as answer:
                await answer.read()
                if answer.status != 503:
                    return answer.status
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.5)


async def _bad_records(system: System, bad: BadInputs) -> None:
    """Written before the first fault (retried if the broker is away meanwhile)."""
    producer = AIOKafkaProducer(bootstrap_servers=system.bootstrap, acks="all")
    await producer.start()
    try:
        for number, value in enumerate(_BAD_RECORDS):
            key = f"{BAD_RECORD_KEY_PREFIX}{number}"
            while True:
                try:
                    await producer.send_and_wait(TOPICS.callbacks, value, key=key.encode())
                    break
                except KafkaError:
                    await asyncio.sleep(0.5)
            bad.records.append(key)
    finally:
        await producer.stop()
