"""Text UTF-8 cannot hold (lone surrogates) through the processor and the archiver."""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from services.archiver.app import create_app as create_archiver
from services.common.avro import NOTES_SCHEMA, load_codec
from services.common.kafka import Publisher
from services.common.keys import task_key
from services.common.settings import Settings
from services.processor.normalize import normalize, well_formed
from services.processor.render import render_midi

from ..archiver.support import bodies
from ..helpers import eventually, read_topic
from .conftest import callback_event
from .readers import read_with_mido

#: What the provider could send: each JSON escape below is a lone surrogate for json.loads.
SURROGATE_PAYLOAD = {
    "task_id": "lone-surrogates",
    "code": 200,
    "msg": "ok \ud800 done",
    "data": {
        "state": "compl\udfffete",
        "instruments": [
            {"name": "Violin \udc00", "notes": [{"pitch": 60, "start": 0, "end": 1}]},
            {"name": "\ud83d\ude00 pair", "notes": []},  # a valid pair: one code point
        ],
    },
}


def surrogate_body() -> bytes:
    body = json.dumps(SURROGATE_PAYLOAD).encode("ascii")
    assert b"\\ud800" in body  # escaped as the provider's JSON would carry it
    return body


class TestWellFormed:
    def test_each_lone_surrogate_becomes_one_replacement_character(self) -> None:
        """One U+FFFD per lone surrogate; everything else, valid pairs included, kept."""
        assert well_formed("a\ud800b\udfff\udc00") == "a\ufffdb\ufffd\ufffd"
        assert well_formed("Électrique \U0001f600") == "Électrique \U0001f600"

    def test_names_msg_and_state_are_made_well_formed(self) -> None:
        """Every text the event and the file carry encodes as UTF-8."""
        normalized = normalize(json.loads(surrogate_body()))
        assert normalized.msg == "ok \ufffd done"
        assert normalized.provider_state == "compl\ufffdete"
        names = [instrument.name for instrument in normalized.instruments]
        assert names == ["Violin \ufffd", "\U0001f600 pair"]
        assert read_with_mido(render_midi(normalized)).names == names


@pytest.mark.kafka
async def test_processor_and_archiver_handle_lone_surrogates(
    settings: Settings,
    publisher: Publisher,
    processor: TestServer,
    registry: CollectorRegistry,
) -> None:
    """A MIDI file and a notes event with U+FFFD in place of each lone surrogate, the
    archive byte-exact, nothing dead-lettered."""
    body = surrogate_body()
    task_id = SURROGATE_PAYLOAD["task_id"]
    assert isinstance(task_id, str)
    # msg and state as the ingest sets them in the event ('?'); the processor reads the body.
    event = callback_event(body, task_id, msg="ok ? done", state="compl?ete")
    await publisher.publish(
        settings.kafka.topics.callbacks, key=task_id.encode(), value=event.encode()
    )
    archiver = TestServer(create_archiver(settings, registry=CollectorRegistry()))
    await archiver.start_server()
    try:
        (record,) = await read_topic(
            settings.kafka.bootstrap_servers, settings.kafka.topics.notes, 1
        )
        archived = await eventually(lambda: bodies(settings.storage.data_dir), what="archive")
    finally:
        await archiver.close()
    notes = load_codec(NOTES_SCHEMA).decode(record.value)
    assert (notes["msg"], notes["provider_state"]) == ("ok \ufffd done", "compl\ufffdete")
    assert [i["name"] for i in notes["instruments"]] == ["Violin \ufffd", "\U0001f600 pair"]
    midi = (settings.storage.data_dir / "midi" / f"{task_key(task_id)}.mid").read_bytes()
    assert read_with_mido(midi).names == ["Violin \ufffd", "\U0001f600 pair"]
    assert b"Violin \xef\xbf\xbd" in midi  # the track name's meta text is UTF-8
    assert list(archived.values()) == [body]
    topic = settings.kafka.topics.callbacks
    ok = {"topic": topic, "result": "ok"}
    await eventually(
        lambda: registry.get_sample_value("processor_records_total", ok) == 1, what="commit"
    )
    dead = {"topic": topic, "result": "dead_lettered"}
    assert not registry.get_sample_value("processor_records_total", dead)
