"""Published schema versions: decoded by fingerprint, resolved, and checked in CI."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from devenv.schemas import check, main, schema_fingerprint
from services.common.avro import (
    CALLBACK_SCHEMA,
    SCHEMA_DIR,
    VERSIONS_FILE,
    load_codec,
    version_path,
)
from services.common.errors import CodecError, UnknownSchemaError
from services.common.events import CallbackEvent, sha256_hex

from ..fixtures.schema_versions import NEXT, TODAY, lay_out_schemas


def event() -> CallbackEvent:
    body = b'{"task_id": "abc", "code": 200, "data": null}'
    return CallbackEvent(
        task_id="abc",
        received_at=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
        body=body,
        body_sha256=sha256_hex(body),
        code=200,
        msg="success",
        signature="VERIFIED",
        headers={"Content-Type": "application/json"},
    )


def next_value(schema_dir: Path, attempt: int = 3) -> bytes:
    """``event()`` as a producer writing the next version would write it."""
    return (
        load_codec(CALLBACK_SCHEMA, schema_dir)
        .versions[NEXT]
        .encode({**event().to_record(), "delivery_attempt": attempt})
    )


class TestDecodingAnyPublishedVersion:
    def test_todays_reader_reads_a_next_version_event(self, tmp_path: Path) -> None:
        """The new field is dropped by resolution; every field of today arrives as written."""
        schemas = lay_out_schemas(tmp_path / "s", current=TODAY)
        codec = load_codec(CALLBACK_SCHEMA, schemas)
        record = codec.decode(next_value(schemas))
        assert "delivery_attempt" not in record
        assert CallbackEvent.from_record(record) == event()

    def test_the_next_reader_reads_todays_event_with_the_default(self, tmp_path: Path) -> None:
        """A field the writer did not have takes the reader's default."""
        schemas = lay_out_schemas(tmp_path / "s", current=NEXT)
        codec = load_codec(CALLBACK_SCHEMA, schemas)
        record = codec.decode(codec.versions[TODAY].encode(event().to_record()))
        assert record["delivery_attempt"] == 1
        assert CallbackEvent.from_record(record) == event()

    def test_writes_the_current_version(self, tmp_path: Path) -> None:
        """The header carries the fingerprint of ``current``, not of the newest file."""
        schemas = lay_out_schemas(tmp_path / "s", current=TODAY)
        codec = load_codec(CALLBACK_SCHEMA, schemas)
        assert codec.encode(event().to_record())[:10] == codec.versions[TODAY].header
        assert codec.versions[TODAY].header == load_codec(CALLBACK_SCHEMA).header

    def test_a_v1_event_reads_as_a_callback(self) -> None:
        """Events written before polling existed (v1) were all callbacks, with no request."""
        codec = load_codec(CALLBACK_SCHEMA)
        v1 = {k: v for k, v in event().to_record().items() if k not in ("source", "request_id")}
        decoded = CallbackEvent.decode(codec.versions[1].encode(v1))
        assert (decoded.source, decoded.request_id) == ("CALLBACK", None)
        assert decoded == event()

    def test_a_poll_event_round_trips(self) -> None:
        """The source and request id written today are read back as written."""
        polled = replace(event(), source="POLL", request_id="req-1")
        assert CallbackEvent.decode(polled.encode()) == polled

    def test_todays_schemas_do_not_know_the_next_version(self, tmp_path: Path) -> None:
        """Without its file a next-version event is an unknown schema, not a corrupt record."""
        with pytest.raises(UnknownSchemaError, match="no published version"):
            CallbackEvent.decode(next_value(lay_out_schemas(tmp_path / "s", current=TODAY)))

    def test_unknown_fingerprint_is_told_apart_from_corruption(self) -> None:
        """Unknown fingerprint: UnknownSchemaError. Known one, broken body: CodecError only."""
        value = event().encode()
        unknown = value[:2] + bytes(8) + value[10:]
        with pytest.raises(UnknownSchemaError, match="0000000000000000"):
            CallbackEvent.decode(unknown)
        with pytest.raises(CodecError) as caught:
            CallbackEvent.decode(value[:12])
        assert not isinstance(caught.value, UnknownSchemaError)


