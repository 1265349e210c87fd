"""``suno-archiver dlq list|redrive`` on the session broker, over dead letters the real
processor wrote: listed, filtered, redriven with key and value unchanged and a redrive
header, and redriven again without a second copy."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.structs import ConsumerRecord

from services.archiver.cli import main
from services.archiver.dlq import REDRIVEN_AT, REDRIVEN_FROM
from services.common.kafka import Publisher
from services.common.settings import Settings
from services.processor.app import create_app as create_processor

from ..helpers import committed_offsets, eventually, read_topic, service_environment
from .support import callback_body, make_event

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

#: What the processor dead-letters: not an event at all, and a body that is not JSON.
UNDECODABLE = b"\x00not an avro event"
NOT_JSON = make_event("not-json", b"{not json").encode()
GOOD = make_event("fine", callback_body("fine")).encode()
KEY = b"one-partition"


def run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exited:
        return exited.code if isinstance(exited.code, int) else 1
    return 0


async def cli(argv: list[str]) -> int:
    return await asyncio.to_thread(run, argv)


def headers(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {name: bytes(value).decode() for name, value in record.headers}


async def dead_letters(
    settings: Settings, publisher: Publisher
) -> list[ConsumerRecord[bytes, bytes]]:
    """Two undecodable records and one non-JSON callback, dead-lettered by the processor."""
    callbacks = settings.kafka.topics.callbacks
    for value in (UNDECODABLE, NOT_JSON, GOOD, UNDECODABLE):
        await publisher.publish(callbacks, key=KEY, value=value)
    processor = TestServer(create_processor(settings))
    await processor.start_server()
    try:

        async def all_done() -> bool:
            offsets = await committed_offsets(settings, settings.processor.group_id)
            return sum(offsets.values()) == 4

        await eventually(all_done, what="the processor past the four records")
    finally:
        await processor.close()  # a redriven copy must not be dead-lettered again here
    dead = await read_topic(settings.kafka.bootstrap_servers, settings.kafka.topics.dlq, 3)
    assert len(dead) == 3
    return dead


def listed(out: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = json.loads(out)
    return result


async def test_list_filter_redrive_and_redrive_again(
    settings: Settings,
    publisher: Publisher,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Listed with why and where; filters narrow; a redrive sends each once, marked."""
    dead = await dead_letters(settings, publisher)
    for name, value in service_environment(settings).items():
        monkeypatch.setenv(name, value)
    callbacks = settings.kafka.topics.callbacks
    refs = [f"{r.partition}/{r.offset}" for r in dead]
    capsys.readouterr()  # the processor's log lines

    assert await cli(["dlq", "list", "--json"]) == 0
    everything = listed(capsys.readouterr().out)
    assert [item["dlq"] for item in everything] == refs
    assert [item["reason"] for item in everything] == [
        "undecodable",
        "invalid_callback",
        "undecodable",
    ]
    assert {item["source"].split("/")[0] for item in everything} == {callbacks}
    assert {item["consumer_group"] for item in everything} == {settings.processor.group_id}

    assert await cli(["dlq", "list", "--json", "--reason", "invalid_callback"]) == 0
    assert [item["dlq"] for item in listed(capsys.readouterr().out)] == [refs[1]]
    assert await cli(["dlq", "list", "--json", "--source-topic", "elsewhere"]) == 0
    assert listed(capsys.readouterr().out) == []
    assert await cli(["dlq", "list", "--json", "--since", "2999-01-01"]) == 0
    assert listed(capsys.readouterr().out) == []
    assert await cli(["dlq", "list", "--json", "--until", "2999-01-01", "--offset", refs[2]]) == 0
    assert [item["dlq"] for item in listed(capsys.readouterr().out)] == [refs[2]]
    assert await cli(["dlq", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["DLQ", "DEAD_LETTERED_AT", "REASON", "SOURCE", "ERROR"]
    assert len(table) == 4

    assert await cli(["dlq", "redrive", "--reason", "undecodable"]) == 0
    err = capsys.readouterr().err
    assert "redriven 2 dead letter(s); 0 already redriven before" in err
    # Not a terminal: a plain line per record instead of a bar.
    assert f"redriven {refs[0]} -> {callbacks}" in err and "\r" not in err

    assert await cli(["dlq", "redrive", "--all", "--quiet"]) == 0
    assert "redriven 1 dead letter(s); 2 already redriven before" in capsys.readouterr().err
    assert await cli(["dlq", "redrive", "--all"]) == 0
    assert "redriven 0 dead letter(s); 3 already redriven before" in capsys.readouterr().err
    assert await cli(["dlq", "redrive", "--offset", refs[1]]) == 0
    assert "redriven 0 dead letter(s); 1 already redriven before" in capsys.readouterr().err

    records = await read_topic(settings.kafka.bootstrap_servers, callbacks, 7)
    copies = [r for r in records if REDRIVEN_FROM in headers(r)]
    assert len(records) == 7 and len(copies) == 3
    dlq = settings.kafka.topics.dlq
    by_origin = {headers(r)[REDRIVEN_FROM]: r for r in copies}
    assert sorted(by_origin) == sorted(f"{dlq}/{ref}" for ref in refs)
    for letter in dead:
        copy = by_origin[f"{dlq}/{letter.partition}/{letter.offset}"]
        assert (copy.key, copy.value) == (letter.key, letter.value)
        assert REDRIVEN_AT in headers(copy)
        assert not any(name.startswith("dlq.") for name in headers(copy) if "redriven" not in name)


async def test_refusals_and_bad_arguments(
    settings: Settings,
    publisher: Publisher,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A dead letter that does not say where it came from is refused in one line (exit 3);
    bad arguments and unknown offsets are one line each, never a traceback."""
    dlq = settings.kafka.topics.dlq
    await publisher.publish(dlq, key=b"k", value=b"v", headers=[("dlq.reason", b"manual")])
    for name, value in service_environment(settings).items():
        monkeypatch.setenv(name, value)

    assert await cli(["dlq", "redrive", "--reason", "manual", "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "has no dlq.source.topic header" in err and "1 refused" in err

    for argv, status in [
        (["dlq", "redrive"], 2),
        (["dlq", "list", "--offset", "seven"], 2),
        (["dlq", "list", "--since", "soon"], 2),
        (["dlq", "list", "--since", "2026-02-02", "--until", "2026-01-01"], 2),
        (["dlq", "redrive", "--offset", "0/999"], 4),
    ]:
        assert await cli(argv) == status, argv
        err = capsys.readouterr().err
        assert "error:" in err and "Traceback" not in err, err

    monkeypatch.setenv("KAFKA_TOPIC_DLQ", "no.such.topic")
    assert await cli(["dlq", "list"]) == 1
    assert "the dead-letter topic no.such.topic does not exist" in capsys.readouterr().err


async def test_a_source_topic_that_lost_its_history_is_not_guessed(
    settings: Settings,
    publisher: Publisher,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """When retention removed the source topic's records of the dead letter's time, an
    earlier copy could have gone with them: the redrive refuses in one line; --force sends."""
    callbacks, dlq = settings.kafka.topics.callbacks, settings.kafka.topics.dlq
    await publisher.publish(callbacks, key=KEY, value=GOOD)
    source = [(b"dlq.reason", "processing_failed"), (b"dlq.source.topic", callbacks)]
    await publisher.publish(
        dlq,
        key=KEY,
        value=GOOD,
        headers=[(name.decode(), value.encode()) for name, value in source],
    )
    partitions = [TopicPartition(callbacks, p) for p in range(settings.kafka.partitions)]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:  # what retention does to old segments: the partitions' first records are gone
        await admin.delete_records({tp: RecordsToDelete(-1) for tp in partitions})
    finally:
        await admin.close()
    for name, value in service_environment(settings).items():
        monkeypatch.setenv(name, value)

    assert await cli(["dlq", "redrive", "--all", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "cannot tell which dead letters were redriven already" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert await cli(["dlq", "redrive", "--all", "--quiet", "--force"]) == 0
    assert "redriven 1 dead letter(s)" in capsys.readouterr().err


async def test_a_terminal_gets_a_progress_bar(settings: Settings, publisher: Publisher) -> None:
    """The program on a terminal draws a bar on stderr instead of a line per record."""
    callbacks, dlq = settings.kafka.topics.callbacks, settings.kafka.topics.dlq
    await publisher.publish(
        dlq, key=KEY, value=GOOD, headers=[("dlq.source.topic", callbacks.encode())]
    )
    terminal, stderr = pty.openpty()
    # A new pseudo-terminal is 0 columns wide: give it a real terminal's size.
    fcntl.ioctl(stderr, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "services.archiver", "dlq", "redrive", "--all"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            timeout=120,
            check=False,
            env={**os.environ, **service_environment(settings)},
        )
        os.close(stderr)
        drawn = read_terminal(terminal)
    finally:
        os.close(terminal)
    assert result.returncode == 0, drawn
    assert "100%|" in drawn and "1/1" in drawn, drawn
    assert f"-> {callbacks}" not in drawn and "redriven 1 dead letter(s)" in drawn


def read_terminal(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side is closed and drained
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")
