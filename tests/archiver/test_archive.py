"""The archive's write side: layout, byte-exactness, no rewrites, the sidecar's contents."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from services.archiver.archive import (
    ArchiveStorageError,
    InvalidEventError,
    archive_event,
    metadata_key,
    raw_key,
    sidecar,
)
from services.archiver.catalog import ArchiveEntry, scan
from services.archiver.replay import replay_event
from services.common.errors import StorageError
from services.common.settings import StorageSettings
from services.common.storage import LocalStorage, Storage, open_storage

from .support import at, make_event


class CountingStorage:
    """A Storage that records every put and can be told to fail (a test seam, not a mock)."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.puts: list[str] = []
        self.fail_puts = False

    async def put(self, key: str, data: bytes) -> str:
        if self.fail_puts:
            raise StorageError("disk full (simulated)")
        self.puts.append(key)
        return await self.inner.put(key, data)

    async def get(self, key: str) -> bytes:
        return await self.inner.get(key)

    async def exists(self, key: str) -> bool:
        return await self.inner.exists(key)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    def list(self, prefix: str = "") -> AsyncIterator[str]:
        return self.inner.list(prefix)

    def uri(self, key: str) -> str:
        return self.inner.uri(key)


@pytest.fixture(name="storage", params=["local", pytest.param("s3", marks=pytest.mark.s3)])
async def fixture_storage(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[CountingStorage]:
    if request.param == "local":
        settings = StorageSettings(data_dir=tmp_path / "data")
    else:
        settings = request.getfixturevalue("s3_storage_settings")
    async with open_storage(settings) as storage:
        yield CountingStorage(storage)


class TestLayout:
    def test_keys_are_content_addressed_below_the_task_key(self) -> None:
        """raw/<percent-encoded task id>/<sha256>.json and .meta.json beside it."""
        sha = "ab" * 32
        assert raw_key("a/b.c", sha) == f"raw/a%2Fb%2Ec/{sha}.json"
        assert metadata_key("a/b.c", sha) == f"raw/a%2Fb%2Ec/{sha}.meta.json"
        assert raw_key("..", sha).split("/")[1] == "%2E%2E"


class TestArchiveEvent:
    async def test_body_is_stored_byte_exact_and_hashes_to_its_name(
        self, storage: CountingStorage
    ) -> None:
        """Reading the body back and hashing it gives the sha256 in its key."""
        body = b'{"code":200, "data": {"taskId":"t1"}}\r\n\t \xe2\x82\xac'
        event = make_event("t1", body)
        outcome, written = await archive_event(storage, event)
        assert outcome == "new"
        key = raw_key("t1", event.body_sha256)
        stored = await storage.get(key)
        assert stored == body
        assert hashlib.sha256(stored).hexdigest() == key.rsplit("/", 1)[1].removesuffix(".json")
        meta = await storage.get(metadata_key("t1", event.body_sha256))
        assert written == len(body) + len(meta)
        assert storage.puts == [metadata_key("t1", event.body_sha256), key]

    async def test_repeat_is_a_no_op_and_the_first_sidecar_stays(
        self, storage: CountingStorage
    ) -> None:
        """A second delivery of the same body (another time, headers) writes nothing."""
        first = make_event("t1", received_at=at(0), headers={"User-Agent": "first"})
        await archive_event(storage, first)
        meta_before = await storage.get(metadata_key("t1", first.body_sha256))
        storage.puts.clear()
        again = replace(first, received_at=at(5), headers={"User-Agent": "second"})
        assert await archive_event(storage, again) == ("existing", 0)
        assert storage.puts == []
        assert await storage.get(metadata_key("t1", first.body_sha256)) == meta_before
        assert json.loads(meta_before)["headers"] == {"User-Agent": "first"}

    async def test_replayed_event_is_a_no_op(self, storage: CountingStorage) -> None:
        """A replay of an archived callback creates no new body or sidecar."""
        event = make_event("t1")
        await archive_event(storage, event)
        keys_before = [key async for key in storage.list()]
        storage.puts.clear()
        assert await archive_event(storage, replace(event, replay=True)) == ("existing", 0)
        assert storage.puts == []
        assert [key async for key in storage.list()] == keys_before

    async def test_other_body_same_task_is_archived_beside(self, storage: CountingStorage) -> None:
        """A different body for the same task is a second entry, not an overwrite."""
        one, two = make_event("t1", code=200), make_event("t1", code=500)
        await archive_event(storage, one)
        await archive_event(storage, two)
        keys = [key async for key in storage.list("raw/t1/")]
        assert len(keys) == 4
        assert await storage.get(raw_key("t1", one.body_sha256)) == one.body
        assert await storage.get(raw_key("t1", two.body_sha256)) == two.body

    async def test_sidecar_without_body_is_completed_not_rewritten(
        self, storage: CountingStorage
    ) -> None:
        """After a write cut between sidecar and body, the retry writes only the body."""
        event = make_event("t1", received_at=at(0))
        earlier = sidecar(replace(event, received_at=at(-1)))
        await storage.inner.put(metadata_key("t1", event.body_sha256), earlier)
        assert (await archive_event(storage, event))[0] == "new"
        assert storage.puts == [raw_key("t1", event.body_sha256)]
        assert await storage.get(metadata_key("t1", event.body_sha256)) == earlier

    async def test_storage_failure_names_the_operation(self, storage: CountingStorage) -> None:
        """A failed put is an ArchiveStorageError saying which step failed; nothing is left."""
        storage.fail_puts = True
        with pytest.raises(ArchiveStorageError) as caught:
            await archive_event(storage, make_event("t1"))
        assert caught.value.operation == "put_sidecar"
        assert [key async for key in storage.list()] == []

    @pytest.mark.parametrize(
        ("change", "reason"),
        [
            ({"body_sha256": "0" * 64}, "sha256_mismatch"),
            ({"body_sha256": "not-a-hash"}, "invalid_sha256"),
            ({"task_id": "x" * 81}, "invalid_task_id"),
            ({"task_id": "has space"}, "invalid_task_id"),
        ],
    )
    async def test_events_that_cannot_be_named_are_refused(
        self, storage: CountingStorage, change: dict[str, str], reason: str
    ) -> None:
        """A body not matching its hash, or an unusable task id, is refused before writing."""
        with pytest.raises(InvalidEventError) as caught:
            await archive_event(storage, replace(make_event("t1"), **change))
        assert caught.value.reason == reason
        assert storage.puts == []


class TestSidecar:
    def test_fields(self) -> None:
        """Received time, delivery key, code, signature result, size: what list and replay use."""
        event = make_event("t1", received_at=at(3), headers={"content-type": "application/json"})
        document = json.loads(sidecar(event))
        assert document["task_id"] == "t1"
        assert document["delivery_key"] == f"t1:{event.body_sha256}"
        assert document["body_sha256"] == event.body_sha256
        assert document["size_bytes"] == len(event.body)
        assert document["received_at"] == "2026-11-20T12:03:00+00:00"
        assert document["code"] == 200 and document["state"] == "complete"
        assert document["signature"] == "VERIFIED"
        assert document["replay"] is False
        assert document["headers"] == {"Content-Type": "application/json"}

    @pytest.mark.parametrize(
        "name", ["X-Webhook-Signature", "x-webhook-signature", "Authorization", "X-Api-Key"]
    )
    def test_signatures_and_secrets_never_land_in_the_sidecar(self, name: str) -> None:
        """Even when an event carries them, signature and credential headers are dropped."""
        secret_value = "sha256=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"
        event = make_event(
            "t1", headers={name: secret_value, "User-Agent": "suno", "X-Request-Id": "r-1"}
        )
        raw = sidecar(event)
        assert secret_value.encode() not in raw
        assert name.lower().encode() not in raw.lower()
        assert json.loads(raw)["headers"] == {"User-Agent": "suno", "X-Request-Id": "r-1"}

    async def test_archived_sidecar_has_no_signature(self, tmp_path: Path) -> None:
        """End to end through storage: the file on disk never holds the signature."""
        event = make_event("t1", headers={"X-Webhook-Signature": "v1=deadbeef"})
        await archive_event(LocalStorage(tmp_path), event)
        files = all_files(tmp_path)
        assert all(b"deadbeef" not in data for data in files.values())
        assert any(name.endswith(".meta.json") for name in files)

    async def test_a_polled_result_keeps_its_source_and_request(self, tmp_path: Path) -> None:
        """A record-info answer archived, listed and replayed stays a poll of its request;
        a sidecar from before polling existed reads as a callback with no request."""
        storage = LocalStorage(tmp_path)
        polled = replace(make_event("t1"), source="POLL", request_id="req-1")
        await archive_event(storage, polled)
        document = json.loads(sidecar(polled))
        assert (document["source"], document["request_id"]) == ("POLL", "req-1")
        (entry,) = [e async for e in scan(storage) if isinstance(e, ArchiveEntry)]
        assert (entry.source, entry.request_id) == ("POLL", "req-1")
        replayed = replay_event(entry, polled.body)
        assert (replayed.source, replayed.request_id, replayed.replay) == ("POLL", "req-1", True)

        older = make_event("t2")
        legacy = json.loads(sidecar(older))
        del legacy["source"], legacy["request_id"]
        await archive_event(storage, older)
        (tmp_path / metadata_key("t2", older.body_sha256)).write_text(json.dumps(legacy))
        entries = [e async for e in scan(storage) if isinstance(e, ArchiveEntry)]
        (entry,) = [e for e in entries if e.task_id == "t2"]
        assert (entry.source, entry.request_id) == ("CALLBACK", None)


def all_files(root: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in root.rglob("*") if path.is_file()}
