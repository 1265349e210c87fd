"""A compatible schema change on a real broker: the processor and the archiver read an event
written with the next version (a field added with a default) and, once upgraded to write
it, still read the events of today's version."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from services.archiver.app import create_app as create_archiver
from services.common.avro import CALLBACK_SCHEMA, NOTES_SCHEMA, load_codec
from services.common.events import CallbackEvent, sha256_hex
from services.common.kafka import Publisher
from services.common.settings import Settings
from services.processor.app import create_app as create_processor

from ..archiver.support import bodies
from ..fixtures.schema_versions import NEXT, TODAY
from ..helpers import eventually, read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def callback(task_id: str) -> CallbackEvent:
    body = json.dumps(
        {
            "task_id": task_id,
            "code": 200,
            "msg": "success",
            "data": {
                "state": "complete",
                "instruments": [{"name": "Cello", "notes": [{"pitch": 48, "start": 0, "end": 1}]}],
            },
        }
    ).encode()
    return CallbackEvent(
        task_id=task_id,
        received_at=datetime.now(UTC),
        body=body,
        body_sha256=sha256_hex(body),
        code=200,
        msg="success",
        state="complete",
    )


@pytest.mark.parametrize(
    ("reads_as", "written_with"),
    [
        pytest.param(TODAY, NEXT, id="todays-consumers-read-the-next-version"),
        pytest.param(NEXT, TODAY, id="upgraded-consumers-read-todays-version"),
    ],
)
async def test_processor_and_archiver_read_the_other_version(
    settings: Settings,
    publisher: Publisher,
    use_schemas: Callable[[int], Path],
    reads_as: int,
    written_with: int,
) -> None:
    """Decoded by fingerprint, resolved to the reader's version, processed and archived."""
    use_schemas(reads_as)
    codec = load_codec(CALLBACK_SCHEMA)
    assert codec.current.version == reads_as
    event = callback(f"schema-v{written_with}")
    record = event.to_record()
    if written_with == NEXT:
        record["delivery_attempt"] = 2
    value = codec.versions[written_with].encode(record)
    assert value[:10] == codec.versions[written_with].header != codec.header
    await publisher.publish(
        settings.kafka.topics.callbacks, key=event.task_id.encode(), value=value
    )
    registries = CollectorRegistry(), CollectorRegistry()
    servers = [
        TestServer(create_processor(settings, registry=registries[0])),
        TestServer(create_archiver(settings, registry=registries[1])),
    ]
    for server in servers:
        await server.start_server()
    try:
        (notes,) = await read_topic(
            settings.kafka.bootstrap_servers, settings.kafka.topics.notes, 1
        )
        archived = await eventually(lambda: bodies(settings.storage.data_dir), what="archive")
        ok = {"topic": settings.kafka.topics.callbacks, "result": "ok"}
        for registry, service in zip(registries, ("processor", "archiver"), strict=True):
            # Handled, not dead-lettered: the records_total sample says which.
            await eventually(
                lambda: registry.get_sample_value(f"{service}_records_total", ok) == 1,  # noqa: B023
                what=f"the {service} to handle the record",
            )
    finally:
        for server in servers:
            await server.close()
    decoded = load_codec(NOTES_SCHEMA).decode(notes.value)
    assert (decoded["task_id"], decoded["delivery_key"]) == (event.task_id, event.delivery_key)
    assert decoded["note_count"] == 1
    assert list(archived.values()) == [event.body]
    sidecar = next(settings.storage.data_dir.glob("raw/*/*.meta.json"))
    assert json.loads(sidecar.read_bytes())["delivery_key"] == event.delivery_key
