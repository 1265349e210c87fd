"""Avro single-object encoding of the project's events, against the schemas in ``schemas/``.

Every Kafka value this project writes is ``C3 01`` + the 8-byte little-endian CRC-64-AVRO
fingerprint of the writer schema's parsing canonical form + the Avro binary body, so a
consumer holding only ``schemas/`` can tell which schema wrote a message and decode it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema

from .errors import CodecError, EventEncodeError, UnknownSchemaError

__all__ = [
    "CALLBACK_SCHEMA",
    "MAGIC",
    "NOTES_SCHEMA",
    "SCHEMA_DIR",
    "AvroCodec",
    "crc64_avro",
    "load_codec",
]

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8

#: ``schemas/`` at the repository root (the image keeps the same layout under /app).
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
CALLBACK_SCHEMA = "callback_received"
NOTES_SCHEMA = "midi_notes"

_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The 64-bit Rabin fingerprint the Avro specification calls CRC-64-AVRO."""
    fp = _EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp


class AvroCodec:
    """Encodes and decodes one schema's records in single-object encoding."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        parsed = fastavro.parse_schema(dict(schema))
        if not isinstance(parsed, dict):
            raise CodecError("an event schema must be an Avro record")
        self.parsed: dict[str, Any] = parsed
        self.canonical_form: str = fastavro.schema.to_parsing_canonical_form(self.parsed)
        self.fingerprint: int = crc64_avro(self.canonical_form.encode("utf-8"))
        self.header: bytes = MAGIC + self.fingerprint.to_bytes(8, "little")
        self.name: str = str(self.parsed["name"])

    def encode(self, record: Mapping[str, Any]) -> bytes:
        buffer = io.BytesIO()
        buffer.write(self.header)
        try:
            fastavro.schemaless_writer(buffer, self.parsed, dict(record))
        except (ValueError, TypeError, KeyError, OverflowError) as exc:  # UnicodeEncodeError too
            raise EventEncodeError(f"record does not match schema {self.name}: {exc}") from exc
        return buffer.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise CodecError("not an Avro single-object message (missing C3 01 marker)")
        if data[2:HEADER_SIZE] != self.header[2:]:
            found = int.from_bytes(data[2:HEADER_SIZE], "little")
            raise UnknownSchemaError(
                f"message written with schema fingerprint {found:016x}, expected "
                f"{self.name} ({self.fingerprint:016x})"
            )
        try:
            record = fastavro.schemaless_reader(io.BytesIO(data[HEADER_SIZE:]), self.parsed, None)
        except Exception as exc:  # fastavro raises many types on truncated or corrupt input
            raise CodecError(f"corrupt {self.name} message: {exc}") from exc
        if not isinstance(record, dict):
            raise CodecError(f"{self.name} message did not decode to a record")
        return record


@cache
def load_codec(name: str, schema_dir: Path = SCHEMA_DIR) -> AvroCodec:
    """The codec for ``schemas/<name>.avsc`` (loaded once per process)."""
    path = schema_dir / f"{name}.avsc"
    try:
        schema = fastavro.schema.load_schema(str(path))
    except FileNotFoundError:
        raise CodecError(f"schema file {path} not found") from None
    if not isinstance(schema, dict):
        raise CodecError(f"{path} must hold one Avro record schema")
    return AvroCodec(schema)
