"""Where a profiled process spent its samples, by stage, from py-spy's collapsed stacks.

Each line of py-spy's ``raw`` output is one stack (frames from the thread's root to the
running function, ``;``-separated) and its sample count. A sample goes to the first stage
whose marker appears in its stack, in :data:`STAGES` order; a stack whose running function
waits for work (the event loop's ``select``, an idle worker thread) is ``idle``.

    .venv/bin/python -m bench.replay.stacks DIR/processor.txt
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

__all__ = ["STAGES", "by_stage"]

#: (stage, markers): a stack belongs to the first stage one of whose markers it holds.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("idle", ()),
    ("start-up (imports)", ("<frozen importlib._bootstrap>",)),
    ("render (process_callback)", ("process_callback (services/processor/app.py",)),
    ("notes event (record, Avro)", ("_notes_event (services/processor/app.py",)),
    ("storage (write, fsync, rename)", ("services/common/storage.py",)),
    ("archive scan and read", ("services/archiver/catalog.py",)),
    ("event encode/decode (Avro)", ("services/common/events.py", "services/common/avro.py")),
    ("Kafka client (aiokafka)", ("aiokafka/",)),
    ("logging (structlog)", ("structlog/",)),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("thread hand-offs", ("concurrent/futures/", "call_soon_threadsafe")),
)
#: Running functions that mean the thread is waiting for work, not working.
_IDLE_LEAVES = (
    "EpollSelector.select (selectors.py",
    "_worker (concurrent/futures/thread.py:81)",
    "Condition.wait (threading.py",
)


def by_stage(path: Path) -> tuple[int, list[tuple[str, int]]]:
    """All samples, and the samples of each stage (most first; ``other`` last)."""
    counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        samples = int(number)
        total += samples
        counts[_stage(stack)] += samples
    ranked = sorted(((s, n) for s, n in counts.items() if s != "other"), key=lambda i: -i[1])
    return total, [*ranked, ("other (event loop, consumer loop, ...)", counts["other"])]


def _stage(stack: str) -> str:
    leaf = stack.rsplit(";", 1)[-1]
    if leaf.startswith(_IDLE_LEAVES):
        return "idle"
    for stage, markers in STAGES:
        if any(marker in stack for marker in markers):
            return stage
    return "other"


def report(path: Path) -> str:
    total, stages = by_stage(path)
    busy = total - dict(stages).get("idle", 0)
    lines = [f"{path.name}: {total} samples, {busy} busy"]
    for stage, samples in stages:
        if stage != "idle" and samples:
            lines.append(f"  {100 * samples / max(1, busy):5.1f}%  {stage}")
    return "\n".join(lines)


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        print(report(Path(argument)))
