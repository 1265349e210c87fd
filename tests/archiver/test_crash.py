"""SIGKILL in the middle of 1 000 callbacks: after a restart, each archived exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.kafka import Publisher
from services.common.settings import Settings

from ..helpers import committed_offsets, service_environment
from .support import (
    assert_content_addressed,
    at,
    bodies,
    callback_body,
    make_event,
    temporary_files,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

COUNT = 1000
ROOT = Path(__file__).resolve().parents[2]


def start_archiver(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "services.archiver", "run"],
            cwd=ROOT,
            env={**os.environ, **service_environment(settings)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def count_bodies(data_dir: Path) -> int:
    raw = data_dir / "raw"
    if not raw.is_dir():
        return 0
    return sum(
        1
        for folder in os.scandir(raw)
        for entry in os.scandir(folder.path)
        if entry.name.endswith(".json") and not entry.name.endswith(".meta.json")
    )


async def archived_and_committed(settings: Settings, within: float) -> int:
    """Wait until the group has committed every record; return the committed total."""
    deadline = asyncio.get_running_loop().time() + within
    total = 0
    while asyncio.get_running_loop().time() < deadline:
        total = sum((await committed_offsets(settings, settings.archiver.group_id)).values())
        if total >= COUNT:
            return total
        await asyncio.sleep(0.25)
    return total


async def test_sigkill_mid_stream_then_restart(
    settings: Settings, publisher: Publisher, tmp_path: Path
) -> None:
    """All 1 000 archived exactly once, none partial, no temporary file left behind."""
    events = [
        make_event(
            f"crash-{i:04d}", callback_body(f"crash-{i:04d}", pitch=i % 100), received_at=at(i)
        )
        for i in range(COUNT)
    ]
    for start in range(0, COUNT, 250):
        await asyncio.gather(
            *(
                publisher.publish(
                    settings.kafka.topics.callbacks,
                    key=event.task_id.encode(),
                    value=event.encode(),
                    timeout=30,
                )
                for event in events[start : start + 250]
            )
        )
    data_dir = settings.storage.data_dir
    log = tmp_path / "archiver.log"

    first = start_archiver(settings, log)
    try:
        while count_bodies(data_dir) < 100:
            assert first.poll() is None, log.read_text()[-3000:]
            await asyncio.sleep(0.01)
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    at_kill = count_bodies(data_dir)
    assert at_kill < COUNT, "the archiver finished before the kill: nothing was tested"
    committed_at_kill = sum(
        (await committed_offsets(settings, settings.archiver.group_id)).values()
    )
    assert committed_at_kill < COUNT

    # What a kill between "write temporary file" and "rename" leaves behind.
    stale = data_dir / "raw" / "crash-0000" / ".tmp-killedmidwrite"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(events[0].body[:10])

    second = start_archiver(settings, log)
    try:
        committed = await archived_and_committed(settings, within=45)
        assert committed == COUNT, log.read_text()[-3000:]
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=20) == 0
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()

    found = bodies(data_dir)
    assert len(found) == COUNT
    assert sorted(found.values()) == sorted(event.body for event in events)
    assert_content_addressed(found)
    for event in events[:: COUNT // 20]:
        meta = data_dir / "raw" / event.task_id / f"{event.body_sha256}.meta.json"
        assert json.loads(meta.read_bytes())["received_at"] == event.received_at.isoformat()
    assert temporary_files(data_dir) == []
    print(f"killed after {at_kill} bodies, {committed_at_kill} committed; restarted; all {COUNT}")
