"""Schema migrations: from nothing, from the previous version, concurrently, and refusals."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import asyncpg
import pytest

from services.common.errors import MigrationError
from services.tracker.migrate import load_migrations, migrate

pytestmark = pytest.mark.postgres


async def tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {row["tablename"] for row in rows}


class TestMigrations:
    def test_the_shipped_migrations_are_numbered_from_one(self) -> None:
        """At least the registry and the rate limiter, 1..n with no gap."""
        versions = [m.version for m in load_migrations()]
        assert versions[:2] == [1, 2]
        assert versions == list(range(1, len(versions) + 1))

    async def test_an_empty_database_gets_every_migration(self, database_url: str) -> None:
        """All are applied, recorded with name and checksum, and a second run does nothing."""
        conn = await asyncpg.connect(database_url)
        try:
            applied = await migrate(conn)
            assert applied == [m.version for m in load_migrations()]
            assert {"tasks", "task_transitions", "rate_limit_slots", "provider_calls"} <= (
                await tables(conn)
            )
            rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
            assert {(r["version"], r["name"], r["checksum"]) for r in rows} == {
                (m.version, m.name, m.checksum) for m in load_migrations()
            }
            assert await migrate(conn) == []
        finally:
            await conn.close()

    async def test_rows_written_at_the_previous_version_survive(self, database_url: str) -> None:
        """A database at 0001 with a task in it is brought to head with the task intact."""
        conn = await asyncpg.connect(database_url)
        try:
            assert await migrate(conn, target=1) == [1]
            assert "rate_limit_slots" not in await tables(conn)
            await conn.execute(
                "INSERT INTO tasks (request_id, task_id, origin, state, submitted_at)"
                " VALUES ('r-1', 't-1', 'tracker', 'submitted', now())"
            )
            assert await migrate(conn) == [m.version for m in load_migrations()][1:]
            row = await conn.fetchrow("SELECT request_id, state FROM tasks WHERE task_id = 't-1'")
            assert dict(row.items()) == {"request_id": "r-1", "state": "submitted"}
        finally:
            await conn.close()

    async def test_replicas_starting_together_apply_each_migration_once(
        self, database_url: str
    ) -> None:
        """Two concurrent runs: one applies everything, the other waits and finds nothing."""
        conns = [await asyncpg.connect(database_url) for _ in range(2)]
        try:
            results = await asyncio.gather(*(migrate(conn) for conn in conns))
            head = [m.version for m in load_migrations()]
            assert sorted(results, key=len) == [[], head]
            count = await conns[0].fetchval("SELECT count(*) FROM schema_migrations")
            assert count == len(head)
        finally:
            for conn in conns:
                await conn.close()


class TestRefusals:
    async def test_an_edited_migration_is_refused(self, database_url: str) -> None:
        """A file changed after it ran: nothing is applied and the error names the file."""
        conn = await asyncpg.connect(database_url)
        try:
            await migrate(conn, target=1)
            edited = [
                replace(m, sql=m.sql + "\n-- edited\n") if m.version == 1 else m
                for m in load_migrations()
            ]
            with pytest.raises(MigrationError, match=r"0001_task_registry\.sql changed"):
                await migrate(conn, migrations=edited)
            assert "rate_limit_slots" not in await tables(conn)
        finally:
            await conn.close()

    async def test_a_database_newer_than_the_code_is_refused(self, database_url: str) -> None:
        """A version this code does not know: refused, naming both versions."""
        conn = await asyncpg.connect(database_url)
        try:
            await migrate(conn)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum)"
                " VALUES (999, 'from_the_future', 'x')"
            )
            with pytest.raises(MigrationError, match="schema version 999"):
                await migrate(conn)
        finally:
            await conn.close()
