"""SIGTERM on a real ``python -m services.processor``: finish the record, commit, exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.processor.callbacks import synthetic_callback
from services.common.kafka import Publisher
from services.common.settings import Settings

from ..helpers import committed_offsets, eventually, read_topic, service_environment
from .conftest import callback_event

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RECORDS = 10


def processor_environment(settings: Settings) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), **service_environment(settings)}


async def test_sigterm_finishes_the_record_commits_and_exits(
    settings: Settings, publisher: Publisher, tmp_path: Path
) -> None:
    """Stopped mid-stream, every record with effects is committed and vice versa."""
    topics = settings.kafka.topics
    for index in range(RECORDS):
        body = synthetic_callback(40_000, seed=index)
        value = callback_event(body, f"task-{index}").encode()
        await publisher.publish(topics.callbacks, key=b"one-partition", value=value)
    log_path = tmp_path / "processor.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.processor",
            cwd=ROOT,
            env=processor_environment(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            midi_dir = settings.storage.data_dir / "midi"
            await eventually(
                lambda: midi_dir.is_dir() and any(midi_dir.iterdir()),
                timeout=60,
                what="the first MIDI file",
            )
            process.send_signal(signal.SIGTERM)
            returncode = await asyncio.wait_for(process.wait(), 60)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    output = log_path.read_text(errors="replace")
    assert returncode == 0, output[-3000:]

    offsets = await committed_offsets(settings, settings.processor.group_id, topics.callbacks)
    done = sum(offsets.values())
    files = sorted(p.name for p in midi_dir.iterdir())
    events = await read_topic(settings.kafka.bootstrap_servers, topics.notes, RECORDS, timeout=5)
    assert 1 <= done < RECORDS, f"stopped after {done} of {RECORDS}: not mid-stream"
    # The record in hand when SIGTERM came was finished and committed: effects == commits.
    assert files == sorted(f"task-{i}.mid" for i in range(done))
    assert sorted(r.key for r in events) == sorted(f"task-{i}".encode() for i in range(done))
    assert not [p for p in midi_dir.iterdir() if p.name.startswith(".tmp-")]
    assert output.count('"callback_processed"') == done
