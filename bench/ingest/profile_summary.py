"""Reads a py-spy profile of the ingest (``run.py --profile``) as a short table of where it went.

py-spy's raw format is one line per distinct stack, ``frame;frame;...;frame COUNT``, each
frame ``function (file:line)``. Each sample is charged to its innermost frame (py-spy
counts only samples where the thread was busy, so these are shares of CPU time), and
grouped by the package or module that frame belongs to; the top functions follow.

    .venv/bin/python -m bench.ingest.profile_summary PROFILE [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]+)(?::\d+)?\)$")

#: Where a file belongs: the first pattern found in its path names the group.
_GROUPS = (
    ("/services/ingest/", "ingest: {module}"),
    ("/services/common/", "common: {module}"),
    ("/aiohttp/", "aiohttp"),
    ("/aiokafka/", "aiokafka"),
    ("/redis/", "redis-py"),
    ("/structlog/", "structlog"),
    ("/prometheus_client/", "prometheus_client"),
    ("/multidict/", "multidict"),
    ("/yarl/", "yarl"),
    ("/fastavro/", "fastavro"),
    ("/uvloop/", "uvloop"),
    # The loop itself; under uvloop its C code is charged to asyncio's Runner.run.
    ("/asyncio/selector_events.py", "event loop and transports"),
    ("/asyncio/base_events.py", "event loop and transports"),
    ("/asyncio/events.py", "event loop and transports"),
    ("/asyncio/runners.py", "event loop and transports"),
    ("/selectors.py", "event loop and transports"),
    ("/asyncio/", "asyncio tasks, timeouts, streams"),
    ("/logging/", "logging (stdlib)"),
)


def group_of(path: str) -> str:
    # py-spy shortens paths to what follows sys.path's entry ("aiohttp/web_protocol.py").
    for pattern, name in _GROUPS:
        if pattern in "/" + path:
            return name.format(module=Path(path).stem)
    return "other: " + path.split("/", 1)[0]


def summarize(lines: list[str]) -> tuple[Counter[str], Counter[str], int]:
    """(samples by group, samples by innermost function, all samples)."""
    groups: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        match = _FRAME.match(stack.rsplit(";", 1)[-1])
        if match is None:
            continue
        samples = int(count)
        total += samples
        path = match["file"]
        groups[group_of(path)] += samples
        functions[f"{match['function']} ({Path(path).name})"] += samples
    return groups, functions, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    groups, functions, total = summarize(args.profile.read_text().splitlines())
    print(f"{total} samples\n\n| where (innermost frame) | share |\n|---|---|")
    for name, samples in groups.most_common():
        print(f"| {name} | {samples / total:.1%} |")
    print("\n| function (innermost frame) | share |\n|---|---|")
    for name, samples in functions.most_common(args.top):
        print(f"| `{name}` | {samples / total:.1%} |")


if __name__ == "__main__":
    main()
