"""Avro single-object framing: the contract a downstream consumer relies on."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import fastavro
import fastavro.schema
import pytest

from services.common.avro import (
    CALLBACK_SCHEMA,
    MAGIC,
    NOTES_SCHEMA,
    SCHEMA_DIR,
    crc64_avro,
    load_codec,
    read_versions,
    version_path,
)
from services.common.errors import CodecError, EventEncodeError, UnknownSchemaError
from services.common.events import CallbackEvent, MidiRequest, sha256_hex


def make_event(**changes: object) -> CallbackEvent:
    body = b'{"task_id": "abc", "code": 200, "data": null}'
    fields: dict[str, object] = {
        "task_id": "abc",
        "received_at": datetime(2026, 11, 25, 12, 0, 0, 123000, tzinfo=UTC),
        "body": body,
        "body_sha256": sha256_hex(body),
        "code": 200,
        "msg": "success",
        "state": "complete",
        "signature": "VERIFIED",
        "headers": {"Content-Type": "application/json"},
    }
    fields.update(changes)
    return CallbackEvent(**fields)  # type: ignore[arg-type]


class TestCrc64Avro:
    @pytest.mark.parametrize(
        ("schema", "expected"),
        [
            # Test vectors from the Avro specification's schema fingerprint tests.
            ('"null"', 7195948357588979594),
            ('"int"', 8247732601305521295),
            ('"string"', -8142146995180207161),
        ],
    )
    def test_matches_the_specification_vectors(self, schema: str, expected: int) -> None:
        """Our CRC-64-AVRO gives the specification's fingerprints (as signed longs)."""
        value = crc64_avro(schema.encode())
        assert int.from_bytes(value.to_bytes(8, "little"), "little", signed=True) == expected

    @pytest.mark.parametrize("name", [CALLBACK_SCHEMA, NOTES_SCHEMA])
    def test_matches_fastavro_for_our_schemas(self, name: str) -> None:
        """The header carries the fingerprint fastavro computes for the current version's
        canonical form."""
        codec = load_codec(name)
        current = read_versions(SCHEMA_DIR)[name].current
        schema = fastavro.schema.load_schema(str(version_path(SCHEMA_DIR, name, current)))
        canonical = fastavro.schema.to_parsing_canonical_form(schema)
        assert codec.canonical_form == canonical
        assert codec.header[2:].hex() == fastavro.schema.fingerprint(canonical, "CRC-64-AVRO")


class TestSingleObjectEncoding:
    def test_round_trip(self) -> None:
        """An event encodes and decodes to an equal event."""
        event = make_event(replay=True)
        assert CallbackEvent.decode(event.encode()) == event

    def test_framing_is_marker_fingerprint_body(self) -> None:
        """C3 01, the 8-byte little-endian fingerprint, then Avro binary."""
        codec = load_codec(CALLBACK_SCHEMA)
        data = make_event().encode()
        assert data[:2] == MAGIC == b"\xc3\x01"
        assert int.from_bytes(data[2:10], "little") == codec.fingerprint

    def test_decodes_with_fastavro_alone_given_the_schema_file(self) -> None:
        """A consumer with only schemas/ and fastavro reads our messages."""
        event = make_event()
        data = event.encode()
        schema = fastavro.schema.load_schema(str(version_path(SCHEMA_DIR, CALLBACK_SCHEMA, 1)))
        record = fastavro.schemaless_reader(io.BytesIO(data[10:]), schema, None)
        assert record["task_id"] == "abc"
        assert record["body"] == event.body
        assert record["signature"] == "VERIFIED"
        assert record["received_at"] == event.received_at

    def test_refuses_bytes_without_the_marker(self) -> None:
        """Plain JSON on the topic is a CodecError, not a crash."""
        with pytest.raises(CodecError, match="C3 01"):
            CallbackEvent.decode(b'{"task_id": "abc"}')

    def test_refuses_another_schemas_message(self) -> None:
        """A notes event is not mistaken for a callback event."""
        notes = load_codec(NOTES_SCHEMA)
        data = notes.header + b"\x00" * 20
        with pytest.raises(UnknownSchemaError, match="fingerprint"):
            CallbackEvent.decode(data)

    def test_refuses_truncated_messages(self) -> None:
        """A message cut short is a CodecError."""
        data = make_event().encode()
        with pytest.raises(CodecError):
            CallbackEvent.decode(data[: len(data) // 2])

    def test_encode_refuses_records_off_schema(self) -> None:
        """A record that does not fit the schema fails loudly at the producer, as our own
        bug (``unencodable_event``), never as the input's ``undecodable``."""
        with pytest.raises(EventEncodeError) as caught:
            load_codec(CALLBACK_SCHEMA).encode({"task_id": 5})
        assert caught.value.reason == "unencodable_event"
        assert not isinstance(caught.value, CodecError)

    def test_encode_refuses_lone_surrogates_as_our_bug(self) -> None:
        """Text UTF-8 cannot hold is an encoding failure of ours, not a corrupt input."""
        with pytest.raises(EventEncodeError, match="surrogates"):
            make_event(msg="\ud800").encode()


class TestMidiRequest:
    def test_round_trip_with_and_without_the_optional_fields(self) -> None:
        """A request reads back as written; the optional track and requester stay null."""
        at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
        full = MidiRequest("req-1", "sep-9", at, audio_id="a-1", requested_by="studio")
        bare = MidiRequest("req-2", "sep-9", at)
        assert MidiRequest.decode(full.encode()) == full
        assert MidiRequest.decode(bare.encode()) == bare
        assert full.encode()[:2] == b"\xc3\x01"

    def test_a_callback_event_is_no_request(self) -> None:
        """Another schema's record on the requests topic is an error, not a request."""
        with pytest.raises(CodecError):
            MidiRequest.decode(make_event().encode())