def write_version(schemas: Path, version: int, change: Callable[[dict[str, Any]], None]) -> None:
    """Publish ``callback_received`` v``version``: v1 changed by ``change``, pinned."""
    schema = json.loads(version_path(schemas, CALLBACK_SCHEMA, 1).read_text(encoding="utf-8"))
    change(schema)
    version_path(schemas, CALLBACK_SCHEMA, version).write_text(json.dumps(schema))
    versions = json.loads((schemas / VERSIONS_FILE).read_text(encoding="utf-8"))
    fingerprint = schema_fingerprint(version_path(schemas, CALLBACK_SCHEMA, version))
    versions[CALLBACK_SCHEMA]["published"][str(version)] = fingerprint
    (schemas / VERSIONS_FILE).write_text(json.dumps(versions))


def field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


class TestCompatibilityCheck:
    def test_the_repository_passes(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Every published version is present, pinned and compatible; the CLI says so."""
        assert check() == []
        assert main(["check"]) == 0
        assert "compatible" in capsys.readouterr().out

    def test_the_next_compatible_version_passes(self, tmp_path: Path) -> None:
        """A field added with a default is compatible both ways."""
        assert check(lay_out_schemas(tmp_path / "s", current=NEXT)) == []

    @pytest.mark.parametrize(
        ("change", "expected"),
        [
            pytest.param(
                lambda s: s["fields"].remove(field(s, "task_id")),
                f"v1 cannot read what v{NEXT + 1} wrote: reader_field_missing_default_value",
                id="field-removed-without-default",
            ),
            pytest.param(
                lambda s: field(s, "task_id").update(type="int"),
                f"v1 cannot read what v{NEXT + 1} wrote: type_mismatch",
                id="type-changed",
            ),
            pytest.param(
                lambda s: s["fields"].append({"name": "attempt", "type": "int"}),
                f"v{NEXT + 1} cannot read what v1 wrote: reader_field_missing_default_value",
                id="field-added-without-default",
            ),
            pytest.param(
                lambda s: field(s, "received_at")["type"].update(logicalType="timestamp-micros"),
                f"v{NEXT + 1} changes the logical type of /received_at from timestamp-millis to "
                "timestamp-micros",
                id="logical-type-changed",
            ),
        ],
    )
    def test_an_incompatible_version_is_refused(
        self,
        tmp_path: Path,
        change: Callable[[dict[str, Any]], None],
        expected: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """The check names the broken direction and the rule; the CLI exits 1."""
        schemas = lay_out_schemas(tmp_path / "s", current=TODAY)
        write_version(schemas, NEXT + 1, change)
        problems = check(schemas)
        assert any(expected in problem for problem in problems), problems
        assert main(["check", "--schemas", str(schemas)]) == 1
        assert expected in capsys.readouterr().err

    def test_a_published_version_edited_in_place_is_refused(self, tmp_path: Path) -> None:
        """Consumers know a version by its fingerprint: changing its file breaks them."""
        schemas = lay_out_schemas(tmp_path / "s", current=TODAY)
        path = version_path(schemas, CALLBACK_SCHEMA, 1)
        schema = json.loads(path.read_text(encoding="utf-8"))
        schema["fields"].append({"name": "attempt", "type": "int", "default": 1})
        path.write_text(json.dumps(schema))
        assert any("changed after it was published" in p for p in check(schemas))

    def test_a_deleted_or_unlisted_version_is_refused(self, tmp_path: Path) -> None:
        """Every version file is listed, and every listed version has its file."""
        schemas = lay_out_schemas(tmp_path / "s", current=TODAY)
        unlisted = NEXT + 1
        version_path(schemas, CALLBACK_SCHEMA, 2).rename(
            version_path(schemas, CALLBACK_SCHEMA, unlisted)
        )
        problems = check(schemas)
        assert any("v2.avsc is missing" in p for p in problems), problems
        assert any(f"v{unlisted}.avsc is not listed" in p for p in problems), problems

    def test_the_repository_layout_is_what_the_codecs_load(self) -> None:
        """Each listed schema's current version is what the services write."""
        codec = load_codec(CALLBACK_SCHEMA)
        assert codec.current.version in codec.versions
        assert replace(event()).encode()[:10] == codec.header
        assert SCHEMA_DIR.name == "schemas"
