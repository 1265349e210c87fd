"""Refuses a schema change that would break a reader: ``python -m devenv.schemas check``.

Every version listed in ``schemas/versions.json`` must be on disk, unchanged since it was
published (its fingerprint is the pinned one: consumers in the field know it by that),
and fully compatible with every other version of its schema, both ways: each reads what
each other wrote under Avro schema resolution. So a new version may add a field with a
default, or drop a field that had one; it may not add a field without a default, drop one
without, or change a field's type.

Compatibility is Apache Avro's own checker (``avro.compatibility``, a port of Java's
``SchemaCompatibility``; a dev dependency): fastavro resolves schemas only while reading
and has no checker. That checker looks at Avro types only, so a logical type that changes
(``timestamp-millis`` to ``timestamp-micros``: same long, another meaning) is refused here.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path

import avro.errors
import avro.schema
import fastavro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from services.common.avro import SCHEMA_DIR, VERSIONS_FILE, read_versions, version_path
from services.common.errors import CodecError

__all__ = ["check", "main", "schema_fingerprint"]


def schema_fingerprint(path: Path) -> str:
    """The CRC-64-AVRO fingerprint in hex, bytes as on the wire (what versions.json pins)."""
    canonical = fastavro.schema.to_parsing_canonical_form(fastavro.schema.load_schema(str(path)))
    return str(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))


def _incompatibility(reader: avro.schema.Schema, writer: avro.schema.Schema) -> str | None:
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]  # untyped __init__
    result = checker.get_compatibility(reader, writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return None
    kinds = ", ".join(sorted({kind.value for kind in result.incompatibilities}))
    where = ", ".join(sorted(result.locations))
    return f"{kinds} at {where}: {'; '.join(sorted(result.messages))}"


def _logical_types(schema: object, path: str = "") -> dict[str, str]:
    """Field path -> logical type, through records, arrays, maps and unions."""
    found: dict[str, str] = {}
    if isinstance(schema, list):
        for branch in schema:
            found.update(_logical_types(branch, path))
    elif isinstance(schema, dict):
        if "logicalType" in schema:
            found[path or "/"] = str(schema["logicalType"])
        for field in schema.get("fields", ()) if schema.get("type") == "record" else ():
            found.update(_logical_types(field["type"], f"{path}/{field['name']}"))
        for key in ("items", "values"):
            if key in schema:
                found.update(_logical_types(schema[key], f"{path}/{key}"))
        if isinstance(schema.get("type"), dict | list):
            found.update(_logical_types(schema["type"], path))
    return found


def _check_files(schema_dir: Path, name: str, published: dict[int, str]) -> list[str]:
    problems = []
    on_disk = {path for path in (schema_dir / name).glob("v*.avsc")}
    listed = {version_path(schema_dir, name, version): version for version in published}
    for path in sorted(on_disk - listed.keys()):
        problems.append(
            f"{path.relative_to(schema_dir)} is not listed in {VERSIONS_FILE}: list it "
            f'("{path.stem[1:]}": "{schema_fingerprint(path)}") when it is published'
        )
    for path, version in sorted(listed.items()):
        where = path.relative_to(schema_dir)
        if not path.is_file():
            problems.append(f"{where} is missing: a published version is never deleted")
            continue
        try:
            found = schema_fingerprint(path)
        except (ValueError, fastavro.schema.SchemaParseException) as exc:
            problems.append(f"{where} is not a valid Avro schema: {exc}")
            continue
        if found != published[version]:
            problems.append(
                f"{where} was changed after it was published (fingerprint {found}, "
                f"published {published[version]}): add a new version instead"
            )
    return problems


def _check_compatibility(schema_dir: Path, name: str, versions: Sequence[int]) -> list[str]:
    parsed = {}
    for version in versions:
        path = version_path(schema_dir, name, version)
        try:
            parsed[version] = avro.schema.parse(path.read_text(encoding="utf-8"))
        except (OSError, avro.errors.AvroException, ValueError):
            continue  # reported by _check_files
    problems = []
    for reader, writer in itertools.permutations(sorted(parsed), 2):
        why = _incompatibility(parsed[reader], parsed[writer])
        if why is not None:
            problems.append(f"{name} v{reader} cannot read what v{writer} wrote: {why}")
    logical = {version: _logical_types(parsed[version].to_json()) for version in parsed}
    for old, new in itertools.combinations(sorted(parsed), 2):
        for where in sorted(logical[old].keys() & logical[new].keys()):
            if logical[old][where] != logical[new][where]:
                problems.append(
                    f"{name} v{new} changes the logical type of {where} from "
                    f"{logical[old][where]} to {logical[new][where]}"
                )
    return problems


def check(schema_dir: Path = SCHEMA_DIR) -> list[str]:
    """Every problem with the published schema versions, one line each; ``[]`` when none."""
    try:
        catalog = read_versions(schema_dir)
    except CodecError as exc:
        return [str(exc)]
    problems = [
        f"{path.name}/ holds schemas that {VERSIONS_FILE} does not list"
        for path in sorted(schema_dir.iterdir())
        if path.is_dir() and path.name not in catalog
    ]
    for name, entry in sorted(catalog.items()):
        if entry.current not in entry.published:
            problems.append(f"{name}: current version {entry.current} is not published")
        problems += _check_files(schema_dir, name, entry.published)
        problems += _check_compatibility(schema_dir, name, sorted(entry.published))
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv.schemas")
    parser.add_argument("command", choices=["check"])
    parser.add_argument("--schemas", type=Path, default=SCHEMA_DIR, help="default: schemas/")
    args = parser.parse_args(argv)
    problems = check(args.schemas)
    for problem in problems:
        print(f"schemas: {problem}", file=sys.stderr)
    if problems:
        return 1
    listed = "; ".join(
        f"{name} " + ", ".join(f"v{version}" for version in sorted(entry.published))
        for name, entry in sorted(read_versions(args.schemas).items())
    )
    print(f"schemas: every published version present, unchanged and compatible ({listed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
