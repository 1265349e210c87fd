"""The Storage contract, run unchanged against local files and a real S3 API server."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from services.common.errors import ConfigError, ObjectNotFoundError, StorageError
from services.common.settings import StorageSettings
from services.common.storage import LocalStorage, S3Storage, Storage, open_storage

from ..fixtures.s3 import S3Server


async def keys(storage: Storage, prefix: str = "") -> list[str]:
    return [key async for key in storage.list(prefix)]


class TestContract:
    async def test_round_trip_is_byte_exact(self, storage: Storage) -> None:
        """Every byte value, and an empty object, come back exactly as written."""
        data = bytes(range(256)) * 64 + b"\r\n\x00 trailing"
        uri = await storage.put("raw/task/abc.json", data)
        assert await storage.get("raw/task/abc.json") == data
        assert uri == storage.uri("raw/task/abc.json")
        await storage.put("empty", b"")
        assert await storage.get("empty") == b""

    async def test_large_object_round_trip(self, storage: Storage) -> None:
        """A multi-megabyte object keeps its hash."""
        data = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32)
        await storage.put("midi/big.mid", data)
        assert hashlib.sha256(await storage.get("midi/big.mid")).digest() == (
            hashlib.sha256(data).digest()
        )

    async def test_overwrite_replaces_the_whole_object(self, storage: Storage) -> None:
        """A put over a longer object leaves only the new bytes."""
        await storage.put("midi/a.mid", b"x" * 10_000)
        await storage.put("midi/a.mid", b"short")
        assert await storage.get("midi/a.mid") == b"short"

    async def test_concurrent_readers_see_old_or_new(self, storage: Storage) -> None:
        """Readers racing overwrites see one whole version, never a mix or a part."""
        old, new = b"o" * 200_000, b"n" * 300_000
        await storage.put("midi/race.mid", old)
        seen: set[bytes] = set()

        async def read_many() -> None:
            for _ in range(15):
                seen.add(await storage.get("midi/race.mid"))

        async def write_many() -> None:
            for index in range(15):
                await storage.put("midi/race.mid", new if index % 2 == 0 else old)

        await asyncio.gather(read_many(), write_many())
        assert seen <= {old, new}
        assert seen

    async def test_list_by_prefix_sorted(self, storage: Storage) -> None:
        """Only keys under the prefix, lexicographically sorted, prefix kept."""
        for key in ("raw/b/2.json", "raw/a/1.json", "raw/b/1.json", "midi/a.mid", "rawx"):
            await storage.put(key, b"1")
        assert await keys(storage, "raw/") == ["raw/a/1.json", "raw/b/1.json", "raw/b/2.json"]
        assert await keys(storage, "raw/b/") == ["raw/b/1.json", "raw/b/2.json"]
        assert await keys(storage) == sorted(
            ["midi/a.mid", "raw/a/1.json", "raw/b/1.json", "raw/b/2.json", "rawx"]
        )
        assert await keys(storage, "nothing/") == []

    async def test_exists_and_delete(self, storage: Storage) -> None:
        """Exists follows put and delete; deleting an absent object is not an error."""
        assert not await storage.exists("midi/x.mid")
        await storage.put("midi/x.mid", b"1")
        assert await storage.exists("midi/x.mid")
        await storage.delete("midi/x.mid")
        assert not await storage.exists("midi/x.mid")
        await storage.delete("midi/x.mid")
        assert await keys(storage) == []

    async def test_missing_object_raises_not_found(self, storage: Storage) -> None:
        """ObjectNotFoundError, which is a StorageError."""
        with pytest.raises(ObjectNotFoundError):
            await storage.get("midi/none.mid")
        with pytest.raises(StorageError):
            await storage.get("midi/none.mid")

    async def test_keys_with_percent_signs(self, storage: Storage) -> None:
        """Percent-encoded task keys are stored literally, never decoded."""
        key = "raw/a%2Fb%2E%2E/%25.json"
        await storage.put(key, b"percent")
        assert await storage.get(key) == b"percent"
        assert await keys(storage, "raw/a%2F") == [key]
        assert not await storage.exists("raw/a/b../%.json")

    @pytest.mark.parametrize(
        "key", ["../escape", "raw/../../etc/passwd", "/etc/passwd", "raw//x", "raw/./x", "", "a\\b"]
    )
    async def test_refuses_keys_leaving_the_root(self, storage: Storage, key: str) -> None:
        """Absolute keys, ``..``, ``.`` and empty parts are refused by every method."""
        with pytest.raises(StorageError):
            await storage.put(key, b"x")
        with pytest.raises(StorageError):
            await storage.get(key)
        with pytest.raises(StorageError):
            await storage.exists(key)
        with pytest.raises(StorageError):
            await storage.delete(key)


class TestLocalStorage:
    async def test_failed_write_leaves_no_temporary_file(self, tmp_path: Path) -> None:
        """A rename that fails (the target is a folder) removes its temporary file."""
        storage = LocalStorage(tmp_path)
        await storage.put("midi/a.mid/inner", b"1")  # makes midi/a.mid a folder
        with pytest.raises(StorageError):
            await storage.put("midi/a.mid", b"2")
        leftovers = await asyncio.to_thread(lambda: list(tmp_path.rglob(".tmp-*")))
        assert leftovers == []
        assert await keys(storage) == ["midi/a.mid/inner"]

    async def test_unwritable_root_raises_storage_error(self, tmp_path: Path) -> None:
        """A root below a regular file cannot be written, even by root."""
        (tmp_path / "file").write_bytes(b"")
        storage = LocalStorage(tmp_path / "file" / "data")
        with pytest.raises(StorageError, match="cannot write"):
            await storage.put("raw/x.json", b"1")

    async def test_listing_hides_and_cleanup_removes_temporary_files(self, tmp_path: Path) -> None:
        """Temporary files a killed writer left are never listed and can be removed."""
        storage = LocalStorage(tmp_path)
        await storage.put("raw/t/a.json", b"1")
        stale = tmp_path / "raw" / "t" / ".tmp-abc123"
        stale.write_bytes(b"half")
        (tmp_path / "midi").mkdir()
        other = tmp_path / "midi" / ".tmp-keep"
        other.write_bytes(b"not mine")
        assert await keys(storage) == ["raw/t/a.json"]
        assert await storage.remove_temporary_files("raw") == [str(stale)]
        assert not stale.exists()
        assert other.exists()
        assert await storage.get("raw/t/a.json") == b"1"


@pytest.mark.s3
class TestS3Storage:
    async def test_list_paginates(self, s3_storage_settings: StorageSettings) -> None:
        """Listings longer than one page come back whole and sorted."""
        async with open_storage(s3_storage_settings) as opened:
            assert isinstance(opened, S3Storage)
            storage = S3Storage(opened._client, opened.bucket, opened.prefix, page_size=7)
            written = [f"raw/t/{index:03d}.json" for index in range(30)]
            await asyncio.gather(*(storage.put(key, b"x") for key in reversed(written)))
            assert await keys(storage, "raw/") == written

    async def test_prefix_places_objects_and_is_stripped(
        self, s3_server: S3Server, s3_storage_settings: StorageSettings
    ) -> None:
        """Objects live below S3_PREFIX in the bucket; keys come back without it."""
        async with open_storage(s3_storage_settings) as storage:
            uri = await storage.put("midi/a.mid", b"1")
            assert await keys(storage) == ["midi/a.mid"]
        bucket = s3_storage_settings.s3_bucket
        assert uri == f"s3://{bucket}/pipeline/midi/a.mid"
        listed = s3_server.client().list_objects_v2(Bucket=bucket)
        assert [item["Key"] for item in listed["Contents"]] == ["pipeline/midi/a.mid"]

    async def test_missing_bucket_is_a_config_error(
        self, s3_storage_settings: StorageSettings
    ) -> None:
        """Opening a bucket that does not exist says which setting to fix."""
        settings = replace(s3_storage_settings, s3_bucket="no-such-bucket-here")
        with pytest.raises(ConfigError, match="S3_BUCKET"):
            async with open_storage(settings):
                pass

    async def test_unreachable_endpoint_raises_storage_error(
        self, s3_storage_settings: StorageSettings
    ) -> None:
        """A server that is not there is a StorageError, converted where it enters."""
        settings = replace(s3_storage_settings, s3_endpoint_url="http://127.0.0.1:9")
        with pytest.raises(StorageError):
            async with open_storage(settings):
                pass
