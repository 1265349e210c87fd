"""Brings the registry's database to this code's schema, from the SQL files shipped with it.

Migrations are ``migrations/NNNN_name.sql``, numbered from 1 without gaps and never
edited once released: each runs once, in its own transaction, and is recorded with its
checksum in ``schema_migrations``. Replicas start together, so the whole run holds a
PostgreSQL advisory lock: the second replica waits, then finds nothing left to do.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, TypeAlias

from services.common.errors import MigrationError

if TYPE_CHECKING:
    from asyncpg import Connection, Record
    from asyncpg.pool import PoolConnectionProxy

    Conn: TypeAlias = Connection[Record] | PoolConnectionProxy[Record]

__all__ = ["LOCK_KEY", "Migration", "load_migrations", "migrate"]

#: The advisory lock's key: an arbitrary constant, the same in every replica.
LOCK_KEY = 1_414_000_014
_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """The migrations shipped in this package, in order (read as package resources, so
    they are found in a wheel as in the work tree)."""
    folder = resources.files("services.tracker") / "migrations"
    found = sorted(
        (
            Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8"))
            for entry in folder.iterdir()
            if (match := _FILE.fullmatch(entry.name))
        ),
        key=lambda migration: migration.version,
    )
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise MigrationError(
            f"the migrations must be numbered 1..n without gaps: {[m.version for m in found]}"
        )
    return found


_CREATE_LOG = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def migrate(
    conn: Conn, *, target: int | None = None, migrations: Sequence[Migration] | None = None
) -> list[int]:
    """Apply the missing migrations up to ``target`` (default: all); return their versions.

    Raises :class:`MigrationError` (and changes nothing) when an applied migration's file
    changed since, or the database has a version this code does not know.
    """
    known = list(load_migrations() if migrations is None else migrations)
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(_CREATE_LOG)
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        applied = {row["version"]: row for row in rows}
        _check(applied, known)
        done = []
        for migration in known:
            if migration.version in applied or (target is not None and migration.version > target):
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            done.append(migration.version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


def _check(applied: dict[int, Record], known: Sequence[Migration]) -> None:
    by_version = {m.version: m for m in known}
    unknown = sorted(set(applied) - set(by_version))
    if unknown:
        raise MigrationError(
            f"the database is at schema version {max(unknown)}, which this code does not know "
            f"(it knows up to {max(by_version, default=0)}): run a release that has it, or "
            "restore a backup taken before it"
        )
    for version, row in sorted(applied.items()):
        migration = by_version[version]
        if row["checksum"] != migration.checksum:
            raise MigrationError(
                f"migration {version:04d}_{migration.name}.sql changed after it was applied "
                f"(as {row['name']!r}): a released migration is never edited; restore the "
                "file and add the change as a new migration"
            )
