"""put_versioned: an older version never replaces a newer one, on local files and on a real
S3 API server, against concurrent writers too."""

from __future__ import annotations

import asyncio
import random

from services.common.storage import Storage


class TestPutVersioned:
    async def test_an_older_version_never_replaces_a_newer(self, storage: Storage) -> None:
        """Newer, then older: the newer stays; the same version again is written."""
        uri = await storage.put_versioned("midi/t.mid", b"newer", "2026-01-02")
        assert uri == storage.uri("midi/t.mid")
        assert await storage.put_versioned("midi/t.mid", b"older", "2026-01-01") is None
        assert await storage.get("midi/t.mid") == b"newer"
        assert await storage.put_versioned("midi/t.mid", b"newer", "2026-01-02") == uri
        assert await storage.put_versioned("midi/t.mid", b"newest", "2026-01-03") == uri
        assert await storage.get("midi/t.mid") == b"newest"

    async def test_an_object_without_version_is_the_oldest(self, storage: Storage) -> None:
        """A file written by plain put (before versions existed) is replaced by any."""
        await storage.put("midi/old.mid", b"unversioned")
        assert await storage.put_versioned("midi/old.mid", b"versioned", "0") is not None
        assert await storage.get("midi/old.mid") == b"versioned"

    async def test_a_deleted_object_forgets_its_version(self, storage: Storage) -> None:
        """After delete, any version may create the object again."""
        await storage.put_versioned("midi/d.mid", b"newer", "2")
        await storage.delete("midi/d.mid")
        assert await storage.put_versioned("midi/d.mid", b"older", "1") is not None
        assert await storage.get("midi/d.mid") == b"older"

    async def test_versions_are_not_listed(self, storage: Storage) -> None:
        """What keeps the versions is no object of the storage's."""
        await storage.put_versioned("midi/a.mid", b"a", "1")
        assert [key async for key in storage.list()] == ["midi/a.mid"]

    async def test_concurrent_writers_leave_the_greatest_version(self, storage: Storage) -> None:
        """Writers racing in any order: the object ends as the greatest version's bytes."""
        for round_ in range(4):
            key = f"midi/race-{round_}.mid"
            versions = [f"v{n:03d}" for n in range(24)]
            random.Random(round_).shuffle(versions)
            await asyncio.gather(
                *(storage.put_versioned(key, v.encode() * 4096, v) for v in versions)
            )
            assert await storage.get(key) == max(versions).encode() * 4096
