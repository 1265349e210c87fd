"""Where the processor's time goes: per-stage CPU time and the costliest functions.

The figures behind the renderer's design choices (``docs/processing.md``, "Benchmark"):
for the bench's callbacks it prints the median CPU time of each stage of
``process_callback`` (parse + normalize, tempo estimate, render) beside ``json.loads``
alone and the symusic path, then the functions with the most own time under ``cProfile``
over one 100 000-note callback.

Run: ``.venv/bin/python -m bench.processor.profile`` (``--quick`` for fewer repeats).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from services.processor.app import parse_callback, process_callback
from services.processor.normalize import NormalizedCallback
from services.processor.render import render_midi_with_stats
from services.processor.tempo_map import estimate_map

from .bench import with_symusic
from .callbacks import synthetic_callback


def cpu_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        started = time.process_time()
        fn()
        samples.append(time.process_time() - started)
    return statistics.median(samples) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args(argv)
    print(f"{'notes':>8} {'parse+normalize':>16} {'estimate':>9} {'render':>8} "
          f"{'(json.loads)':>13} {'(symusic)':>10}   median CPU ms")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for size in (1_000, 10_000, 100_000):
            body = synthetic_callback(size)
            repeats = max(3, (30 if args.quick else 300) * 1_000 // size)
            parsed = parse_callback(body)
            assert isinstance(parsed, NormalizedCallback)
            tempo = estimate_map(parsed.instruments)
            stages = [
                cpu_ms(lambda: parse_callback(body), repeats),  # noqa: B023
                cpu_ms(lambda: estimate_map(parsed.instruments), repeats),  # noqa: B023
                cpu_ms(lambda: render_midi_with_stats(parsed, tempo), repeats),  # noqa: B023
                cpu_ms(lambda: json.loads(body), repeats),  # noqa: B023
                cpu_ms(lambda: with_symusic(body, Path(tmp) / "s.mid"), repeats),  # noqa: B023
            ]
            widths = (16, 9, 8, 13, 10)
            cells = [f"{value:>{width}.2f}" for value, width in zip(stages, widths, strict=True)]
            print(f"{size:>8} " + " ".join(cells))
    body = synthetic_callback(100_000)
    profile = cProfile.Profile()
    profile.runcall(process_callback, body)
    print("\nprocess_callback, 100 000 notes: own time by function (cProfile)")
    pstats.Stats(profile).sort_stats("tottime").print_stats(12)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
