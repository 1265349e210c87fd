"""Replay benchmark: archived callbacks re-processed through Kafka against the renderer's
own throughput on the same callbacks, one run, one ratio.

1. ``--count`` distinct tasks' callbacks (the processor bench's generator, 1 000 notes over
   8 instruments, about 84 KB each) archived by the archiver's own ``archive_event`` in a
   fresh ``DATA_DIR`` (``raw/<task>/<sha256>.json`` and its sidecar, fsyncs and all);
2. **the renderer**: ``process_callback`` (parse, normalize, tempo estimate, render) plus
   the notes event (record and Avro encoding), in this process, one callback after another;
   half the callbacks before the replay and half after, so a neighbour's load falls on both;
3. **the replay**: ``python -m services.archiver replay --all`` (the CLI: scan, sort,
   publish with its replay headers) to a fresh topic of a real local broker, and the
   processor service (``python -m services.processor``, previews off) consuming it,
   writing each file and publishing each notes event; timed from the CLI's start until
   the processor's group has committed every offset (lag 0). Every task's ``.mid`` is
   then counted;
4. the ratio replay / renderer, target >= 0.8x.

The broker is a local KRaft one (``devenv.kafka``) unless ``KAFKA_BOOTSTRAP_SERVERS`` is
set. ``--profile DIR`` samples the processor and the replay CLI with py-spy during the
replay (collapsed stacks in DIR; the figures of such a run carry the sampler's cost).

Run: ``.venv/bin/python -m bench.replay.run`` (``--quick``: 1 000 callbacks).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from devenv.kafka import LocalKafka
from services.common.events import CallbackEvent, sha256_hex
from services.common.settings import KafkaSettings
from services.common.storage import TEMPORARY_PREFIX
from services.processor.app import Processed, process_callback
from services.processor.notes_event import MidiLocation, encode_notes_event, notes_record

from . import stacks
from .archive import bodies, callback_event, write_archive
from .through_kafka import ReplayRun, processor, replay_through_kafka, service_env

TARGET = 0.8
NOTES = 1_000


def render(event: CallbackEvent) -> bytes:
    """What the processor computes for one event, storage and Kafka aside: the MIDI file,
    its hash and the encoded notes event."""
    processed = process_callback(event.body)
    assert isinstance(processed, Processed) and processed.midi is not None
    midi = processed.midi
    location = MidiLocation(
        uri=f"file:///data/midi/{event.task_id}.mid", sha256=sha256_hex(midi), size_bytes=len(midi)
    )
    record = notes_record(
        event,
        processed.normalized,
        location,
        datetime.now(UTC),
        rendered=midi,
        tempo=processed.tempo,
    )
    return encode_notes_event(record)


def render_pass(events: list[CallbackEvent]) -> tuple[float, float]:
    """Wall and CPU seconds to render ``events`` one after another."""
    started, cpu = time.perf_counter(), time.process_time()
    for event in events:
        render(event)
    return time.perf_counter() - started, time.process_time() - cpu


def midi_files(data_dir: Path) -> int:
    folder = data_dir / "midi"
    if not folder.is_dir():
        return 0
    return sum(
        1
        for path in folder.iterdir()
        if path.suffix == ".mid" and not path.name.startswith(TEMPORARY_PREFIX)
    )


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def prepare(data_dir: Path, count: int) -> list[CallbackEvent]:
    """The archive, written; the same callbacks as the processor will decode them."""
    started = time.perf_counter()
    callbacks = bodies(count, NOTES)
    size = sum(map(len, callbacks)) / count
    print(f"{count} callbacks of {NOTES} notes (mean {size / 1024:.1f} KiB) generated in "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    started = time.perf_counter()
    written = asyncio.run(write_archive(data_dir, callbacks))
    print(f"archived by archive_event under {data_dir}/raw: {written / 1e6:.1f} MB in "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    return [callback_event(index, body) for index, body in enumerate(callbacks)]


def replay(
    bootstrap: str | None,
    data_dir: Path,
    logs: Path,
    count: int,
    profiles: Path | None,
    concurrency: int | None,
) -> ReplayRun:
    with ExitStack() as stack:
        broker_pid = None
        if bootstrap is None:
            broker = stack.enter_context(LocalKafka(heap="1g"))
            bootstrap = broker.bootstrap_servers
            broker_pid = None if broker.process is None else broker.process.pid
        env = service_env(bootstrap, data_dir)
        if concurrency is not None:
            env["KAFKA_CONSUMER_CONCURRENCY"] = str(concurrency)
        print(
            f"broker {bootstrap}, topic {env['KAFKA_TOPIC_CALLBACKS']}, PROCESSOR_PREVIEWS=off, "
            f"consumer concurrency {concurrency or KafkaSettings().consumer_concurrency}"
        )
        service = stack.enter_context(processor(env, logs / "processor.log"))
        return asyncio.run(
            replay_through_kafka(
                env, count, logs, service=service, broker=broker_pid, profiles=profiles
            )
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="callbacks (default 10 000)")
    parser.add_argument("--quick", action="store_true", help="1 000 callbacks (development)")
    parser.add_argument("--profile", type=Path, help="py-spy the replay; stacks and logs here")
    parser.add_argument(
        "--consumer-concurrency",
        type=int,
        help="the processor's KAFKA_CONSUMER_CONCURRENCY (default: the setting's default)",
    )
    args = parser.parse_args(argv)
    count = 1_000 if args.quick else args.count
    if count < 2:
        parser.error("--count must be at least 2")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip() or None
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{load()}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        data_dir, logs = Path(tmp, "data"), args.profile or Path(tmp, "logs")
        logs.mkdir(parents=True, exist_ok=True)
        events = prepare(data_dir, count)
        half = count // 2
        first = render_pass(events[:half])
        result = replay(bootstrap, data_dir, logs, count, args.profile, args.consumer_concurrency)
        second = render_pass(events[half:])
        files = midi_files(data_dir)
    if args.profile is not None:
        for name in ("processor.txt", "replay.txt"):
            print(stacks.report(args.profile / name))
    rendering = (first[0] + second[0], first[1] + second[1])
    return report(count, rendering, result, files)


def report(count: int, rendering: tuple[float, float], result: ReplayRun, files: int) -> int:
    renderer = count / rendering[0]
    through = count / result.seconds
    ratio = through / renderer
    print(f"renderer (process_callback + notes event, in process): {renderer:8.1f} callbacks/s")
    print(f"replay CLI alone (publish, start to exit):              "
          f"{count / result.publish_seconds:8.1f} callbacks/s")  # fmt: skip
    print(f"replay -> processor (start to lag 0):                   {through:8.1f} callbacks/s"
          f" ({result.seconds:.1f} s)")  # fmt: skip
    print(f"processor: {result.handling_seconds * 1e3:.2f} ms per record handled (fetch to "
          f"commit-ready), {result.seconds / count * 1e3:.2f} ms per record overall")  # fmt: skip
    cpu = [f"renderer {rendering[1] / count * 1e3:.2f}"] + [
        f"{name} {seconds / count * 1e3:.2f}" for name, seconds in result.cpu.items()
    ]
    print(f"CPU ms per callback: {', '.join(cpu)} ({os.cpu_count()} CPUs shared)")
    print(f".mid files written: {files} of {count}")
    print(f"ratio replay / renderer: {ratio:.2f}x (target >= {TARGET}x); {load()}")
    failures = []
    if files != count:
        failures.append(f"{count - files} task(s) without a .mid")
    if ratio < TARGET:
        failures.append(f"{ratio:.2f}x < {TARGET}x")
    print("target: " + ("met" if not failures else "MISSED: " + "; ".join(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
