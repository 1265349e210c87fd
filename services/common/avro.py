"""Avro single-object encoding of the project's events, against the schemas in ``schemas/``.

Every Kafka value this project writes is ``C3 01`` + the 8-byte little-endian CRC-64-AVRO
fingerprint of the writer schema's parsing canonical form + the Avro binary body, so a
consumer holding only ``schemas/`` can tell which schema wrote a message and decode it.

Every published version of each schema stays in ``schemas/<name>/v<N>.avsc``, listed in
``schemas/versions.json`` with the version this code writes (``current``). Decoding looks
the writer version up by its fingerprint and resolves it to the current one (Avro schema
resolution): a field added with a default reaches older and newer readers alike. Decoding
raises :class:`~.errors.UnknownSchemaError` for a well-framed message whose fingerprint
no listed version has (a producer newer than this code's ``schemas/``, or another
schema's message), and plain :class:`~.errors.CodecError` for bytes that are not a
message at all (no marker, truncated, corrupt body): the first is not the record's fault,
the consumer policy (:mod:`.consumer`) tells them apart by class.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
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
    "REQUEST_SCHEMA",
    "SCHEMA_DIR",
    "VERSIONS_FILE",
    "AvroCodec",
    "SchemaVersions",
    "VersionedCodec",
    "crc64_avro",
    "load_codec",
    "read_versions",
    "version_path",
]

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8

#: ``schemas/`` at the repository root (the image keeps the same layout under /app).
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
CALLBACK_SCHEMA = "callback_received"
NOTES_SCHEMA = "midi_notes"
REQUEST_SCHEMA = "midi_request"
#: The one list of every published version of each schema (see the module docstring).
VERSIONS_FILE = "versions.json"

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
    """One version of one schema: its identity (fingerprint, header) and its writer."""

    def __init__(self, schema: Mapping[str, Any], version: int = 1) -> None:
        parsed = fastavro.parse_schema(dict(schema))
        if not isinstance(parsed, dict):
            raise CodecError("an event schema must be an Avro record")
        self.parsed: dict[str, Any] = parsed
        self.canonical_form: str = fastavro.schema.to_parsing_canonical_form(self.parsed)
        self.fingerprint: int = crc64_avro(self.canonical_form.encode("utf-8"))
        self.header: bytes = MAGIC + self.fingerprint.to_bytes(8, "little")
        self.name: str = str(self.parsed["name"])
        self.version = version

    def encode(self, record: Mapping[str, Any]) -> bytes:
        buffer = io.BytesIO()
        buffer.write(self.header)
        try:
            fastavro.schemaless_writer(buffer, self.parsed, dict(record))
        except (ValueError, TypeError, KeyError, OverflowError) as exc:  # UnicodeEncodeError too
            raise EventEncodeError(f"record does not match schema {self.name}: {exc}") from exc
        return buffer.getvalue()

    def read(self, body: bytes, reader: AvroCodec) -> dict[str, Any]:
        """The Avro body this version wrote, resolved to ``reader``'s version."""
        resolve = None if reader is self else reader.parsed
        try:
            record = fastavro.schemaless_reader(io.BytesIO(body), self.parsed, resolve)
        except Exception as exc:  # fastavro raises many types on truncated or corrupt input
            raise CodecError(f"corrupt {self.name} v{self.version} message: {exc}") from exc
        if not isinstance(record, dict):
            raise CodecError(f"{self.name} message did not decode to a record")
        return record


class VersionedCodec:
    """Every published version of one schema: writes the current, reads any of them."""

    def __init__(self, versions: Mapping[int, AvroCodec], current: int) -> None:
        if current not in versions:
            raise CodecError(f"current version {current} is not among the published ones")
        self.versions = dict(versions)
        self.current = versions[current]
        self.name = self.current.name
        self._by_header = {codec.header: codec for codec in versions.values()}
        # The current version's identity: what this code writes.
        self.parsed = self.current.parsed
        self.canonical_form = self.current.canonical_form
        self.fingerprint = self.current.fingerprint
        self.header = self.current.header

    def encode(self, record: Mapping[str, Any]) -> bytes:
        return self.current.encode(record)

    def writer_of(self, data: bytes) -> AvroCodec:
        """The version that wrote ``data``; :class:`UnknownSchemaError` if none listed did."""
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise CodecError("not an Avro single-object message (missing C3 01 marker)")
        writer = self._by_header.get(data[:HEADER_SIZE])
        if writer is None:
            known = ", ".join(
                f"v{codec.version} {codec.header[2:].hex()}" for codec in self.versions.values()
            )
            raise UnknownSchemaError(
                f"message written with schema fingerprint {data[2:HEADER_SIZE].hex()}, "
                f"which no published version of {self.name} has ({known}): a newer "
                f"producer, or another schema's message"
            )
        return writer

    def decode(self, data: bytes) -> dict[str, Any]:
        """The record in ``data``, whichever listed version wrote it, as the current one."""
        return self.writer_of(data).read(data[HEADER_SIZE:], self.current)


@dataclass(frozen=True, slots=True)
class SchemaVersions:
    """One schema's entry in ``versions.json``: the published fingerprints by version."""

    current: int
    #: version -> the 8 fingerprint bytes as on the wire, in hex (pinned at publication).
    published: dict[int, str]


def version_path(schema_dir: Path, name: str, version: int) -> Path:
    return schema_dir / name / f"v{version}.avsc"


def read_versions(schema_dir: Path) -> dict[str, SchemaVersions]:
    """``versions.json``: each schema's current version and published fingerprints."""
    path = schema_dir / VERSIONS_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return {
            name: SchemaVersions(
                current=int(entry["current"]),
                published={int(version): str(fp) for version, fp in entry["published"].items()},
            )
            for name, entry in document.items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CodecError(f"{path} is not a readable list of schema versions: {exc}") from exc


def load_codec(name: str, schema_dir: Path | None = None) -> VersionedCodec:
    """The codec of every published version of ``name`` (loaded once per process).

    ``schema_dir`` defaults to :data:`SCHEMA_DIR`, looked up at call time.
    """
    return _load_codec(name, SCHEMA_DIR if schema_dir is None else schema_dir)


@cache
def _load_codec(name: str, schema_dir: Path) -> VersionedCodec:
    entry = read_versions(schema_dir).get(name)
    if entry is None:
        raise CodecError(f"{schema_dir / VERSIONS_FILE} lists no schema {name!r}")
    versions = {}
    for version in entry.published:
        path = version_path(schema_dir, name, version)
        try:
            schema = fastavro.schema.load_schema(str(path))
        except FileNotFoundError:
            raise CodecError(f"schema file {path} not found") from None
        if not isinstance(schema, dict):
            raise CodecError(f"{path} must hold one Avro record schema")
        versions[version] = AvroCodec(schema, version)
    return VersionedCodec(versions, entry.current)
