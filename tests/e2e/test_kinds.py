"""Other operations' callbacks on the MIDI URL, through the whole pipeline and real Kafka:
verified, archived byte-exact, counted by kind; no MIDI file, no notes event."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from services.archiver.app import create_app as create_archiver
from services.common.keys import task_key
from services.common.settings import Secret, Settings
from services.ingest.app import CALLBACK_PATH
from services.ingest.app import create_app as create_ingest
from services.ingest.verify import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from services.processor.app import create_app as create_processor

from ..helpers import committed_offsets, eventually, read_topic
from ..kinds import OTHER_KINDS, body

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

KEY = "account-wide-webhook-key"


def signed(task_id: str) -> dict[str, str]:
    now = int(time.time())
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(now),
        SIGNATURE_HEADER: sign(KEY.encode(), task_id, now),
    }


async def test_other_kinds_are_archived_and_counted_but_make_no_midi(
    settings: Settings, reference_examples: dict[str, bytes]
) -> None:
    """Each kind, signed with the account's one key, beside one MIDI callback (the control)."""
    settings = settings.with_overrides(
        ingest={"webhook_secrets": (Secret(KEY),), "allow_unsigned": False},
        processor={"require_verified": True},
    )
    registries = {name: CollectorRegistry() for name in ("ingest", "processor")}
    ingest = TestClient(TestServer(create_ingest(settings, registry=registries["ingest"])))
    servers = [
        TestServer(create_processor(settings, registry=registries["processor"])),
        TestServer(create_archiver(settings)),
    ]
    sent: dict[str, bytes] = {}
    midi = json.loads(reference_examples["success-task-id-top-level"])
    midi["task_id"] = "the-midi-task"
    await ingest.start_server()
    for server in servers:
        await server.start_server()
    try:
        for task_id, payload in [
            *((name, make(name)) for name, (_, make) in OTHER_KINDS.items()),
            ("the-midi-task", midi),
        ]:
            sent[task_id] = body(payload)
            response = await ingest.post(CALLBACK_PATH, data=sent[task_id], headers=signed(task_id))
            assert response.status == 200, await response.text()

        async def processed() -> bool:
            offsets = await committed_offsets(settings, settings.processor.group_id)
            return sum(offsets.values()) == len(sent)

        await eventually(processed, what="the processor to commit every callback")
        data_dir = settings.storage.data_dir
        for task_id, raw in sent.items():
            digest = hashlib.sha256(raw).hexdigest()
            archived = data_dir / "raw" / task_key(task_id) / f"{digest}.json"
            await eventually(archived.exists, what=str(archived))
            assert archived.read_bytes() == raw
    finally:
        await ingest.close()
        for server in servers:
            await server.close()

    # Every offset is committed, so the notes topic holds all it ever will.
    notes = await read_topic(
        settings.kafka.bootstrap_servers, settings.kafka.topics.notes, 2, timeout=5
    )
    assert [record.key for record in notes] == [b"the-midi-task"]
    assert sorted(path.name for path in (data_dir / "midi").iterdir()) == ["the-midi-task.mid"]

    def counted(service: str, metric: str, kind: str) -> float:
        return registries[service].get_sample_value(metric, {"kind": kind}) or 0.0

    for kind in ("music_generation", "separation", "unknown"):
        expected = sum(1 for k, _ in OTHER_KINDS.values() if k == kind)
        assert counted("ingest", "ingest_callbacks_by_kind_total", kind) == expected
        assert counted("processor", "processor_callbacks_skipped_total", kind) == expected
    assert counted("ingest", "ingest_callbacks_by_kind_total", "midi") == 1
