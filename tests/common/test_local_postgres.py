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


def fetchval(url: str, query: str) -> object:
    async def ask() -> object:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetchval(query)
        finally:
            await conn.close()

    return asyncio.run(ask())


def effective_uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("Uid:")[1].split()[1])


class TestLocalPostgres:
    def test_it_answers_and_never_runs_as_root(self) -> None:
        """The server answers on its URL; as root it runs as Debian's ``postgres`` user."""
        with LocalPostgres() as server:
            assert fetchval(server.url, "SELECT 1") == 1
            assert server.process is not None
            uid = effective_uid(server.process.pid)
            assert uid != 0
            assert (uid == os.geteuid()) is (os.geteuid() != 0)
            assert fetchval(server.url, "SHOW fsync") == "off"  # a throwaway cluster
        assert not server.workdir.exists()

    def test_a_kept_folder_keeps_its_data_across_runs(self) -> None:
        """`make run` twice on ./data: the second server has the first one's table, and a
        kill (a crash) loses nothing committed: the kept cluster is durable."""
        # Not tmp_path: pytest makes its parents private, and as root the server runs as
        # the postgres user, who must reach the folder.
        folder = Path(tempfile.mkdtemp(prefix="suno-test-pg-"))
        folder.chmod(0o755)
        try:
            with LocalPostgres(data_dir=folder / "pg") as first:
                assert fetchval(first.url, "SHOW fsync") == "on"
                fetchval(first.url, "CREATE TABLE kept AS SELECT 42 AS answer")
                first.restart()
                assert fetchval(first.url, "SELECT answer FROM kept") == 42
            with LocalPostgres(data_dir=folder / "pg") as second:
                assert fetchval(second.url, "SELECT answer FROM kept") == 42
        finally:
            shutil.rmtree(folder)

    def test_a_failed_start_says_why(self) -> None:
        """A second server on a taken port fails with the log's tail, not a hang, and does
        not pass for the server that holds the port."""
        second = None
        with LocalPostgres() as first, pytest.raises(PostgresStartError) as caught:
            second = LocalPostgres(port=first.port)
            second.start()
        assert "could not" in str(caught.value).lower()
        assert "scripts/bootstrap.sh" in str(caught.value)
        assert second is not None and second.process is None
        assert not second.workdir.exists()  # nothing left behind in /tmp

    @pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
    def test_a_folder_the_postgres_user_cannot_reach_is_named(self, tmp_path: Path) -> None:
        """As root, a data dir under a private folder: a clear message, not initdb's."""
        with pytest.raises(PostgresStartError, match=r"cannot reach .* world-searchable"):
            LocalPostgres(data_dir=tmp_path / "pg").start()
