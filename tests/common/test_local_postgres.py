"""The project's own PostgreSQL launcher: runs as a non-root user, keeps a durable folder."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

import asyncpg
import pytest

from devenv.postgres import LocalPostgres, PostgresStartError

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


async def fetchval(url: str, query: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


class TestLocalPostgres:
    async def test_it_answers_and_never_runs_as_root(self) -> None:
        """The server answers on its URL; as root it runs as Debian's ``postgres`` user."""
        server = await asyncio.to_thread(LocalPostgres().start)
        try:
            assert await fetchval(server.url, "SELECT 1") == 1
            assert server.process is not None
            uid = Path(f"/proc/{server.process.pid}/status").read_text().split("Uid:")[1].split()
            assert int(uid[1]) != 0  # the effective uid
            assert (int(uid[1]) == os.geteuid()) is (os.geteuid() != 0)
            assert await fetchval(server.url, "SHOW fsync") == "off"  # a throwaway cluster
        finally:
            await asyncio.to_thread(server.stop)
        assert not server.workdir.exists()

    async def test_a_kept_folder_keeps_its_data_across_runs(self) -> None:
        """`make run` twice on ./data: the second server has the first one's table, and a
        kill (a crash) loses nothing committed: the kept cluster is durable."""
        # Not tmp_path: pytest makes its parents private, and as root the server runs as
        # the postgres user, who must reach the folder.
        tmp_path = Path(tempfile.mkdtemp(prefix="suno-test-pg-"))
        tmp_path.chmod(0o755)
        first = await asyncio.to_thread(LocalPostgres(data_dir=tmp_path / "pg").start)
        try:
            assert await fetchval(first.url, "SHOW fsync") == "on"
            await fetchval(first.url, "CREATE TABLE kept AS SELECT 42 AS answer")
            await asyncio.to_thread(first.restart)
            assert await fetchval(first.url, "SELECT answer FROM kept") == 42
        finally:
            await asyncio.to_thread(first.stop)
        second = await asyncio.to_thread(LocalPostgres(data_dir=tmp_path / "pg").start)
        try:
            assert await fetchval(second.url, "SELECT answer FROM kept") == 42
        finally:
            await asyncio.to_thread(second.stop)
        assert (tmp_path / "pg" / "pgdata" / "PG_VERSION").exists()
        shutil.rmtree(tmp_path)

    def test_a_failed_start_says_why(self) -> None:
        """A second server on a taken port fails with the log's tail, not a hang."""
        with LocalPostgres() as first, pytest.raises(PostgresStartError) as caught:
            LocalPostgres(port=first.port).start()
        assert "could not" in str(caught.value).lower()
        assert "scripts/bootstrap.sh" in str(caught.value)
