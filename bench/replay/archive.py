"""The bench's archive: distinct tasks' callbacks written by the archiver's own code."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.processor.callbacks import synthetic_callback
from services.archiver.archive import archive_event
from services.common.callback import find_task_id
from services.common.events import CallbackEvent, sha256_hex
from services.common.storage import LocalStorage

__all__ = ["bodies", "callback_event", "write_archive"]

#: Archive puts in flight at once: each is a few fsyncs, which wait on the disk, not the CPU.
_CONCURRENT_PUTS = 16
_FIRST_RECEIVED = datetime(2026, 11, 1, tzinfo=UTC)


def bodies(count: int, notes: int) -> list[bytes]:
    """``count`` success callbacks of ``notes`` notes (8 instruments), one task each: the
    processor bench's generator, seeded by position (task ids ``bench-<notes>-<i>``)."""
    return [synthetic_callback(notes, seed=index) for index in range(count)]


def callback_event(index: int, body: bytes) -> CallbackEvent:
    """The event the ingest would have published for ``body``, a second after the last."""
    task_id = find_task_id(json.loads(body))
    assert task_id is not None
    return CallbackEvent(
        task_id=task_id,
        received_at=_FIRST_RECEIVED + timedelta(seconds=index),
        body=body,
        body_sha256=sha256_hex(body),
        code=200,
        msg="success",
        state="complete",
        signature="VERIFIED",
        headers={"Content-Type": "application/json", "User-Agent": "bench-replay"},
    )


async def write_archive(root: Path, callbacks: list[bytes]) -> int:
    """Archive every callback below ``root`` with :func:`archive_event` (layout, sidecar,
    fsyncs: all the archiver's); returns the bytes written."""
    storage = LocalStorage(root)
    gate = asyncio.Semaphore(_CONCURRENT_PUTS)

    async def one(index: int, body: bytes) -> int:
        async with gate:
            outcome, written = await archive_event(storage, callback_event(index, body))
        if outcome != "new":
            raise RuntimeError(f"callback {index} was already archived: the archive is not fresh")
        return written

    return sum(await asyncio.gather(*(one(i, b) for i, b in enumerate(callbacks))))
